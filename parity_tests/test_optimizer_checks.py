"""Adam's hyperparameters, the steps' scalars and a model too big for memory get the same clear error from
both twins, naming the argument or the config field, before anything is computed or allocated."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import vae_jax
import vae_torch
from vae_core import layout
from vae_core.config import VAEConfig

pytestmark = pytest.mark.fast  # the input checks: all of them in the fast tier

CONFIG = VAEConfig(image_shape=(1, 8, 12), conv_channels=(4, 8), latent_dim=3)
TWINS = {"torch": vae_torch, "jax": vae_jax}


def _images(name, x):  # canonical NCHW numpy -> the twin's input
    return torch.as_tensor(x) if name == "torch" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _scalar(name, value):  # the twin's own 0-d array
    return torch.tensor(value) if name == "torch" else jnp.asarray(value)


def _batch():
    rng = np.random.default_rng(0)
    return rng.random((2, *CONFIG.image_shape)).astype(np.float32), np.zeros((2, 3), np.float32)


def _message_of_both(call) -> str:
    """The message of the ValueError call(twin name, twin) raises, the same in both twins."""
    messages = []
    for name, twin in TWINS.items():
        with pytest.raises(ValueError) as info:
            call(name, twin)
        messages.append(str(info.value))
    assert messages[0] == messages[1], messages
    return messages[0]


@pytest.mark.parametrize("kwargs, message", [
    ({"learning_rate": float("nan")}, "learning rate must be a finite number >= 0, got nan"),
    ({"learning_rate": -1e-3}, "learning rate must be a finite number >= 0, got -0.001"),
    ({"learning_rate": "1e-3"}, "learning rate must be a finite number >= 0, got '1e-3'"),
    ({"betas": (1.5, 2.0)}, "betas[0] must be a number in [0, 1), got 1.5"),
    ({"betas": ("0.9", 0.999)}, "betas[0] must be a number in [0, 1), got '0.9'"),
    ({"eps": -1}, "eps must be a finite number >= 0, got -1"),
    ({"eps": "1e-8"}, "eps must be a finite number >= 0, got '1e-8'"),
    ({"free_bits": "0.5"}, "free_bits must be a finite number >= 0, got '0.5'"),
    ({"free_bits": True}, "free_bits must be a finite number >= 0, got True"),
])
def test_create_train_state_refuses_bad_adam_hyperparameters_alike(kwargs, message):
    models = {name: twin.init_model(CONFIG, seed=0) for name, twin in TWINS.items()}
    assert _message_of_both(lambda name, twin: twin.create_train_state(models[name], **kwargs)) == message


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("kwargs, message", [
    ({"beta": "1"}, "beta must be a finite number >= 0, got '1'"),
    ({"beta": True}, "beta must be a finite number >= 0, got True"),
    ({"beta": [1.0]}, "beta must be a finite number >= 0, got [1.0]"),
    ({"learning_rate": "1e-3"}, "learning rate must be a finite number >= 0, got '1e-3'"),
    ({"learning_rate": np.array([1e-3])}, "learning rate must be a finite number >= 0, got array([0.001])"),
])
def test_a_step_refuses_a_scalar_of_the_wrong_type_alike(compiled, kwargs, message):
    x, eps = _batch()
    states, before = {}, {}
    for name, twin in TWINS.items():
        states[name] = twin.create_train_state(twin.init_model(CONFIG, seed=0))
        before[name] = twin.export_weights(states[name].model)

    def step(name, twin):
        run = twin.compile_train_step(states[name]) if compiled else twin.train_step
        run(states[name], _images(name, x), _scalar(name, eps), **kwargs)

    assert _message_of_both(step) == message
    for name, twin in TWINS.items():  # refused before the step: the parameters are as they were
        after = twin.export_weights(states[name].model)
        assert all(np.array_equal(before[name][k], after[k]) for k in after)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", TWINS)
def test_the_twins_own_0d_arrays_are_numbers(name, compiled):
    twin, (x, eps) = TWINS[name], _batch()
    state = twin.create_train_state(twin.init_model(CONFIG, seed=0), learning_rate=_scalar(name, 1e-3),
                                    betas=(_scalar(name, 0.9), np.float64(0.999)), free_bits=_scalar(name, 0.0))
    run = twin.compile_train_step(state) if compiled else twin.train_step
    state, losses = run(state, _images(name, x), _scalar(name, eps), _scalar(name, 0.5),
                        learning_rate=_scalar(name, 2e-3))
    assert np.isfinite(float(losses.total)) and int(state.step) == 1


@pytest.fixture
def memory_24_gib(monkeypatch):
    """This machine's memory as 24 GiB, whatever it has: the messages are the same everywhere, and a config
    a big machine could hold is still refused here, before anything is allocated."""
    monkeypatch.setattr(layout, "physical_memory", lambda: 24 * 2**30)


@pytest.mark.parametrize("config, message", [
    (VAEConfig(latent_dim=10**9), "fc_mu.weight (1000000000 × 3136, 1000000000 set by latent_dim) alone needs "
                                  "11.4 TiB; lower latent_dim"),
    (VAEConfig(arch="mlp", mlp_widths=(10**8,)),
     "encoder.linears.0.weight (100000000 × 784, 100000000 set by mlp_widths[0]) alone needs 292.1 GiB; "
     "lower mlp_widths[0]"),
], ids=["latent_dim", "mlp_widths"])
def test_a_model_too_big_for_memory_is_refused_naming_the_field(memory_24_gib, config, message):
    builds = {"torch": lambda: vae_torch.VAE(config), "jax": lambda: vae_jax.VAE(config, rngs=nnx.Rngs(0))}
    for build in (lambda name, twin: twin.init_model(config), lambda name, twin: builds[name]()):
        refusal = _message_of_both(build)
        assert refusal.startswith("the model's parameters need ") and refusal.endswith(message), refusal
        assert "in float32, more than this machine's 24.0 GiB of memory: " in refusal
    for twin in TWINS.values():  # a model that fits still builds and gets its optimizer
        twin.create_train_state(twin.init_model(CONFIG, seed=0))


def test_a_model_that_fits_but_cannot_train_is_refused_by_create_train_state(monkeypatch):
    parameter_bytes = 4 * layout.num_parameters(CONFIG)  # float32
    monkeypatch.setattr(layout, "physical_memory", lambda: 2 * parameter_bytes)
    models = {name: twin.init_model(CONFIG, seed=0) for name, twin in TWINS.items()}  # one copy fits
    refusal = _message_of_both(lambda name, twin: twin.create_train_state(models[name]))
    assert refusal.startswith("training needs ") and "(the parameters, their gradients and Adam's two " \
        "moments)" in refusal and refusal.endswith("lower conv_channels[1]"), refusal
