"""The error measures of the parity comparisons, on canonical numpy arrays. Framework-free.

Error measure, per tensor: max|a - b| / max|b|, b the float64 torch reference (max|a - b| where b is all
zeros): twinvae.compare.relative_error. A quantity's error is the largest over its tensors (and over steps,
for training). A loss is a sum, and its rounding follows the size of its terms, not of the sum: the
continuous Bernoulli's terms take both signs (its density exceeds 1) and nearly cancel on the harness'
random images, so a loss's error is relative to the reference's sum of its terms' magnitudes (its loss
scale), which is |b| itself for the other likelihoods.
"""

from __future__ import annotations

import numpy as np

from twinvae.compare import relative_error


def norm_error(a, b) -> float:
    """||a - b|| / ||b||, for bf16 gradients (see BF16_FIXED); NaN/inf anywhere is infinite."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("inf")
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else float(np.linalg.norm(a))


def first_step_error(params: dict, ref_params: dict, ref_grads: dict, grad_tolerance: float) -> tuple[float, str]:
    """adam.step1: the parameters after the first Adam step, which moves each one by lr * g / (|g| + eps),
    about lr * sign(g). Where the reference gradient lies within the gradient tolerance of 0 (|g| <=
    grad_tolerance * max|g| of its tensor), a twin's gradient may round to the other sign, and that parameter
    then moves by up to 2 lr the other way: such elements are left out, so the rest hold the optimizer's
    maths to step1's tolerance. The measure is relative_error's (max over the kept elements / max|b|)."""
    errors = {}
    for key, b in ref_params.items():
        a, b = np.asarray(params[key], np.float64), np.asarray(b, np.float64)
        g = np.abs(np.asarray(ref_grads[key], np.float64))
        unsure = ~(np.isfinite(a) & np.isfinite(b))  # NaN and inf are always compared, never left out
        kept = (g > grad_tolerance * g.max()) | unsure if g.size else unsure
        errors[key] = relative_error(np.where(kept, a, b), b)  # a left-out element counts as exact
    key = max(errors, key=lambda k: errors[k] if not np.isnan(errors[k]) else np.inf)
    return errors[key], key


def worst(a: dict, b: dict, error=relative_error) -> tuple[float, str]:
    """The largest error over tensors, and where; NaN counts as the largest (it must never hide)."""
    errors = {key: error(a[key], b[key]) for key in b}
    key = max(errors, key=lambda k: errors[k] if not np.isnan(errors[k]) else np.inf)
    return errors[key], key
