"""The error measure the parity claim is stated in, shared by the parity harness, the demo and the
benchmarks' matmul check."""

from __future__ import annotations

import numpy as np


def relative_error(a, b) -> float:
    """max|a - b| / max|b| (max|a - b| where b is all zeros); infinite where the NaN/inf masks of a and b
    differ, so a non-finite value can never hide."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    scale = np.max(np.abs(b)) if b.size else 0.0
    diff = np.max(np.abs(a - b)) if a.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)
