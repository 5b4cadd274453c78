"""The framework-free side of data-parallel training that both twins' distributed.py use: which slice of
each global batch a worker takes. The engines are the twins' (a jax.sharding mesh; DistributedDataParallel);
the launcher behind `twinvae train --backend torch --nproc N` is the application's (twinvae/launcher.py)."""

from __future__ import annotations


def check_divisible_batch(batch_size: int, workers: int, what: str) -> int:
    """Data-parallel training splits each global batch into equal slices, one per worker (never padded, so
    N workers compute what one would): the batch must divide by the number of workers. Returns the slice."""
    if batch_size % workers:
        raise ValueError(f"a global batch of {batch_size} does not divide by {workers} {what}: every worker "
                         f"takes an equal slice; choose a batch size that is a multiple of {workers}")
    return batch_size // workers


def batch_axis(name: str, array) -> int:
    """The axis along which a global batch's array `name` is split: the first, but eps's second to last
    (eps is (N, latent), or (K, N, latent) for the IWAE bound's K samples of each image)."""
    return len(array.shape) - 2 if name == "eps" else 0


def worker_slice(array, rank: int, workers: int, what: str = "processes", axis: int = 0):
    """Worker `rank`'s equal slice of a global batch (images, eps, target) along its batch axis (batch_axis):
    rows [rank * k, (rank + 1) * k), k = batch / workers (not DistributedSampler's strided, padded split)."""
    size = check_divisible_batch(array.shape[axis], workers, what)
    index = (slice(None),) * axis + (slice(rank * size, (rank + 1) * size),)
    return array[index]
