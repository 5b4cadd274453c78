"""The training objectives. The negative ELBO: reconstruction summed over pixels + beta * KL summed over
latent dims, each averaged over the batch; or the negative IWAE bound of K samples per image (Burda et al.
2015), averaged over the batch. Mirrors vae_torch/losses.py."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vae_core import checks
from vae_core.config import VAEConfig, check_bound_terms
from vae_core.likelihood import nats_offset
from vae_core.outputs import VAELoss, VAEOutput
from vae_jax.checks import as_array, check_values, dtype_name
from vae_jax.likelihoods import pixel_losses

LOG_2PI = math.log(2 * math.pi)


def reconstruction_loss(logits, x, likelihood: str, levels: int | None = None):
    """Per-image reconstruction loss, shape (N,): the pixels' losses summed (likelihoods.pixel_losses;
    `levels`, the data's, for the discretized logistic)."""
    per_pixel = pixel_losses(logits, x, likelihood, levels)
    return per_pixel.reshape(per_pixel.shape[0], -1).sum(1)


def log_likelihood(logits, x, likelihood: str, levels: int | None = None):
    """log p(x | z) per image, shape (N,), in nats: minus the reconstruction loss, plus for the Gaussian
    the normaliser of its fixed variance (vae_core/likelihood.py), so every likelihood gives real nats."""
    log_p = -reconstruction_loss(logits, x, likelihood, levels)
    offset = nats_offset(likelihood, math.prod(x.shape[1:]))
    return log_p - offset if offset else log_p


def kl_divergence(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) per image, shape (N,)."""
    return kl_per_dim(mu, logvar).sum(axis=1)


def kl_per_dim(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) per image and latent dimension, shape (N, latent_dim)."""
    return -0.5 * (1 + logvar - mu**2 - jnp.exp(logvar))


def kl_normal_per_dim(mu, logvar, prior_mu, prior_logvar):
    """KL(N(mu, exp(logvar)) || N(prior_mu, exp(prior_logvar))) per latent dimension; broadcasts."""
    ratio = (jnp.exp(logvar) + (mu - prior_mu) ** 2) * jnp.exp(-prior_logvar)
    return 0.5 * (prior_logvar - logvar + ratio - 1)


