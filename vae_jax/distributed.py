"""Data-parallel training on JAX's own engine: a 1-D device mesh ("data"), each global batch split along
it, the parameters and Adam's state replicated; XLA partitions the jitted step and inserts the all-reduce
of the gradients itself. Mirrors vae_torch/distributed.py (DistributedDataParallel).

The step is the single-device `train_step`, unchanged: its loss is the mean over the global batch, so N
devices compute the same function as one, on the same global batches and eps (to rounding: the sums are
split in N parts). Across hosts, every host runs the same program after `initialize` and passes the same
global batch; each contributes its own rows (vae_core.parallel.worker_slice)."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vae_core.parallel import batch_axis, check_divisible_batch, worker_slice
from vae_jax import train as single
from vae_jax.train import TrainState

AXIS = "data"


def initialize(address: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               ) -> tuple[int, int]:
    """Multi-host: jax.distributed.initialize (address "host:port" of process 0), with JAX's own
    detection of a cluster's environment where the arguments are None. Call once per host, before
    anything else touches JAX. Returns (this process's index, the number of processes)."""
    jax.distributed.initialize(address, num_processes, process_id)
    return jax.process_index(), jax.process_count()


def replicate(state: TrainState, workers: int | None = None) -> TrainState:
    """The state copied to every device of a 1-D mesh over the first `workers` devices (None: all of
    them, on every host); the mesh goes into the state, for compile_train_step."""
    devices = jax.devices()
    if workers is not None:
        if not 1 <= workers <= len(devices):
            raise ValueError(f"asked for {workers} devices, JAX sees {len(devices)}: {devices}")
        devices = devices[:workers]
    mesh = Mesh(np.asarray(devices), (AXIS,))
    # across hosts from host copies: the state is committed to this host's device, and a multi-host mesh
    # takes each process's own copy of a host value (checked equal across them), where moving a device's
    # array to another host's devices is refused
    if jax.process_count() > 1:
        state = jax.tree.map(np.asarray, state)
    return jax.device_put(state, NamedSharding(mesh, P())).replace(mesh=mesh)


def compile_train_step(state: TrainState, *, check_inputs: bool = True):
    """The data-parallel step of a replicated state: `step(state, x, eps, beta=None, *, labels=None,
    target=None, learning_rate=None)` with the global batch (numpy or arrays, NHWC), split over the mesh, then the
    single-device compiled step (vae_jax.train.compile_train_step: the checks, the donation), which XLA
    partitions over the mesh from its inputs' shardings."""
    mesh = state.mesh
    if mesh is None:
        raise ValueError("the state is not replicated over a mesh: call replicate(state) first")
    compiled = single.compile_train_step(state, check_inputs=check_inputs)

    def step(state: TrainState, x, eps, beta=None, *, labels=None, target=None, learning_rate=None):
        x, eps, labels, target = _shard(mesh, x, eps, labels, target)
        return compiled(state, x, eps, beta, labels=labels, target=target, learning_rate=learning_rate)

    return step


def any_process(flag: bool) -> bool:
    """Whether `flag` is true on any host (a collective: every host calls it at the same point): how the
    hosts agree to stop at one step when one of them is asked to."""
    from jax.experimental import multihost_utils

    return bool(np.max(multihost_utils.process_allgather(np.asarray(int(flag)))))


def shutdown(wait_for_peers: bool = True) -> None:
    """End a multi-host run (jax.distributed.shutdown, which waits for every host), where this host's part
    ended well; a failed host just exits, and the others' collectives fail on it. Nothing to do on one
    host."""
    if wait_for_peers and jax.process_count() > 1:
        jax.distributed.shutdown()


def _shard(mesh: Mesh, x, eps, labels, target):
    """Global batches split along their batch axis over the mesh (vae_core.parallel.batch_axis: eps of K
    importance samples along its second), never padded: a batch that does not divide by the number of
    devices is an error. Each process supplies its own rows."""
    out = []
    for name, array in (("x", x), ("eps", eps), ("labels", labels), ("target", target)):
        if array is not None:
            axis = batch_axis(name, array)
            check_divisible_batch(np.shape(array)[axis], mesh.devices.size, "devices")
            local = worker_slice(np.asarray(array), jax.process_index(), jax.process_count(), axis=axis)
            sharding = NamedSharding(mesh, P(*(None,) * axis, AXIS))
            array = jax.make_array_from_process_local_data(sharding, local, np.shape(array))
        out.append(array)
    return tuple(out)
