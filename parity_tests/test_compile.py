"""torch.compile of the whole training step against eager torch and jitted JAX, on one fixed config
(each new shape costs 10-20 s of Inductor compilation on 2 cores)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import vae_jax
import vae_torch
from twinvae.compare import relative_error
from twinvae.parity.measures import worst
from twinvae.parity.tolerances import TOLERANCES
from vae_core import seeds
from vae_core.config import VAEConfig

CONFIG = VAEConfig(image_shape=(1, 16, 16), conv_channels=(8, 16), latent_dim=6, beta=2.0)
STEPS = 4
BETAS = [None, 0.25, 0.5, 1.5]  # config.beta, then a KL warm-up style override that changes every step
RATES = [None, 3e-3, 5e-4, 1e-3]  # the state's rate, then a schedule's, changing every step
# Compiled vs eager in the same dtype: float32 kernels differ in summation order, so a first Adam step
# can move a near-zero-gradient parameter differently (see tolerances.TOLERANCES); observed up to 1.7e-5.
FLOAT32_PARAMS = 1e-4


def _trajectory(step_fn, state, batches, eps, to_array, export):
    losses, params = [], []
    for x, e, beta, rate in zip(batches, eps, BETAS, RATES):
        state, loss = step_fn(state, to_array(x), to_array(e), beta, learning_rate=rate)
        losses.append(float(loss.total))
        params.append(export(state))
    return losses, params


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_torch_step_matches_eager_and_jax(dtype):
    rng = np.random.default_rng(0)
    batches = [rng.random((6, *CONFIG.image_shape)).astype(dtype) for _ in range(STEPS)]
    eps = [seeds.eps_for_step(0, s, 6, CONFIG.latent_dim, dtype) for s in range(STEPS)]
    tdtype = getattr(torch, dtype)

    # float32 compiles the channels_last model (the benchmark's fastest torch form) and also checks that
    # the compiled backward copies no activation into another layout (vae_torch.compile_train_step)
    layout = torch.channels_last if dtype == "float32" else torch.contiguous_format

    def to_tensor(a):
        return torch.as_tensor(a).contiguous(memory_format=layout if a.ndim == 4 else torch.contiguous_format)

    def torch_run(compiled):
        model = vae_torch.init_model(CONFIG, seed=0, dtype=tdtype).to(memory_format=layout)
        state = vae_torch.create_train_state(model)
        torch._dynamo.reset()  # forget earlier tests' compilations, so only this run's count
        step = vae_torch.compile_train_step(state) if compiled else vae_torch.train_step
        with torch._dynamo.config.patch(error_on_recompile=True):  # a new beta or rate must not recompile
            run = _trajectory(step, state, batches, eps, to_tensor, lambda s: vae_torch.export_weights(s.model))
            with torch.profiler.profile(record_shapes=True) as p:  # one more step, compiled by now
                step(state, to_tensor(batches[0]), to_tensor(eps[0]))
        return run, [event.input_shapes[0] for event in p.events() if event.name == "aten::copy_"]

    eager, _ = torch_run(compiled=False)
    compiled, copies = torch_run(compiled=True)
    activations = [shape for shape in copies if len(shape) == 4 and shape[0] == 6 and shape[1] > 1]
    assert dtype == "float64" or activations == [], activations
    with jax.enable_x64(dtype == "float64"):
        state = vae_jax.create_train_state(vae_jax.init_model(CONFIG, seed=0, dtype=jnp.dtype(dtype)))
        jitted = _trajectory(vae_jax.compile_train_step(state), state,
                             [b.transpose(0, 2, 3, 1) for b in batches], eps, jnp.asarray,
                             lambda s: vae_jax.weights.to_canonical(s.params, CONFIG))

    tol = TOLERANCES[dtype]
    for name, run in (("torch.compile", compiled), ("jax.jit", jitted)):
        for step in range(STEPS):
            assert relative_error(run[0][step], eager[0][step]) <= tol["adam_loss"], (name, step)
            error, key = worst(run[1][step], eager[1][step])
            limit = FLOAT32_PARAMS if dtype == "float32" else tol["adam_params"]
            assert error <= limit, (name, step, key, error)
