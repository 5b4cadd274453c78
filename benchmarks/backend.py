"""What a benchmark worker asks of its backend: the interface that benchmarks/torch_backend.py's TorchBackend
and benchmarks/jax_backend.py's JaxBackend both provide (bench_test.py checks their methods and
signatures against it), and the one place that picks the class by name. The worker (benchmarks/worker.py),
the profiler and the trainer benchmark type against it; none imports a framework itself."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # for the annotations only: this module loads nothing of the harness or the frameworks
    from benchmarks.points import Point

CLASSES = {"torch": ("benchmarks.torch_backend", "TorchBackend"), "jax": ("benchmarks.jax_backend", "JaxBackend")}


class Backend(Protocol):
    """One (backend, mode) of the benchmark in this process: built for a device, asked for its roofline, set
    up on one point (compiled, gated), then run for as many steps as a repeat takes."""

    def __init__(self, mode: str, device: str, threads: int, tf32: bool) -> None:
        """Run `mode` (one of benchmarks.points.MODES for this backend) on `device` ("cpu", "cuda" or "tpu")
        with `threads` intra-op threads and TF32 allowed or not: settings of the whole process, made here."""

    def info(self) -> dict:
        """The framework's versions and settings (device, threads, matmul precision), for results.json."""

    def unavailable(self, point: Point) -> str | None:
        """Why this mode cannot run `point` on this device (it lists as unavailable), or None."""

    def matmul_peak(self, sizes: list[int], precisions: list[str]) -> list[dict]:
        """The roofline's matmuls (benchmarks.peak.measure): each precision this device has, each n x n size."""

    def bandwidth(self, n: int, min_seconds: float) -> dict:
        """STREAM's add on n float32 elements on the device (benchmarks.peak.measure_bandwidth)."""

    def setup(self, point: Point, weights_path: str) -> dict:
        """The model from the canonical weights file, its step for `point` compiled and called on the first
        batches: {"gate": the first loss or the reconstructions' sum, "compile_s", "forms", and what else the
        mode reports (FLOP counts, compiler options)}."""

    def run(self, steps: int) -> None:
        """`steps` steps over the synthetic batches in turn, closed by a device sync (what a repeat times)."""

    def freeze(self) -> None:
        """The warm-up is over: from here on a recompilation is an error."""

    def check_no_recompile(self) -> None:
        """Raise if the step compiled again since freeze()."""

    def reset_peak_memory(self) -> None:
        """Start the device's record of its peak memory afresh."""

    def peak_memory(self) -> int | None:
        """The device's peak memory in bytes since reset_peak_memory(); None where there is none (the CPU)."""


def backend_class(name: str) -> type[Backend]:
    """The class of backend "torch" or "jax", imported when asked for (it imports its framework)."""
    module, cls = CLASSES[name]
    return getattr(importlib.import_module(module), cls)
