"""The coordinator: one fresh worker process per (backend, mode) and benchmark point, compiled one after
another, gated on the twins agreeing, then timed in alternating turns. It never imports torch or jax."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np

from benchmarks import peak
from benchmarks.points import GATE_RTOL, MODES, Point
from vae_core.checkpoint import write_checkpoint
from vae_core.layout import init_weights

BASELINE_MODES = {"torch": "eager", "jax": "jit"}


class WorkerError(RuntimeError):
    pass


class WorkerProcess:
    """`python -m benchmarks.worker BACKEND MODE` with its own fresh compilation caches."""

    def __init__(self, backend: str, mode: str, env: dict, cache_root: str):
        self.backend, self.mode = backend, mode
        cache = tempfile.mkdtemp(prefix=f"{backend}-{mode}-", dir=cache_root)
        env = cache_env(env, cache)
        self.log = open(os.path.join(cache, "stderr.log"), "w+")  # noqa: SIM115 (lives as long as the worker)
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker", backend, mode], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.ready = None

    def wait_ready(self) -> dict:
        if self.ready is None:
            self.ready = self._read()
        return self.ready

    def ask(self, msg: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(self._died()) from None
        return self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(self._died())
        return json.loads(line)

    def _died(self) -> str:
        self.proc.wait(timeout=30)
        self.log.seek(0)
        tail = self.log.read()[-2000:]
        return f"{self.backend} {self.mode} worker exited with code {self.proc.returncode}:\n{tail}"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


@dataclass
class Options:
    backends: list[str]
    modes: list[str]
    points: list[Point]
    device: str = "cpu"
    threads: int = os.cpu_count() or 1
    tf32: bool = False
    repeats: int = 20
    repeat_seconds: float = 0.3
    peak_sizes: list[int] = field(default_factory=lambda: [1024, 2048, 4096])
    peak_seconds: float = 0.3
    bandwidth_mib: float | None = None  # per array; None: peak.bandwidth_elements (smaller ones measure a cache)
    seed: int = 0


def worker_env(options: Options) -> dict:
    threads = str(options.threads)
    return {**os.environ, "TWINVAE_BENCH_DEVICE": options.device, "TWINVAE_BENCH_THREADS": threads,
            "TWINVAE_BENCH_TF32": "1" if options.tf32 else "0", "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}


def cache_env(env: dict, cache: str) -> dict:
    """env with every compilation cache (JAX, Inductor, Triton) in the folder `cache`."""
    return {**env, "TWINVAE_BENCH_CACHE": cache, "TORCHINDUCTOR_CACHE_DIR": os.path.join(cache, "inductor"),
            "TRITON_CACHE_DIR": os.path.join(cache, "triton")}


def precisions(options: Options) -> list[str]:
    """The matmul peaks to measure: every precision on a GPU; on other devices float32, and bf16 when a
    point runs in bf16 (CPUs with AMX or AVX-512 BF16 run it far faster than float32)."""
    if options.device == "cuda":
        return ["float32", "tf32", "bf16"]
    return ["float32"] + (["bf16"] if any(p.dtype == "bfloat16" for p in options.points) else [])


def run(options: Options, progress) -> dict:
    """Everything measured, as the dict that becomes results.json."""
    env = worker_env(options)
    cache_root = tempfile.mkdtemp(prefix="twinvae-bench-")
    try:
        results = {"peak": [], "bandwidth": [], "info": {}, "points": []}
        weights = {}
        for point in options.points:  # canonical weights, one file per config, as the twins' loaders take
            if point.config not in weights:
                weights[point.config] = os.path.join(cache_root, f"weights-{len(weights)}.safetensors")
                write_checkpoint(weights[point.config], init_weights(point.config, options.seed), point.config)
        progress.stage("matmul peak and memory bandwidth")
        results["peak"] += peak.numpy_peak(options.peak_sizes, options.peak_seconds)
        elements = (max(1, int(options.bandwidth_mib * 2**20) // 4) if options.bandwidth_mib is not None
                    else peak.bandwidth_elements(options.device))
        if options.device == "cpu":
            results["bandwidth"].append(peak.numpy_bandwidth(elements, options.peak_seconds))
        for backend in options.backends:
            mode = BASELINE_MODES[backend]
            worker = WorkerProcess(backend, mode, env, cache_root)
            try:
                ready = worker.wait_ready()
                if "unavailable" in ready:
                    results["info"][backend] = {"unavailable": ready["unavailable"]}
                    continue
                results["info"][backend] = worker.ask({"cmd": "info"})
                reply = worker.ask({"cmd": "peak", "sizes": options.peak_sizes, "precisions": precisions(options)})
                results["peak"] += reply.get("peak", [])
                reply = worker.ask({"cmd": "bandwidth", "n": elements, "seconds": options.peak_seconds})
                results["bandwidth"] += [reply["bandwidth"]] if "bandwidth" in reply else []
            finally:
                worker.close()
        for point in options.points:
            results["points"].append(run_point(point, options, env, cache_root, weights[point.config], progress))
            timed = sum(r["status"] == "ok" for r in results["points"][-1]["results"])
            progress.write(f"{point.label}: {timed} of {len(results['points'][-1]['results'])} modes timed")
        return results
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)


def run_point(point: Point, options: Options, env: dict, cache_root: str, weights_path: str, progress) -> dict:
    entries = {}
    workers = {}
    for backend in options.backends:
        for mode in options.modes:
            if mode in MODES[backend]:
                workers[(backend, mode)] = WorkerProcess(backend, mode, env, cache_root)
    try:
        for key, worker in workers.items():  # compile one at a time, so compile times are not shared cores
            progress.stage(f"{point.label}: compile {key[0]} {key[1]}")
            entries[key] = _setup(worker, point, weights_path, options)
            progress.advance()
        gate(entries, point)
        live = [key for key, entry in entries.items() if entry["status"] == "ok"]
        for round_ in range(options.repeats):
            order = live if round_ % 2 == 0 else live[::-1]  # alternate, so drift hits every backend
            progress.stage(f"{point.label}: timing round {round_ + 1}/{options.repeats}")
            for key in order:
                if entries[key]["status"] != "ok":
                    continue
                reply = _ask(workers[key], {"cmd": "measure", "repeats": 1})
                if "error" in reply:
                    entries[key].update(status="error", reason=reply["error"])
                    continue
                entry = entries[key]
                entry["times"] += reply["times"]
                entry["steps_per_repeat"] = reply["steps_per_repeat"]
            progress.advance()
    finally:
        for worker in workers.values():
            worker.close()
    return {"point": point.to_dict(), "label": point.label,
            "results": [{"backend": b, "mode": m, **entry} for (b, m), entry in entries.items()]}


def _ask(worker: WorkerProcess, msg: dict) -> dict:
    try:
        return worker.ask(msg)
    except WorkerError as err:
        return {"error": str(err)}


def _setup(worker: WorkerProcess, point: Point, weights_path: str, options: Options) -> dict:
    entry = {"status": "ok", "times": [], "rss_delta": None, "device_peak": None}
    try:
        ready = worker.wait_ready()
    except WorkerError as err:
        return {**entry, "status": "error", "reason": str(err)}
    if "unavailable" in ready:
        return {**entry, "status": "unavailable", "reason": ready["unavailable"]}
    reply = _ask(worker, {"cmd": "setup", "point": point.to_dict(), "weights": weights_path,
                          "repeat_seconds": options.repeat_seconds})
    if "unavailable" in reply:
        return {**entry, "status": "unavailable", "reason": reply["unavailable"]}
    if "error" in reply:
        return {**entry, "status": "error", "reason": reply["error"]}
    return {**entry, **reply}


def gate(entries: dict, point: Point) -> None:
    """Both twins, from the same canonical weights, must give the same first-step loss (train) or the
    same reconstructions (infer): every mode against its backend's baseline, the baselines against each
    other. A mode that fails is refused: it is listed with the reason and never timed."""
    rtol = GATE_RTOL[point.dtype]

    def close(a, b):
        return abs(a - b) <= rtol * max(abs(b), 1e-30)

    baselines = {}
    for backend, mode in BASELINE_MODES.items():
        entry = entries.get((backend, mode))
        if entry and entry["status"] == "ok":
            baselines[backend] = entry["gate"]
    if len(baselines) == 2 and not close(baselines["jax"], baselines["torch"]):
        reason = f"gate: the twins disagree (torch {baselines['torch']!r}, jax {baselines['jax']!r})"
        for entry in entries.values():
            if entry["status"] == "ok":
                entry.update(status="refused", reason=reason)
        return
    for (backend, _), entry in entries.items():
        if entry["status"] != "ok":
            continue
        reference = baselines.get(backend, next(iter(baselines.values()), None))
        if reference is None:
            entry.update(status="refused", reason="gate: no baseline mode ran to check this one against")
        elif not close(entry["gate"], reference):
            entry.update(status="refused", reason=f"gate: {entry['gate']!r} differs from the baseline "
                                                  f"{reference!r} by more than {rtol:g} (relative)")


def summarise(entry: dict, point: Point, flops_per_image: float, peak_gflops: float | None) -> dict:
    """Median and IQR of images/s over the repeats, and the rates derived from the median."""
    times = np.asarray(entry["times"])
    images = entry["steps_per_repeat"] * point.batch_size / times
    q25, median, q75 = np.percentile(images, [25, 50, 75])
    gflops = median * flops_per_image / 1e9
    return {"images_per_s": float(median), "iqr": float(q75 - q25), "gflops": float(gflops),
            "fraction_of_peak": float(gflops / peak_gflops) if peak_gflops else None, "repeats": len(times)}
