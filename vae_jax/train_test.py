import jax
import numpy as np
import pytest

import vae_jax
from vae_core.config import VAEConfig


def test_the_jitted_step_compiles_once_over_steps_and_a_resume():
    """A new state is committed where its parameters are, as the step's outputs are: before, a first state
    of uncommitted arrays beside committed batches compiled the step again on the second step (a second
    3-13 s compile in every parity case and JAX run); a resumed optimizer state the same."""
    config = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2)
    device = jax.devices("cpu")[0]
    rng = np.random.default_rng(0)
    x, eps = (jax.device_put(a, device) for a in (rng.random((3, 8, 8, 1), np.float32),
                                                   rng.standard_normal((3, 2), np.float32)))
    beta = jax.device_put(np.float32(1), device)
    state = vae_jax.create_train_state(vae_jax.init_model(config))
    step = vae_jax.compile_train_step(state, check_inputs=False)
    state, _ = step(state, x, eps, beta)
    compiled = step._cache_size()  # the jit is shared by every state (other tests' shapes included)
    state, _ = step(state, x, eps, beta)
    state = vae_jax.import_optimizer_state(state, vae_jax.export_optimizer_state(state))
    state, _ = step(state, x, eps, beta)
    assert step._cache_size() == compiled


def test_the_jax_twins_compiled_functions_take_its_compiler_options(monkeypatch):
    """compile_train_step, evaluate and importance_log_weights compile with the twin's options for the
    platform (vae_jax.forms.COMPILER_OPTIONS): an option XLA does not know makes each of them fail, where
    losses and figures would not show options that never reached the compiler."""
    config = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2)
    model = vae_jax.init_model(config)
    rng = np.random.default_rng(0)
    x, eps = rng.random((3, 8, 8, 1), np.float32), rng.standard_normal((3, 2), np.float32)
    monkeypatch.setitem(vae_jax.forms.COMPILER_OPTIONS, "cpu", {"xla_no_such_option": "1"})
    assert model.compiler_options == {"xla_no_such_option": "1"}
    calls = {"compile_train_step": lambda: vae_jax.compile_train_step(vae_jax.create_train_state(model))(
                 vae_jax.create_train_state(model), x, eps),
             "evaluate": lambda: vae_jax.evaluate(model, x, eps),
             "importance_log_weights": lambda: vae_jax.importance_log_weights(model, x, eps[None])}
    for name, call in calls.items():
        with pytest.raises(Exception, match="xla_no_such_option"):
            call()
            pytest.fail(f"{name} compiled without the twin's options")
