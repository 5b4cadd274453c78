"""Negative ELBO: reconstruction summed over pixels + beta * KL summed over latent dims, each averaged
over the batch. Mirrors vae_torch/losses.py."""

from __future__ import annotations

import math

import jax.numpy as jnp

from vae_core import checks
from vae_core.config import VAEConfig
from vae_core.likelihood import gaussian_normaliser
from vae_core.outputs import VAELoss, VAEOutput
from vae_jax.checks import as_array, check_values, dtype_name
from vae_jax.likelihoods import pixel_losses


def reconstruction_loss(logits, x, likelihood: str, levels: int | None = None):
    """Per-image reconstruction loss, shape (N,): the pixels' losses summed (likelihoods.pixel_losses;
    `levels`, the data's, for the discretized logistic)."""
    per_pixel = pixel_losses(logits, x, likelihood, levels)
    return per_pixel.reshape(per_pixel.shape[0], -1).sum(1)


def log_likelihood(logits, x, likelihood: str, levels: int | None = None):
    """log p(x | z) per image, shape (N,), in nats: minus the reconstruction loss, plus for the Gaussian
    the normaliser of its fixed variance (vae_core/likelihood.py), so every likelihood gives real nats."""
    log_p = -reconstruction_loss(logits, x, likelihood, levels)
    return log_p - gaussian_normaliser(math.prod(x.shape[1:])) if likelihood == "gaussian" else log_p


def kl_divergence(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) per image, shape (N,)."""
    return kl_per_dim(mu, logvar).sum(axis=1)


def kl_per_dim(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) per image and latent dimension, shape (N, latent_dim)."""
    return -0.5 * (1 + logvar - mu**2 - jnp.exp(logvar))


def vae_loss(output: VAEOutput, x, config: VAEConfig, beta=None, *, free_bits: float = 0.0,
             check_inputs: bool = True) -> VAELoss:
    """Total, reconstruction and KL, each averaged over the batch; beta defaults to config.beta. With free
    bits (Kingma et al. 2016) the KL the objective weighs is, per latent dimension, its batch mean but at
    least `free_bits` nats, so no dimension is pushed all the way to the prior; the KL returned stays the
    true one, so total = reconstruction + beta * KL only when free_bits is 0. check_inputs=False skips the
    checks of x (type, shape, dtype, range) and computes the same: for the training step, which checks its
    batch once."""
    if check_inputs:
        x, dtype = as_array("x", x)
        c, h, w = config.image_shape
        images = (output.logits.shape[0], h, w, c)
        if tuple(x.shape) != images:
            raise ValueError(f"x has shape {tuple(x.shape)} but the logits are of images {images}")
        checks.check_dtype("x", dtype, dtype_name(output.logits.dtype))
        check_values("x", x, bounds=(0.0, 1.0))
    beta = config.beta if beta is None else beta
    reconstruction = reconstruction_loss(output.logits, x, config.likelihood, config.levels).mean()
    per_dim = kl_per_dim(output.mu, output.logvar)
    kl = per_dim.sum(axis=1).mean()
    objective = jnp.maximum(per_dim.mean(0), free_bits).sum() if free_bits > 0 else kl
    return VAELoss(reconstruction + beta * objective, reconstruction, kl)