def log_normal(z, mu, logvar):
    """log N(z; mu, diag exp(logvar)), the last axis summed; broadcasts."""
    return -0.5 * ((z - mu) ** 2 * jnp.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def log_prior(z, prior=None):
    """log p(z) per latent, z (..., latent): N(0, I) for prior None; else the VampPrior's equally weighted
    mixture of its P components, prior = (mu, logvar), (P, latent) each (Tomczak & Welling 2018, eq. 9)."""
    if prior is None:
        return -0.5 * (z**2 + LOG_2PI).sum(-1)
    mu, logvar = prior
    return jax.nn.logsumexp(log_normal(z[..., None, :], mu, logvar), axis=-1) - math.log(mu.shape[0])


def kl_per_image(output: VAEOutput):
    """KL(q(z|x) || p(z)) per image, shape (N,): closed form for N(0, I); for the VampPrior, which has none,
    the single-sample estimate log q(z|x) - log p(z) at the forward pass's z (unbiased: its mean over z ~
    q(z|x) is the KL). A two-level model adds z1's KL(q(z1|x,z2) || p(z1|z2)) at the drawn z2, closed form
    between the two Gaussians (its mean over z2 ~ q(z2|x) is the rest of the ELBO's KL)."""
    if output.prior is None:
        kl = kl_divergence(output.mu, output.logvar)
    else:
        kl = log_normal(output.z, output.mu, output.logvar) - log_prior(output.z, output.prior)
    return kl if output.lower is None else kl + kl_normal_per_dim(*_lower_gaussians(output.lower)).sum(-1)


def kl_dims(output: VAEOutput):
    """The KL per image and latent dimension that free bits clamp, (N, latent), or (N, 2 latent) for two
    levels (z2's, then z1's given z2); the standard prior only."""
    lower = None if output.lower is None else _lower_gaussians(output.lower)
    top = kl_per_dim(output.mu, output.logvar)
    return top if lower is None else jnp.concatenate([top, kl_normal_per_dim(*lower)], axis=1)


def _lower_gaussians(lower):
    """(mu, logvar, prior_mu, prior_logvar) of q(z1|x,z2) and p(z1|z2), as kl_normal_per_dim takes them."""
    return lower.mu, lower.logvar, lower.prior_mu, lower.prior_logvar


def importance_terms(output: VAEOutput, x, config: VAEConfig):
    """The terms of each sample's importance log-weight log w = log p(x|z) + log p(z) - log q(z|x), from the
    forward pass (output) of images x with K samples of z, (K, N, latent): (reconstruction, log p(z), log
    q(z|x)), each (K, N); a two-level model's are of (z1, z2): log p(z2) + log p(z1|z2), log q(z2|x) +
    log q(z1|x,z2). The reconstruction is reconstruction_loss's, -log p(x|z) up to nats_offset (the
    Gaussian's constant); log p(z) is the model's prior's (log_prior). The one computation of the weights,
    for the IWAE objective (vae_loss) and for evaluation (train.importance_log_weights)."""
    k, n, _ = output.z.shape
    images = jnp.broadcast_to(x, (k, *x.shape)).reshape(k * n, *x.shape[1:])
    reconstruction = reconstruction_loss(output.logits, images, config.likelihood, config.levels).reshape(k, n)
    log_pz, log_qz = log_prior(output.z, output.prior), log_normal(output.z, output.mu, output.logvar)
    if output.lower is not None:  # and z1's: log p(z1|z2) and log q(z1|x,z2)
        lower = output.lower
        log_pz = log_pz + log_normal(lower.z, lower.prior_mu, lower.prior_logvar)
        log_qz = log_qz + log_normal(lower.z, lower.mu, lower.logvar)
    return reconstruction, log_pz, log_qz


def vae_loss(output: VAEOutput, x, config: VAEConfig, beta=None, *, free_bits: float = 0.0,
             check_inputs: bool = True) -> VAELoss:
    """The training objective's total, reconstruction and KL, each averaged over the batch. The ELBO's
    (config.objective "elbo", or "iwae" of one sample): beta defaults to config.beta, and the KL is
    kl_per_image's (closed form for N(0, I), an estimate for the VampPrior). With free bits (Kingma et al.
    2016; the standard prior only) the KL the objective weighs is, per latent dimension, its batch mean but at
    least `free_bits` nats, so no dimension is pushed all the way to the prior; the KL returned stays the
    true one, so total = reconstruction + beta * KL only when free_bits is 0.
    The IWAE bound's (config.importance_weighted: K = train_samples > 1, the output of a forward pass of
    eps (K, N, latent)): total = -log (1/K) sum_k w_k per image (a logsumexp over K, minus log K), the
    reconstruction and the KL the K samples' means of the reconstruction loss and of log q(z|x) - log p(z),
    so total <= reconstruction + KL, their ELBO estimate. Its -log p(x|z) is the reconstruction loss, as
    the ELBO's total (the Gaussian's nats_offset left out); it has no beta (1) and no free bits.
    check_inputs=False skips the checks of x (type, shape, dtype, range) and of the samples and computes the
    same: for the training step, which checks its batch once."""
    if check_inputs:
        x, dtype = as_array("x", x)
        c, h, w = config.image_shape
        images = (output.mu.shape[0], h, w, c)
        if tuple(x.shape) != images:
            raise ValueError(f"x has shape {tuple(x.shape)} but the logits are of images {images}")
        checks.check_dtype("x", dtype, dtype_name(output.logits.dtype))
        check_values("x", x, bounds=(0.0, 1.0))
        check_bound_terms(config, beta=beta, free_bits=free_bits)
        checks.check_train_samples("the forward pass's z", tuple(output.z.shape), config.train_samples)
    if config.importance_weighted:
        return _importance_weighted_loss(output, x, config)
    beta = config.beta if beta is None else beta
    reconstruction = reconstruction_loss(output.logits, x, config.likelihood, config.levels).mean()
    if free_bits > 0:
        per_dim = kl_dims(output)
        kl, objective = per_dim.sum(axis=1).mean(), jnp.maximum(per_dim.mean(0), free_bits).sum()
        return VAELoss(reconstruction + beta * objective, reconstruction, kl)
    kl = kl_per_image(output).mean()
    return VAELoss(reconstruction + beta * kl, reconstruction, kl)


def _importance_weighted_loss(output: VAEOutput, x, config: VAEConfig) -> VAELoss:
    reconstruction, log_pz, log_qz = importance_terms(output, x, config)
    log_w = -reconstruction + log_pz - log_qz
    bound = jax.nn.logsumexp(log_w, axis=0) - math.log(log_w.shape[0])  # log of the K weights' mean, per image
    return VAELoss(-bound.mean(), reconstruction.mean(), (log_qz - log_pz).mean())
