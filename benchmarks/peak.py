"""The roofline: the best sustained float32 matmul and the best sustained memory bandwidth any installed
library reaches on this device, measured in the same run as the VAE steps. One procedure each for numpy,
torch and jax (each passes its own kernel); every matmul is checked against float64, so a reduced-precision
kernel cannot count as float32, and every bandwidth result is checked element for element."""

from __future__ import annotations

import glob
import time

import numpy as np

from twinvae.compare import relative_error

# Largest relative error (max|c - c64| / max|c64| on sampled rows) accepted per precision: genuine
# float32 gives ~1e-6 at these sizes, TF32 ~1e-3, bf16 ~1e-2.
MAX_ERROR = {"float32": 1e-4, "tf32": 1e-2, "bf16": 5e-2}


def _repeat_best(call, sync, min_seconds: float) -> float:
    """Seconds per call of `call()`: the repetitions calibrated to last min_seconds / 3, best of 3 runs."""
    start, reps = time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds / 3 or reps < 2:
        sync(call())
        reps += 1
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            out = call()
        sync(out)
        best = min(best, (time.perf_counter() - start) / reps)
    return best


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
    best = _repeat_best(lambda: matmul(da, db), sync, min_seconds)
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


# --- memory bandwidth ------------------------------------------------------------------------------------

CACHE_MULTIPLE = 8  # each array at least this many times the last-level cache, so no pass hits in it
FALLBACK_CACHE_BYTES = 64 * 2**20
GPU_CACHE_BYTES = 128 * 2**20  # above any current GPU's L2 (H100, H200: 50 MiB)
# A worker holds about 6 arrays' worth at once (the inputs on the host and on the device, the output and
# its host copy): measured 22 GB of RSS in the JAX worker for 3.8 GB arrays, on a CPU reporting 480 MiB of
# L3. So an array is at most a twelfth of the memory available, leaving half of it to everything else.
HOST_MEMORY_SHARE = 12


def last_level_cache_bytes() -> int:
    """The CPU's largest cache (Linux sysfs: 32 MiB of L3 on these EPYC machines); 64 MiB if unknown."""
    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            with open(path) as f:
                text = f.read().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * scale)
        except (OSError, ValueError):
            continue
    return max(sizes) if sizes else FALLBACK_CACHE_BYTES


def available_memory_bytes() -> int | None:
    """The host memory available to a new process (Linux /proc/meminfo MemAvailable); None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def bandwidth_elements(device: str) -> int:
    """float32 elements per array of the bandwidth kernel: CACHE_MULTIPLE x the device's last cache, and
    on the CPU no more than the host memory allows (HOST_MEMORY_SHARE): a CPU with a very large last
    cache would otherwise have its workers killed for memory."""
    if device == "cuda":
        return CACHE_MULTIPLE * GPU_CACHE_BYTES // 4
    wanted = CACHE_MULTIPLE * last_level_cache_bytes()
    available = available_memory_bytes()
    return (wanted if available is None else min(wanted, available // HOST_MEMORY_SHARE)) // 4


def measure_bandwidth(library: str, n: int, add, to_device, to_numpy, sync, min_seconds: float = 0.3) -> dict:
    """GB/s of STREAM's add, c = a + b on n float32 elements: two arrays read and one written per call
    (3 x 4n bytes; write-allocate traffic, where the hardware has it, is not counted). Best of 3 timed
    runs; the result is checked element for element on a sample (a float32 sum is exactly rounded)."""
    rng = np.random.default_rng(n)
    a, b = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    da, db = to_device(a), to_device(b)
    c = add(da, db)
    sync(c)
    sample = rng.integers(0, n, 4096)
    valid = bool(np.array_equal(to_numpy(c)[sample], a[sample] + b[sample]))
    best = _repeat_best(lambda: add(da, db), sync, min_seconds)
    return {"library": library, "kernel": "add", "n": n, "array_mib": 4 * n / 2**20,
            "gb_per_s": 12 * n / best / 1e9, "valid": valid}


def numpy_bandwidth(n: int, min_seconds: float = 0.3) -> dict:
    out = np.empty(n, np.float32)  # written in place: no allocation inside the timed calls
    return measure_bandwidth("numpy", n, lambda a, b: np.add(a, b, out=out), np.asarray, np.asarray,
                             lambda c: None, min_seconds)


def best_bandwidth(results: list[dict]) -> dict | None:
    valid = [r for r in results if r["valid"]]
    return max(valid, key=lambda r: r["gb_per_s"]) if valid else None
