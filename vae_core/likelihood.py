"""What the reconstruction loss is a negative log-likelihood of, so that evaluation reports real nats.

Bernoulli: the summed BCE is exactly -log p(x | z). Gaussian: the seed's loss is the summed squared error
of sigmoid(logits); with a fixed variance of 1/2 per pixel, -log N(x; mu, 1/2) = (x - mu)^2 + log(pi) / 2,
so -log p(x | z) = squared error + D * log(pi) / 2, D pixels per image.
"""

import math

GAUSSIAN_VARIANCE = 0.5


def gaussian_normaliser(pixels: int) -> float:
    """The constant D/2 * log(2 pi variance) that turns the summed squared error into nats."""
    return 0.5 * pixels * math.log(2 * math.pi * GAUSSIAN_VARIANCE)
