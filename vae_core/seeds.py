"""Every random number twinvae draws derives from the user's seed here, so both backends draw the same.

Streams are counter-based: the draw for (seed, purpose, step) does not depend on what was drawn before,
so a resumed run draws what an uninterrupted one would have, in either backend.
"""

from __future__ import annotations

import zlib

import numpy as np

PURPOSES = ("init", "data", "eps", "sample", "eval", "noise", "binarize", "binarize-test", "component")


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one purpose (PURPOSES), stable across runs and platforms."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    sequence = np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode())])
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


def rng(seed: int, purpose: str, step: int = 0) -> np.random.Generator:
    """A numpy Generator for draw number `step` of stream `purpose`."""
    return np.random.default_rng([derive_seed(seed, purpose), int(step)])


def standard_normal(seed: int, purpose: str, step: int, shape: tuple[int, ...],
                    dtype=np.float64) -> np.ndarray:
    """N(0, 1) draws for one step of a stream, drawn in float64 and then cast, so the float32 and
    float64 draws of one step are the same numbers up to rounding."""
    return rng(seed, purpose, step).standard_normal(shape).astype(dtype)


def eps_for_step(seed: int, step: int, batch_size: int, noise_dim: int, dtype=np.float64, *,
                 samples: int = 1) -> np.ndarray:
    """The reparameterisation noise of training step `step`: shape (batch_size, noise_dim), or (samples,
    batch_size, noise_dim) for a config's train_samples K > 1 (the IWAE bound's K draws per image); noise_dim
    is the config's, latent_dim per stochastic layer. One sample is the same draw as it was before K
    existed, and one level's as before levels existed, so those runs are unchanged."""
    shape = (batch_size, noise_dim) if samples == 1 else (samples, batch_size, noise_dim)
    return standard_normal(seed, "eps", step, shape, dtype)


def prior_draw(seed: int, n: int, noise_dim: int, components: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """What n latents drawn from the prior take: eps (n, noise_dim) from the 'sample' stream (z itself for
    N(0, I); a two-level model's z2's, then z1's noise) and, for a mixture prior of `components` equally
    weighted components (the VampPrior), each latent's component, uniform in [0, components), from the
    'component' stream; None for N(0, I) (0)."""
    eps = standard_normal(seed, "sample", 0, (n, noise_dim))
    return eps, rng(seed, "component").integers(0, components, n) if components else None


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The training-set permutation of one epoch (0-based), the same in both backends."""
    return rng(seed, "data", step=1 + epoch).permutation(n)
