"""The likelihoods both twins compute from the decoder's logits, against references of their own: the
continuous Bernoulli against torch.distributions in float64 (only there: in float32 it clamps the
probabilities, which cuts the logits off at about +-16) and against quadrature of its density; each
twin's float32 against that float64 reference."""

import functools
import importlib

import jax
import mpmath
import numpy as np
import pytest
import torch

from vae_core.likelihood import CB_SERIES_BELOW

NEAR_ZERO = [0.0, 1e-4, 5e-5, 1e-7, 1e-30, CB_SERIES_BELOW, CB_SERIES_BELOW * (1 - 1e-7),
             CB_SERIES_BELOW * (1 + 1e-7)]  # the series' switch, both sides
LOGITS = np.unique(np.concatenate([np.linspace(-30, 30, 241), NEAR_ZERO, np.negative(NEAR_ZERO), [-16.5, 16.5]]))
VALUES = np.array([0.0, 1e-6, 0.1, 0.3, 0.5, 0.7, 0.999, 1.0])
TWINS = ["vae_torch", "vae_jax"]


def _grid(dtype):
    logits, x = np.meshgrid(LOGITS, VALUES, indexing="ij")
    return logits.astype(dtype), x.astype(dtype)


def _torch_log_prob(logits, x):
    """log p(x) from torch.distributions in float64."""
    distribution = torch.distributions.ContinuousBernoulli(logits=torch.tensor(logits, dtype=torch.float64))
    return distribution.log_prob(torch.tensor(x, dtype=torch.float64)).numpy()


@functools.cache
def _exact():
    """log p(x), its derivative in the logit and the mean, over the grid, from mpmath at 80 digits (enough
    for 1/l - 1/sinh(l) at l = 1e-30): x l - log(1 + e^l) + log(l / tanh(l/2)); x - sigmoid(l) + 1/l -
    1/sinh(l); 1/(1 - e^-l) - 1/l (1/2 at l = 0)."""
    mpmath.mp.dps = 80

    def at(logit, x):
        t, x = mpmath.mpf(float(logit)), mpmath.mpf(float(x))
        if t == 0:
            return 0.0, float(x - 0.5), 0.5
        return (float(x * t - mpmath.log1p(mpmath.exp(t)) + mpmath.log(t / mpmath.tanh(t / 2))),
                float(x - 1 / (1 + mpmath.exp(-t)) + 1 / t - 1 / mpmath.sinh(t)),
                float(1 / (1 - mpmath.exp(-t)) - 1 / t))

    value, grad, mean = np.vectorize(at)(*_grid(np.float64))
    return value, grad, mean[:, 0]


def _twin_log_prob(name, logits, x):
    """The twin's log p(x) (minus its per-pixel loss) and its derivative in the logit, in the arrays' dtype."""
    likelihoods = importlib.import_module(f"{name}.likelihoods")
    if name == "vae_torch":
        logits = torch.tensor(logits, requires_grad=True)
        log_p = -likelihoods.pixel_losses(logits, torch.tensor(x), "continuous_bernoulli")
        (grad,) = torch.autograd.grad(log_p.sum(), logits)
        return log_p.detach().numpy(), grad.numpy()
    with jax.enable_x64(logits.dtype == np.float64):
        def log_p(logits):
            return -likelihoods.pixel_losses(logits, jax.numpy.asarray(x), "continuous_bernoulli")
        value, pullback = jax.vjp(log_p, jax.numpy.asarray(logits))
        return np.asarray(value), np.asarray(pullback(jax.numpy.ones_like(value))[0])


def _twin_mean(name, logits):
    likelihoods = importlib.import_module(f"{name}.likelihoods")
    if name == "vae_torch":
        return likelihoods.mean_image(torch.tensor(logits), "continuous_bernoulli").numpy()
    with jax.enable_x64(logits.dtype == np.float64):
        return np.asarray(likelihoods.mean_image(jax.numpy.asarray(logits), "continuous_bernoulli"))


