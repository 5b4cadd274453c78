"""What the reconstruction loss is a negative log-likelihood of, so that evaluation reports real nats.

Bernoulli: the summed BCE is exactly -log p(x | z). Gaussian: the seed's loss is the summed squared error
of sigmoid(logits); with a fixed variance of 1/2 per pixel, -log N(x; mu, 1/2) = (x - mu)^2 + log(pi) / 2,
so -log p(x | z) = squared error + D * log(pi) / 2, D pixels per image.

Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019), lambda = sigmoid(l): the density on [0, 1]
C(lambda) lambda^x (1 - lambda)^(1 - x), so -log p(x | z) = BCE(l, x) - log C per pixel. In the logit,
C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) = l / tanh(l / 2), and the mean is 1 / (1 - e^-l) - 1 / l. Both
cancel near l = 0 (lambda = 1/2), so both twins switch to their Taylor series below |l| = CB_SERIES_BELOW,
where the series' first omitted term is under float64's rounding (2e-16 at the switch), and above it take
log C = log(|l| / -expm1(-|l|)) + log1p(exp(-|l|)), one rounding of a ratio, no cancellation. The series'
coefficients, from sympy: log(l / tanh(l/2)) - log 2 and 1 / (1 - exp(-l)) - 1/l - 1/2.

Discretized logistic (Salimans et al. 2017, without the mixture): the data take `levels` values k/(L-1);
the decoder's 2C channels are a mean mu (the first C, raw) and a log-scale (the next C, at least
DL_MIN_LOG_SCALE, as PixelCNN++) per pixel; a bin's mass is the logistic CDF across it,
sigmoid(a) - sigmoid(b) with a, b = (x - mu +- 1/(2(L-1))) / s, and the edge bins run to -inf and +inf.
log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log sigmoid(-b) + log(1 - e^-(a-b)), exactly, so no bin
needs PixelCNN++'s density-at-the-midpoint fallback; a - b = 1 / ((L-1) s) is the bin's width over s.
"""

import math

GAUSSIAN_VARIANCE = 0.5

DL_MIN_LOG_SCALE = -7.0

CB_SERIES_BELOW = 0.1
# log C = log 2 + u * polynomial(CB_LOG_NORMALISER_SERIES, u), mean = 1/2 + l * polynomial(CB_MEAN_SERIES, u),
# u = l^2
CB_LOG_NORMALISER_SERIES = (1 / 12, -7 / 1440, 31 / 90720, -127 / 4838400)
CB_MEAN_SERIES = (1 / 12, -1 / 720, 1 / 30240, -1 / 1209600)


def gaussian_normaliser(pixels: int) -> float:
    """The constant D/2 * log(2 pi variance) that turns the summed squared error into nats."""
    return 0.5 * pixels * math.log(2 * math.pi * GAUSSIAN_VARIANCE)


def nats_offset(likelihood: str, pixels: int) -> float:
    """What -log p(x | z) adds to the reconstruction loss of an image of `pixels` values: the Gaussian's
    normaliser, 0 for the others (their loss is exactly -log p(x | z))."""
    return gaussian_normaliser(pixels) if likelihood == "gaussian" else 0.0


def polynomial(coefficients: tuple[float, ...], u):
    """sum_k coefficients[k] * u^k by Horner's rule; u a float or either twin's array."""
    total = coefficients[-1]
    for c in coefficients[-2::-1]:
        total = total * u + c
    return total
