"""Data-parallel runs for the distributed parity tests: `python -m parity_tests.distributed jax|torch OUT`
trains CONFIG for STEPS float64 Adam steps on 2 workers (JAX: a mesh of 2 devices, which on a CPU needs
XLA_FLAGS=--xla_force_host_platform_device_count=2; torch: 2 gloo processes on 127.0.0.1) and saves the
canonical weights and each step's loss to OUT (.npz). `single_device` is the same training on one
device, the reference."""

from __future__ import annotations

import sys

import numpy as np

from vae_core import seeds
from vae_core.config import VAEConfig
from vae_core.parallel import launch_workers

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), res_blocks=1, latent_dim=4, beta=2.0)
STEPS, BATCH, WORKERS = 4, 8, 2
RATES = (1e-3, 2e-3, 5e-4, 1e-3)  # a schedule: each step's learning rate


def global_batches():
    """The global batches (NCHW, float64) and eps every run sees."""
    rng = np.random.default_rng(7)
    return [(rng.random((BATCH, *CONFIG.image_shape)), seeds.eps_for_step(7, i, BATCH, CONFIG.latent_dim))
            for i in range(STEPS)]


def single_device(backend: str) -> dict:
    if backend == "jax":
        import jax

        with jax.enable_x64(True):
            return _jax(mesh=False)
    return _torch_single()


def _jax(mesh) -> dict:
    import vae_jax
    from vae_jax import distributed

    model = vae_jax.init_model(CONFIG, dtype="float64")
    state = vae_jax.create_train_state(model)
    if not mesh:
        step = vae_jax.compile_train_step(state)
    else:
        state = distributed.replicate(state, WORKERS)
        step = distributed.compile_train_step(state)
    losses = []
    for (x, eps), rate in zip(global_batches(), RATES):
        state, loss = step(state, x.transpose(0, 2, 3, 1), eps, learning_rate=rate)
        losses.append(float(loss.total))
    return {**vae_jax.weights.to_canonical(state.params, CONFIG), "losses": np.asarray(losses)}


def _torch_single() -> dict:
    import torch

    import vae_torch

    state = vae_torch.create_train_state(vae_torch.init_model(CONFIG, dtype=torch.float64))
    losses = []
    for (x, eps), rate in zip(global_batches(), RATES):
        state, loss = vae_torch.train_step(state, torch.as_tensor(x), torch.as_tensor(eps), learning_rate=rate)
        losses.append(float(loss.total))
    return {**vae_torch.export_weights(state.model), "losses": np.asarray(losses)}


def _torch_worker(out: str) -> None:  # in each process of launch_workers, with torchrun's environment
    import torch

    import vae_torch
    from vae_torch import distributed

    rank, _ = distributed.initialize(backend="gloo")
    try:
        state = vae_torch.create_train_state(vae_torch.init_model(CONFIG, dtype=torch.float64))
        state = distributed.replicate(state, WORKERS)
        step = distributed.compile_train_step(state)
        losses = []
        for (x, eps), rate in zip(global_batches(), RATES):
            state, loss = step(state, torch.as_tensor(x), torch.as_tensor(eps), learning_rate=rate)
            losses.append(float(loss.total))
        if rank == 0:
            np.savez(out, **vae_torch.export_weights(state.model), losses=np.asarray(losses))
    finally:
        distributed.shutdown()


def main(argv=None) -> int:
    backend, out = (sys.argv[1:] if argv is None else argv)
    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        if len(jax.devices()) != WORKERS:
            raise SystemExit(f"needs {WORKERS} devices, JAX sees {len(jax.devices())}: set "
                             f"XLA_FLAGS=--xla_force_host_platform_device_count={WORKERS} on a CPU")
        np.savez(out, **_jax(mesh=True))
    else:
        launch_workers(_torch_worker, (out,), WORKERS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