@pytest.mark.parametrize("twin", TWINS)
def test_continuous_bernoulli_is_exact_and_torch_distributions_in_float64(twin):
    """Within float64's rounding of the exact values (mpmath), and of torch.distributions' within its own
    error: it computes in probabilities, whose rounding costs eps * e^|l| (3.4e-5 nats at l = 30; its
    mean, 1e-6 off there, is not compared)."""
    logits, x = _grid(np.float64)
    value, grad = _twin_log_prob(twin, logits, x)
    exact_value, exact_grad, exact_mean = _exact()
    np.testing.assert_allclose(value, exact_value, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(grad, exact_grad, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(_twin_mean(twin, LOGITS), exact_mean, rtol=0, atol=1e-14)
    eps = np.finfo(np.float64).eps
    assert np.all(np.abs(value - _torch_log_prob(logits, x)) <= 1e-14 + eps * np.exp(np.abs(logits)))


@pytest.mark.parametrize("twin", TWINS)
def test_continuous_bernoulli_is_exact_in_float32(twin):
    """float32 within a few roundings of the exact values at every logit, where torch.distributions in
    float32 is 0.63 nats off at logit -30 and x = 0.3 (-6.231 against -5.599)."""
    logits, _ = _grid(np.float64)
    value, grad = _twin_log_prob(twin, *_grid(np.float32))
    exact_value, exact_grad, exact_mean = _exact()
    eps = np.finfo(np.float32).eps
    assert np.all(np.abs(value - exact_value) <= 4 * eps * (1 + np.abs(logits) + np.abs(exact_value)))
    assert np.all(np.abs(grad - exact_grad) <= 64 * eps * (1 + np.abs(exact_grad)))
    assert np.abs(_twin_mean(twin, LOGITS.astype(np.float32)) - exact_mean).max() <= 64 * eps
    at = (LOGITS == -30)[:, None] & (VALUES == 0.3)[None, :]
    torch32 = torch.distributions.ContinuousBernoulli(logits=torch.tensor(-30.0)).log_prob(torch.tensor(0.3))
    assert abs(float(torch32) - -6.231) < 1e-3 and abs(exact_value[at].item() - -5.599) < 1e-3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("twin", TWINS)
def test_continuous_bernoulli_is_finite_and_exact_at_huge_logits(twin, dtype):
    """A trained decoder drives its logits without bound where pixels are exactly 0 or 1 (the density
    there grows as log |l|): the resnet preset reached -1.5e7 in an epoch and a half, where the series'
    dropped branch overflowed float32 and made the gradient NaN. Beyond |l| = 1e4, e^-|l| is below any
    rounding, so log p = x l - max(l, 0) + log |l|, its derivative x - [l > 0] + 1/l, the mean [l > 0] - 1/l."""
    logits, x = np.meshgrid([-1e30, -1e8, -3e7, -1e4, 1e4, 3e7, 1e8, 1e30], VALUES, indexing="ij")
    value, grad = _twin_log_prob(twin, logits.astype(dtype), x.astype(dtype))
    assert value.dtype == grad.dtype == dtype
    positive = (logits > 0).astype(np.float64)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(value, x * logits - positive * logits + np.log(np.abs(logits)),
                               rtol=4 * eps, atol=4 * eps * np.abs(logits).max())
    np.testing.assert_allclose(grad, x - positive + 1 / logits, rtol=0, atol=4 * eps)
    mean = _twin_mean(twin, logits[:, 0].astype(dtype))
    np.testing.assert_allclose(mean, positive[:, 0] - 1 / logits[:, 0], rtol=0, atol=4 * eps)


@pytest.mark.parametrize("twin", TWINS)
def test_continuous_bernoulli_density_integrates_to_one_with_its_mean(twin):
    """Gauss-Legendre quadrature over [0, 1] of the twin's density (smooth: an exponential in x) gives 1,
    and of x times it the twin's mean, at logits from -30 to 30 and at 0."""
    nodes, weights = np.polynomial.legendre.leggauss(64)
    x, weights = (nodes + 1) / 2, weights / 2
    logits = np.array([-30.0, -3.0, -1e-5, 0.0, 1e-3, CB_SERIES_BELOW, 0.5, 7.0, 30.0])
    log_p, _ = _twin_log_prob(twin, *np.meshgrid(logits, x, indexing="ij"))
    density = np.exp(log_p)
    np.testing.assert_allclose(density @ weights, 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(density @ (weights * x), _twin_mean(twin, logits), rtol=0, atol=1e-12)


@pytest.mark.parametrize("twin", TWINS)
def test_an_unknown_likelihood_is_named(twin):
    likelihoods = importlib.import_module(f"{twin}.likelihoods")
    with pytest.raises(ValueError, match=r"likelihood must be one of \('bernoulli', .*\), got 'poisson'"):
        likelihoods.mean_image(np.zeros(2), "poisson")


def scipy_free_sigmoid(t):
    return np.exp(-np.logaddexp(0.0, -t))  # 1 / (1 + e^-t), without overflow


def _twin_log_mass(name, logits, x, levels):
    """The twin's discretized-logistic log-mass per pixel, canonical NCHW in and out (float64)."""
    likelihoods = importlib.import_module(f"{name}.likelihoods")
    if name == "vae_torch":
        return likelihoods.discretized_logistic_log_mass(torch.tensor(logits), torch.tensor(x), levels).numpy()
    with jax.enable_x64(True):
        nhwc = likelihoods.discretized_logistic_log_mass(jax.numpy.asarray(logits.transpose(0, 2, 3, 1)),
                                                         jax.numpy.asarray(x.transpose(0, 2, 3, 1)), levels)
        return np.asarray(nhwc).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretized_logistic_mass_sums_to_one_over_the_levels(twin, levels):
    """For random means and log-scales (means far outside [0, 1] too, log-scales from the clamp at -7 up
    to 3), every pixel's mass over all `levels` values sums to 1, and matches the CDF differences."""
    rng = np.random.default_rng(levels)
    channels = 2
    mean = rng.uniform(-1.5, 2.5, (1, channels, 3, 4))
    log_scale = rng.uniform(-9.0, 3.0, (1, channels, 3, 4))
    logits = np.repeat(np.concatenate([mean, log_scale], axis=1), levels, axis=0)  # one row per level
    values = np.arange(levels) / (levels - 1)
    x = np.broadcast_to(values[:, None, None, None], (levels, channels, 3, 4)).copy()
    log_mass = _twin_log_mass(twin, logits, x, levels)
    total = np.logaddexp.reduce(log_mass, axis=0)
    np.testing.assert_allclose(total, 0.0, rtol=0, atol=1e-12)
    s = np.exp(np.maximum(log_scale, -7.0))
    cdf = scipy_free_sigmoid((values[:, None, None, None] + 0.5 / (levels - 1) - mean) / s)
    cdf[-1] = 1.0
    mass = np.diff(np.concatenate([np.zeros_like(cdf[:1]), cdf]), axis=0)
    plain = mass > 1e-6  # where the plain difference of CDFs keeps its digits
    np.testing.assert_allclose(np.exp(log_mass)[plain], mass[plain], rtol=1e-9)
