"""The roofline: the best sustained float32 matmul any installed library reaches on this device, measured
in the same run as the VAE steps. One procedure for numpy, torch and jax (each passes its own matmul),
and every result is checked against float64 so a reduced-precision kernel cannot count as float32."""

from __future__ import annotations

import time

import numpy as np

from twinvae.compare import relative_error

# Largest relative error (max|c - c64| / max|c64| on sampled rows) accepted per precision: genuine
# float32 gives ~1e-6 at these sizes, TF32 ~1e-3, bf16 ~1e-2.
MAX_ERROR = {"float32": 1e-4, "tf32": 1e-2, "bf16": 5e-2}


def operands(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + n)
    return rng.standard_normal((n, n)).astype(np.float32), rng.standard_normal((n, n)).astype(np.float32)


def measure(library: str, precision: str, n: int, matmul, to_device, to_numpy, sync,
            min_seconds: float = 0.3) -> dict:
    """GFLOP/s of `matmul(a, b)` on n x n operands, best of 3 timed runs of at least min_seconds each."""
    a, b = operands(n)
    da, db = to_device(a), to_device(b)
    c = matmul(da, db)
    sync(c)
    rows = slice(0, 16)
    reference = a[rows].astype(np.float64) @ b.astype(np.float64)
    error = relative_error(to_numpy(c)[rows], reference)
    start, reps = time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds / 3 or reps < 2:  # calibrate the repetitions
        sync(matmul(da, db))
        reps += 1
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            c = matmul(da, db)
        sync(c)
        best = min(best, (time.perf_counter() - start) / reps)
    valid = error <= MAX_ERROR[precision]
    return {"library": library, "precision": precision, "n": n, "gflops": 2 * n**3 / best / 1e9,
            "relative_error": error, "valid": valid}


def numpy_peak(sizes, min_seconds: float = 0.3) -> list[dict]:
    return [measure("numpy", "float32", n, np.matmul, np.asarray, np.asarray, lambda c: None, min_seconds)
            for n in sizes]


def best_peak(results: list[dict], precision: str) -> dict | None:
    """The best valid measurement of one precision, over libraries and sizes."""
    valid = [r for r in results if r["valid"] and r["precision"] == precision]
    return max(valid, key=lambda r: r["gflops"]) if valid else None
