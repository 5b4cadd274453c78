"""Datasets as float32 NCHW arrays in [0, 1]. For now the embedded default: scikit-learn's 8x8 digits."""

from __future__ import annotations

import numpy as np

from vae_core import seeds

DIGITS_TEST_FRACTION = 0.2


def load_digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, test_x, test_y): 1797 images (1, 8, 8), values 0-16 scaled to [0, 1], split by
    a fixed permutation drawn from vae_core's 'data' stream (seed 0 is the canonical split)."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ImportError("the digits dataset ships with scikit-learn: pip install 'twinvae[data]' "
                          "(or scikit-learn)") from None
    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    order = seeds.rng(seed, "data", step=0).permutation(len(images))
    n_test = int(round(len(images) * DIGITS_TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]
