"""What the twins return. Named tuples: plain tuples to torch, pytrees to JAX (so they cross jit)."""

from typing import Any, NamedTuple


class LowerLevel(NamedTuple):
    """A two-level model's z1 (hierarchy 2), shaped as its z2: (N, latent), or (K, N, latent) for K samples."""
    mu: Any  # q(z1 | x, z2)'s mean
    logvar: Any  # and log-variance
    z: Any  # = mu + exp(logvar / 2) * eps[..., latent:]
    prior_mu: Any  # p(z1 | z2)'s mean
    prior_logvar: Any  # and log-variance


class VAEOutput(NamedTuple):
    mu: Any  # (N, latent) posterior mean (a two-level model's z2's, as logvar and z)
    logvar: Any  # (N, latent) posterior log-variance
    z: Any  # (N, latent) = mu + exp(logvar / 2) * eps (eps[..., :latent] for two levels), or (K, N, latent)
    logits: Any  # decoder logits, the image's shape and layout
    # the VampPrior's components, the encoder's (mu, logvar) at its pseudo-inputs, (P, latent) each; None
    # for the standard prior N(0, I)
    prior: Any = None
    lower: Any = None  # a two-level model's LowerLevel; None for one level


class VAELoss(NamedTuple):
    total: Any  # reconstruction + beta * kl, averaged over the batch
    reconstruction: Any  # summed over pixels, averaged over the batch
    # KL(q(z|x) || p(z)) summed over latent dims (and levels), averaged over the batch (an estimate: losses.py)
    kl: Any
