"""Data-parallel training on PyTorch's own engine: DistributedDataParallel, one process per device (gloo
on CPU, NCCL on GPU), launched by torchrun (`torchrun --nproc-per-node N -m twinvae train --backend torch`)
or by `twinvae train --backend torch --nproc N`. Mirrors vae_jax/distributed.py (a jax.sharding mesh).

Every process gets the same global batch and eps and takes its own rows (vae_core.parallel.worker_slice;
eps of K importance samples along its batch axis; not DistributedSampler's strided, padded split); its
loss is its slice's mean, and DDP averages the gradients over the processes during backward: the mean of
equal slices' means is the global mean, so N processes compute what one would on the same global batches
(to rounding)."""

from __future__ import annotations

import datetime
import gc
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vae_core.parallel import batch_axis, worker_slice
from vae_torch import train as single
from vae_torch.train import TrainState

# How long a collective waits for a peer (TWINVAE_DIST_TIMEOUT seconds; torch's own default, 30 min):
# rank 0 evaluates and writes the checkpoint at the end of an epoch while the others wait in the next step.
TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("TWINVAE_DIST_TIMEOUT", 1800)))


def initialize(address: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               backend: str | None = None) -> tuple[int, int]:
    """torch.distributed.init_process_group; where the arguments are None, torchrun's environment
    (MASTER_ADDR:MASTER_PORT, WORLD_SIZE, RANK). backend: NCCL with CUDA, else gloo. A port that is taken
    or a peer that never comes is an error that says so. Returns (rank, world size); a process that already
    joined a group gets its place in it."""
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    address = address or f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ.get('MASTER_PORT', '29500')}"
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if num_processes is None else num_processes
    rank = int(os.environ.get("RANK", 0)) if process_id is None else process_id
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    try:
        dist.init_process_group(backend, init_method=f"tcp://{address}", world_size=world_size, rank=rank,
                                timeout=TIMEOUT)
    except (RuntimeError, ValueError) as err:  # DistNetworkError and DistStoreError are RuntimeErrors
        raise RuntimeError(f"could not start the {backend} process group at {address} (rank {rank} of "
                           f"{world_size}): {err}. A port in use (choose another MASTER_PORT / "
                           f"--master-port), a peer that did not start or a wrong address are the usual "
                           f"causes") from err
    return rank, world_size


def replicate(state: TrainState, workers: int | None = None) -> TrainState:
    """The state with its model wrapped in DistributedDataParallel, which copies rank 0's parameters to
    every process; with NCCL the model and Adam's moments move to this process's GPU first. `workers`, if
    given, must be the process group's size."""
    if workers is not None and workers != dist.get_world_size():
        raise ValueError(f"asked for {workers} workers, the process group has {dist.get_world_size()}")
    if state.free_bits > 0:
        raise ValueError("free bits clamp the KL's mean over the global batch per latent dimension, which a "
                         "DistributedDataParallel process does not see; train with free_bits=0, or in JAX")
    if dist.get_backend() == "nccl":  # one GPU per process (initialize picked it): the model and all of
        single.move_train_state(state, torch.device("cuda", torch.cuda.current_device()))  # Adam's state
    device = state.model.fc_mu.weight.device
    state.ddp = DistributedDataParallel(state.model, device_ids=[device] if device.type == "cuda" else None)
    return state


def compile_train_step(state: TrainState, mode: str | None = None, *, check_inputs: bool = True):
    """The data-parallel step of a replicated state: `step(state, x, eps, beta=None, *, labels=None,
    target=None, learning_rate=None)` with the global batch; this process trains on its rows and returns the losses
    averaged over the processes. mode: None runs eagerly, else torch.compile's mode."""
    if state.ddp is None:
        raise ValueError("the state is not replicated: call replicate(state) first")
    inner = single.train_step if mode is None else single.compile_train_step(state, mode, check_inputs=False)
    kwargs = {"check_inputs": check_inputs} if mode is None else {}
    rank, world_size = dist.get_rank(), dist.get_world_size()

    def step(state: TrainState, x, eps, beta=None, *, labels=None, target=None, learning_rate=None):
        x, eps, labels, target = (
            None if a is None else worker_slice(a, rank, world_size, axis=batch_axis(name, a))
            for name, a in (("x", x), ("eps", eps), ("labels", labels), ("target", target)))
        state, losses = inner(state, x, eps, beta, labels=labels, target=target, learning_rate=learning_rate,
                              **kwargs)
        return state, _mean_over_processes(losses)

    return step


def any_process(flag: bool) -> bool:
    """Whether `flag` is true in any process of the group (a collective: every process calls it at the
    same point): how the workers agree to stop at one step when one of them is asked to."""
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def shutdown(wait_for_peers: bool = True) -> None:
    """Leave the process group. wait_for_peers (this process's part ended well): a barrier first, so that
    no process closes its connections while a peer still reads from them (rank 0 evaluates and writes
    after the others are done). Then what still holds the group (DDP's reducer, in reference cycles) is
    collected while the interpreter is whole: gloo work freed during its teardown aborts the process
    ("terminate called without an active exception", once in a CI run)."""
    if not dist.is_initialized():
        return
    if wait_for_peers:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()


def _mean_over_processes(losses):
    stacked = torch.stack([loss.detach() for loss in losses])
    dist.all_reduce(stacked)
    return type(losses)(*(stacked / dist.get_world_size()))
