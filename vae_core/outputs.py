"""What the twins return. Named tuples: plain tuples to torch, pytrees to JAX (so they cross jit)."""

from typing import Any, NamedTuple


class VAEOutput(NamedTuple):
    mu: Any  # (N, latent) posterior mean
    logvar: Any  # (N, latent) posterior log-variance
    z: Any  # (N, latent) = mu + exp(logvar / 2) * eps
    logits: Any  # decoder logits, the image's shape and layout
    # the VampPrior's components, the encoder's (mu, logvar) at its pseudo-inputs, (P, latent) each; None
    # for the standard prior N(0, I)
    prior: Any = None


class VAELoss(NamedTuple):
    total: Any  # reconstruction + beta * kl, averaged over the batch
    reconstruction: Any  # summed over pixels, averaged over the batch
    kl: Any  # KL(q(z|x) || p(z)) summed over latent dims, averaged over the batch (an estimate: losses.py)
