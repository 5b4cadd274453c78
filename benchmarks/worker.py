"""A long-lived benchmark worker for one (backend, mode): `python -m benchmarks.worker BACKEND MODE`.

It reads one JSON command per line on stdin and answers one JSON line on stdout; anything else the
frameworks print goes to stderr. The coordinator sets its environment (threads, fresh compilation caches)
before it starts, so its compilations are cold."""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback

from benchmarks.backend import Backend, backend_class
from twinvae import allocator


def rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def reset_peak_rss() -> bool:
    """Reset the kernel's record of this process's peak RSS (Linux: /proc/self/clear_refs); False if it
    cannot. The peak is read back from /proc/self/status, so no sampling thread competes with the step
    for the cores (a thread sampling every 5 ms slowed the torch step by 14-21% on 2 cores)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


class Worker:
    """The coordinator's commands, answered by one backend in one mode."""

    def __init__(self, backend_name: str, mode: str):
        from benchmarks.points import Point

        self.Point = Point
        self.backend: Backend = backend_class(backend_name)(
            mode, device=os.environ["TWINVAE_BENCH_DEVICE"], threads=int(os.environ["TWINVAE_BENCH_THREADS"]),
            tf32=os.environ.get("TWINVAE_BENCH_TF32") == "1")
        self.steps_per_repeat = 1

    def handle(self, msg: dict) -> dict:
        cmd = msg["cmd"]
        if cmd == "info":
            return {**self.backend.info(), "allocator": allocator.setting()}
        if cmd == "peak":
            return {"peak": self.backend.matmul_peak(msg["sizes"], msg["precisions"])}
        if cmd == "bandwidth":
            return {"bandwidth": self.backend.bandwidth(msg["n"], msg["seconds"])}
        if cmd == "setup":
            return self.setup(self.Point.from_dict(msg["point"]), msg["weights"], msg["repeat_seconds"])
        if cmd == "measure":
            return self.measure(msg["repeats"])
        raise ValueError(f"unknown command {cmd!r}")

    def setup(self, point, weights_path: str, repeat_seconds: float) -> dict:
        reason = self.backend.unavailable(point)
        if reason:
            return {"unavailable": reason}
        self.rss_before = rss_bytes()
        result = self.backend.setup(point, weights_path)  # compile, gate value, FLOP counts
        self.backend.run(1)  # warm-up beyond the compiling call
        # three steady steps size the timed repeats and give the memory peaks (never measured while timing)
        self.backend.reset_peak_memory()
        tracks_peak = reset_peak_rss()
        start = time.perf_counter()
        self.backend.run(3)
        per_step = (time.perf_counter() - start) / 3
        host_peak = peak_rss_bytes() if tracks_peak else None
        self.steps_per_repeat = max(1, math.ceil(repeat_seconds / max(per_step, 1e-6)))
        self.backend.freeze()  # from here on a recompilation is an error
        result["steps_per_repeat"] = self.steps_per_repeat
        result["device_peak"] = self.backend.peak_memory()
        result["rss_delta"] = None if host_peak is None or self.rss_before is None else host_peak - self.rss_before
        return result

    def measure(self, repeats: int) -> dict:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.backend.run(self.steps_per_repeat)  # ends with a device sync
            times.append(time.perf_counter() - start)
        self.backend.check_no_recompile()
        return {"times": times, "steps_per_repeat": self.steps_per_repeat}


def main() -> int:
    allocator.keep_freed_memory()  # as twinvae's commands run: before the framework starts its threads
    backend_name, mode = sys.argv[1], sys.argv[2]
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints from the frameworks go to stderr, never into the protocol
    try:
        worker = Worker(backend_name, mode)
        ready = {"ready": True}
    except Exception as err:  # e.g. the framework is not installed: the coordinator reports the reason
        worker, ready = None, {"unavailable": f"{type(err).__name__}: {err}"}
    print(json.dumps(ready), file=protocol, flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit" or worker is None:
            break
        try:
            reply = worker.handle(msg)
        except Exception as err:
            traceback.print_exc()
            reply = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(reply), file=protocol, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
