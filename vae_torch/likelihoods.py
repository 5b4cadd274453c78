"""Each likelihood of the decoder's logits: its loss per pixel and its mean image. Mirrors
vae_jax/likelihoods.py; the continuous Bernoulli's series and switch are vae_core/likelihood.py's."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vae_core.config import LIKELIHOODS
from vae_core.likelihood import (
    CB_LOG_NORMALISER_SERIES,
    CB_MEAN_SERIES,
    CB_SERIES_BELOW,
    DL_MIN_LOG_SCALE,
    polynomial,
)


def pixel_losses(logits, x, likelihood: str, levels: int | None = None):
    """The reconstruction loss of each pixel. Bernoulli: BCE from logits (stable, no log(0)); Gaussian:
    squared error of sigmoid(logits), as in the seed; continuous Bernoulli: its negative log-density,
    BCE - log C; discretized logistic: minus the log-mass of x's bin among `levels` (logits: 2C
    channels, x: C)."""
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    if likelihood == "gaussian":
        return (torch.sigmoid(logits) - x) ** 2
    if likelihood == "continuous_bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none") \
            - continuous_bernoulli_log_normaliser(logits)
    if likelihood == "discretized_logistic":
        return -discretized_logistic_log_mass(logits, x, levels)
    raise _unknown(likelihood)


def mean_image(logits, likelihood: str):
    """The likelihood's mean, the image a model shows: sigmoid(logits) for Bernoulli and Gaussian, the
    continuous Bernoulli's mean (not its lambda = sigmoid(logits)), the discretized logistic's mean
    clipped to [0, 1] (C of its 2C channels)."""
    if likelihood in ("bernoulli", "gaussian"):
        return torch.sigmoid(logits)
    if likelihood == "continuous_bernoulli":
        return _continuous_bernoulli_mean(logits)
    if likelihood == "discretized_logistic":
        c = logits.shape[1] // 2
        return torch.clamp(logits[:, :c], 0.0, 1.0)
    raise _unknown(likelihood)


def continuous_bernoulli_log_normaliser(logits):
    """log C(lambda) = log(l / tanh(l/2)) of each logit l, exact in float32 and float64 at every l (its
    series near 0; vae_core/likelihood.py)."""
    near, small, large = _near_zero(logits)
    a, u = large.abs(), small * small
    series = math.log(2.0) + u * polynomial(CB_LOG_NORMALISER_SERIES, u)
    closed = torch.log(a / -torch.expm1(-a)) + torch.log1p(torch.exp(-a))
    return torch.where(near, series, closed)


def discretized_logistic_log_mass(logits, x, levels: int | None):
    """log P(x) of each pixel: the logistic's mass on x's bin, of `levels` bins k/(levels-1) on [0, 1],
    the edge bins open (vae_core/likelihood.py). Exact for every bin, however far from the mean."""
    if levels is None:
        raise ValueError("the discretized logistic needs the data's levels (VAEConfig.levels)")
    c = logits.shape[1] // 2
    mean, log_scale = logits[:, :c], logits[:, c:]
    inverse_scale = torch.exp(-torch.clamp(log_scale, min=DL_MIN_LOG_SCALE))
    half_bin = 0.5 / (levels - 1)
    above, below = inverse_scale * (x - mean + half_bin), inverse_scale * (x - mean - half_bin)
    # the edge bins: the CDF up to x's upper edge, from its lower edge on
    lowest, highest = F.logsigmoid(above), F.logsigmoid(-below)
    inside = lowest + highest + torch.log(-torch.expm1(-inverse_scale / (levels - 1)))
    bin_index = torch.round(x * (levels - 1))
    return torch.where(bin_index <= 0, lowest, torch.where(bin_index >= levels - 1, highest, inside))


def _continuous_bernoulli_mean(logits):
    near, small, large = _near_zero(logits)
    series = 0.5 + small * polynomial(CB_MEAN_SERIES, small * small)
    return torch.where(near, series, 1.0 / -torch.expm1(-large) - 1.0 / large)


def _near_zero(logits):
    """Where |l| is below the series' switch, and l made safe for each branch that the `where` drops: 0
    far from zero for the series (whose powers of l^2 overflow float32 from |l| ~ 3e7) and 1 near it for
    the closed form. A non-finite value in a dropped branch still makes the gradient NaN (0 * inf)."""
    near = logits.abs() < CB_SERIES_BELOW
    small = torch.where(near, logits, torch.zeros_like(logits))
    return near, small, torch.where(near, torch.ones_like(logits), logits)


def _unknown(likelihood: str) -> ValueError:
    return ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
