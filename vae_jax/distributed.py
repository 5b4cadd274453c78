"""Data-parallel training on JAX's own engine: a 1-D device mesh ("data"), each batch split along it, the
parameters and Adam's state replicated; XLA partitions the jitted step and inserts the all-reduce of the
gradients itself. Mirrors vae_torch/distributed.py (DistributedDataParallel).

The step is the single-device `train_step`, unchanged: its loss is the mean over the global batch, so N
devices compute the same function as one, on the same global batches and eps (to rounding: the sums are
split in N parts). Across hosts, call `jax.distributed.initialize()` first (`initialize` below); then
`jax.devices()` lists every host's devices and the mesh spans them."""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vae_core import checks
from vae_jax.train import TrainState, train_step

AXIS = "data"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Multi-host: jax.distributed.initialize, with its own defaults (a cluster's environment) where the
    arguments are None. One process per host; call before anything else touches JAX."""
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device JAX sees, on every host), axis "data"."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("no devices to build a mesh from")
    return Mesh(np.asarray(devices), (AXIS,))


def replicate(state: TrainState, mesh: Mesh) -> TrainState:
    """The training state (parameters, Adam's moments, step, learning rate) copied to every device."""
    return jax.device_put(state, NamedSharding(mesh, P()))


def shard_batch(mesh: Mesh, *arrays):
    """Each array (a global batch: images, eps, target) split along its first axis over the mesh; a batch
    that does not divide by the number of devices is an error, never padded."""
    n = mesh.devices.size
    sharding = NamedSharding(mesh, P(AXIS))
    out = []
    for array in arrays:
        if array is None:
            out.append(None)
            continue
        checks.check_divisible_batch(array.shape[0], n, "devices")
        out.append(jax.device_put(array, sharding))
    return tuple(out)


def compile_train_step(state: TrainState, mesh: Mesh, *, check_inputs: bool = True):
    """The data-parallel step: `step(state, x, eps, beta=None, *, target=None, learning_rate=None)` with
    the global batch (numpy or jax arrays, NHWC); it is checked on the host (with check_inputs), split over
    the mesh, and the replicated state is donated and returned replicated."""
    replicated = NamedSharding(mesh, P())
    compiled = jax.jit(functools.partial(train_step, check_inputs=False), donate_argnums=0,
                       out_shardings=(replicated, replicated))
    model = state.model

    def step(state: TrainState, x, eps, beta=None, *, target=None, learning_rate=None):
        if check_inputs:
            x, eps, target = model._check_batch(x, eps, target)
            if learning_rate is not None:
                learning_rate = checks.check_learning_rate(float(learning_rate))
        x, eps, target = shard_batch(mesh, x, eps, target)
        beta = np.asarray(model.config.beta if beta is None else beta, model.dtype)
        if learning_rate is not None:
            learning_rate = np.asarray(learning_rate, model.dtype)
        return compiled(state, x, eps, beta, target=target, learning_rate=learning_rate)

    return step
