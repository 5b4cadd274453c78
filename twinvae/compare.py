"""The error measure the parity claim is stated in, shared by the parity harness, the demo and the
benchmarks' matmul check."""

from __future__ import annotations

import numpy as np


def relative_error(a, b, scale: float = 0.0) -> float:
    """max|a - b| / max|b| (max|a - b| where b is all zeros); infinite where the NaN/inf masks of a and b
    differ, so a non-finite value can never hide. `scale`, if larger than max|b|, divides instead: for a
    sum whose terms cancel, the size of its terms, which sets its rounding."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    scale = max(np.max(np.abs(b)) if b.size else 0.0, scale)
    diff = np.max(np.abs(a - b)) if a.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)
