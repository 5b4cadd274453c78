"""Where one step's time goes, op by op, for one backend and mode of the benchmark:

    python -m benchmarks.profile --backend jax --mode jit --batch-size 128
    python -m benchmarks.profile --backend torch --mode eager-channels-last --batch-size 512

The step is the benchmark worker's own (same setup, weights and synthetic batches), warmed up, timed, then
run again under the framework's profiler. torch: torch.profiler's self time per operator and input shapes
(CPU, or CUDA kernels on a GPU). JAX: the XLA profiler's time per HLO instruction (a fusion, a dot, a
convolution), each with its output shape and the JAX operation it came from (`jvp` is forward,
`transpose(jvp)` backward). XLA's CPU runtime runs independent instructions on several threads at once,
so their times can add up to more than the step's wall time."""

from __future__ import annotations

import argparse
import collections
import glob
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.backend import backend_class
from benchmarks.hlo import instruction_sources
from benchmarks.points import KINDS, MODES, Point, add_conv_arguments
from twinvae.results import markdown_table, results_origin
from vae_core.checkpoint import write_checkpoint
from vae_core.checks import PRECISIONS
from vae_core.config import VAEConfig
from vae_core.flops import inference_flops, train_step_flops
from vae_core.layout import init_weights

DEFAULT_MODES = {"torch": "eager-channels-last", "jax": "jit"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=sorted(MODES), required=True)
    p.add_argument("--mode", help="a benchmark mode of the backend (default: torch eager-channels-last, jax jit)")
    p.add_argument("--kind", choices=KINDS, default="train")
    p.add_argument("--batch-size", type=int, default=128)
    add_conv_arguments(p)
    p.add_argument("--dtype", choices=sorted(PRECISIONS), default="float32")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--tf32", action="store_true", help="allow TF32 (GPU), as the benchmark's --tf32")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--steps", type=int, default=20, help="steps timed, then profiled (default 20)")
    p.add_argument("--top", type=int, default=25, help="rows shown (default 25)")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    mode = args.mode or DEFAULT_MODES[args.backend]
    if mode not in MODES[args.backend]:
        raise SystemExit(f"python -m benchmarks.profile: error: {args.backend} has no mode {mode!r}; modes: "
                         f"{', '.join(MODES[args.backend])}")
    if min(args.batch_size, args.steps, args.top, args.threads) < 1:
        raise SystemExit("python -m benchmarks.profile: error: --batch-size, --steps, --top and --threads must "
                         "be >= 1")
    if "TWINVAE_BENCH_CACHE" not in os.environ:  # run as a benchmark worker runs: its threads, fresh caches
        return _in_worker_env(argv, args)
    config = VAEConfig(conv_channels=tuple(args.channels), res_blocks=args.res_blocks)
    point = Point(config, args.batch_size, args.dtype, args.kind)
    backend = backend_class(args.backend)(mode, args.device, args.threads, tf32=args.tf32)
    refused = backend.unavailable(point)
    if refused:
        raise SystemExit(f"python -m benchmarks.profile: {args.backend} {mode}: {refused}")
    with tempfile.TemporaryDirectory(prefix="twinvae-profile-") as tmp:
        weights = os.path.join(tmp, "weights.safetensors")
        write_checkpoint(weights, init_weights(point.config, 0), point.config)
        backend.setup(point, weights)
    backend.freeze()
    backend.run(max(3, args.steps // 4))  # warm
    start = time.perf_counter()
    backend.run(args.steps)
    step_ms = (time.perf_counter() - start) / args.steps * 1e3
    rows = (_torch_rows if args.backend == "torch" else _jax_rows)(backend, args.steps, args.device)
    flops = (train_step_flops if args.kind == "train" else inference_flops)(point.config) * args.batch_size
    precision = args.dtype + (" (TF32 allowed)" if args.tf32 else "")
    print(f"{args.backend} {mode}, {args.kind} step, batch {args.batch_size}, {precision}, {args.device}, "
          f"{args.threads} threads: {step_ms:.2f} ms per step, {args.batch_size / step_ms * 1e3:,.0f} images/s, "
          f"{flops / step_ms / 1e6:.1f} GFLOP/s (analytic)")
    print(results_origin(f"python -m benchmarks.profile {' '.join(argv)}") + "\n")
    print(table(rows, args.top, step_ms))
    return 0


def _in_worker_env(argv: list[str], args) -> int:
    from benchmarks.coordinator import Options, cache_env, worker_env

    options = Options(backends=[args.backend], modes=[], points=[], device=args.device, threads=args.threads,
                      tf32=args.tf32)
    with tempfile.TemporaryDirectory(prefix="twinvae-profile-") as cache:
        env = cache_env(worker_env(options), cache)
        return subprocess.run([sys.executable, "-m", "benchmarks.profile", *argv], env=env).returncode


def table(rows: list[tuple[float, str, str, str]], top: int, step_ms: float) -> str:
    """rows: (ms per step, op, shape, where from), any order; the `top` largest as a markdown table."""
    total = sum(r[0] for r in rows)
    return (f"Op times add up to {total:.2f} ms per step ({total / step_ms:.0%} of the wall time).\n\n"
            + markdown_table(["ms per step", "share", "op", "shape", "from"],
                             [[f"{ms:.3f}", f"{ms / total:.1%}", op, shape, source]
                              for ms, op, shape, source in sorted(rows, reverse=True)[:top]]))


def _torch_rows(backend, steps: int, device: str) -> list[tuple[float, str, str, str]]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        backend.run(steps)
    rows = []
    for event in prof.key_averages(group_by_input_shape=True):
        us = event.self_device_time_total if device == "cuda" else event.self_cpu_time_total
        if us > 0:
            shapes = ", ".join(str(s) for s in event.input_shapes if s)
            rows.append((us / steps / 1e3, event.key, shapes, ""))
    return rows


def _jax_rows(backend, steps: int, device: str) -> list[tuple[float, str, str, str]]:
    import jax

    compiled = getattr(backend, "fn", None)
    # the jax.jit modes compile ahead of time: their HLO names each instruction's shape and source
    instructions = instruction_sources(compiled.as_text()) if hasattr(compiled, "as_text") else {}
    with tempfile.TemporaryDirectory(prefix="twinvae-trace-") as tmp:
        jax.profiler.start_trace(tmp)
        backend.run(steps)
        jax.profiler.stop_trace()
        traces = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
        if not traces:
            raise RuntimeError(f"the JAX profiler wrote no trace under {tmp}")
        data = jax.profiler.ProfileData.from_file(traces[0])
    totals = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in instructions or (not instructions and line.name.startswith("tf_XLA")
                                                  and "::" not in event.name):
                    totals[event.name] += event.duration_ns
    return [(ns / steps / 1e6, name, *instructions.get(name, ("", ""))) for name, ns in totals.items()]


if __name__ == "__main__":
    sys.exit(main())
