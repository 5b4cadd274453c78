"""The training batches of an epoch, made in line: every draw in a batch (the epoch's order, dynamic
binarisation, the denoiser's noise, eps) is a function of the run's seed and the global step
(vae_core.seeds), so runs are bitwise the same wherever and whenever a batch is made.

Under JAX's asynchronous dispatch the host makes batch b+1 while the step of batch b runs (the trainer
reads the losses back in groups, so nothing waits for the step in between). A thread that made the next
batch during the step measured no faster in either twin (docs/perf-log.md, 2026-12-06: a batch takes about
0.6 ms of a 30-45 ms step), so there is none."""

from __future__ import annotations

import numpy as np

from twinvae.data import binarize
from twinvae.denoising import add_noise
from vae_core import seeds


def training_batch(run, model, order: np.ndarray, b: int, step: int):
    """Batch b of the epoch's order at global step `step`, as the step takes it: (inputs, eps, labels,
    target), the twin's arrays (on `model`'s device, in its dtype and layout). A denoising VAE encodes the
    noisy images and reconstructs the clean ones (target; None otherwise). `run` is the trainer's Run."""
    options, twin = run.options, run.twin
    rows = order[b * options.batch_size:(b + 1) * options.batch_size]
    x = run.dataset.train_x[rows]
    labels = twin.as_labels(run.dataset.train_y[rows], model) if run.config.num_classes else None
    if options.binarize == "dynamic":
        x = binarize(x, "dynamic", options.seed, step)
    x = x.astype(options.param_dtype)
    eps = seeds.eps_for_step(options.seed, step, options.batch_size, run.config.noise_dim, options.param_dtype,
                             samples=run.config.train_samples)
    inputs = add_noise(x, options.denoise, options.seed, step) if options.denoise else x
    target = twin.as_input(x, model) if options.denoise else None
    return twin.as_input(inputs, model), twin.as_input(eps, model), labels, target


def epoch_batches(run, model, epoch: int, first: int, step: int):
    """The epoch's batches from batch `first` (at global step `step`) to its last, one at a time."""
    order = seeds.epoch_order(run.options.seed, epoch, len(run.dataset.train_x))
    for b in range(first, run.n_batches):
        yield training_batch(run, model, order, b, step + b - first)
