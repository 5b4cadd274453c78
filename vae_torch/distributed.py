"""Data-parallel training on PyTorch's own engine: DistributedDataParallel, one process per device (gloo
on CPU, NCCL on GPU), launched by torchrun (`torchrun --nproc-per-node N -m vae_torch.train ...`) or by
`twinvae train --backend torch --nproc N`. Mirrors vae_jax/distributed.py (a jax.sharding mesh).

Every process takes its slice of the same global batch and of the same global eps (`local_slice`; not
DistributedSampler's padded, strided split), the loss is its slice's mean, and DDP averages the gradients
over the processes during backward: the mean of equal slices' means is the global mean, so N processes
compute what one would on the same global batches (to rounding)."""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vae_core import checks
from vae_torch.train import TrainState

TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("TWINVAE_DIST_TIMEOUT", 120)))


def initialize(backend: str | None = None, rank: int | None = None, world_size: int | None = None,
               init_method: str | None = None) -> tuple[int, int]:
    """torch.distributed.init_process_group, from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT) where the arguments are None; backend: NCCL with CUDA, else gloo. A rendezvous that cannot
    bind its port or hears from no peer within TIMEOUT (TWINVAE_DIST_TIMEOUT seconds, default 120) is an
    error that says which. Returns (rank, world_size)."""
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    kwargs = {} if init_method is None else {"init_method": init_method}
    if rank is not None:
        kwargs.update(rank=rank, world_size=world_size)
    try:
        dist.init_process_group(backend, timeout=TIMEOUT, **kwargs)
    except (RuntimeError, ValueError) as err:  # DistNetworkError and DistStoreError are RuntimeErrors
        where = init_method or f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise RuntimeError(f"could not start the {backend} process group at {where}: {err}. A port in use "
                           f"(choose another --master-port), a peer that did not start, or a wrong "
                           f"address are the usual causes") from err
    return dist.get_rank(), dist.get_world_size()


def local_slice(array, rank: int, world_size: int):
    """This process's equal slice of a global batch (images, eps or target) along its first axis."""
    size = checks.check_divisible_batch(len(array), world_size, "processes")
    return array[rank * size:(rank + 1) * size]


def wrap(state: TrainState) -> TrainState:
    """The training state with its model wrapped in DistributedDataParallel (which broadcasts rank 0's
    parameters): train_step then runs through it, and DDP all-reduces the gradients."""
    if state.free_bits > 0:
        raise ValueError("free bits clamp the KL's mean over the global batch per latent dimension, which a "
                         "DistributedDataParallel process does not see; train with free_bits=0 or in JAX")
    device = state.model.fc_mu.weight.device
    state.ddp = DistributedDataParallel(state.model, device_ids=[device] if device.type == "cuda" else None)
    return state


def mean_losses(losses):
    """The step's losses averaged over the processes (each holds its slice's), for logging."""
    stacked = torch.stack([loss.detach() for loss in losses])
    dist.all_reduce(stacked)
    return type(losses)(*(stacked / dist.get_world_size()))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
