"""The trainer against its own step: one epoch of `twinvae train` in each twin, on the same data, against as
many steps at the benchmark harness's step time:

    python -m benchmarks.trainer --dataset fashion-mnist --out benchmarks/results/cpu-trainer.md

Each twin runs in a fresh process (its own threads and a cold compilation cache, as the harness's workers):
first the harness's step (benchmarks.torch_backend / jax_backend, in the mode the trainer uses: torch eager
channels_last, jax.jit) on synthetic batches, best of --repeats, then `--epochs` epochs of the trainer
itself; the last epoch's time (log.jsonl's `seconds`, the batches without the end-of-epoch evaluation) is
set against steps x the step time. The rest comes from the run's `timings` (twinvae/timings.py)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twinvae import allocator
from twinvae.data import DATASET_SHAPES
from twinvae.presets import PRESETS
from twinvae.results import (
    machine_record,
    make_results_folder,
    markdown_table,
    publish_results,
    results_origin,
    versions,
)

MODES = {"torch": "eager-channels-last", "jax": "jit"}  # what `twinvae train` runs in each twin on a CPU
PARTS = ("input", "step", "readback", "evaluation", "saving", "pictures")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.trainer", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=list(MODES), action="append",
                   help="torch or jax, repeatable (default both)")
    p.add_argument("--dataset", choices=list(DATASET_SHAPES), default="fashion-mnist")
    p.add_argument("--data-dir")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="the last one is timed (default 2: the first compiles)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the harness's step (default 3)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--out", help="write the table here too (markdown)")
    p.add_argument("--one", choices=list(MODES), help=argparse.SUPPRESS)  # a twin's process (main starts it)
    return p


def harness_step_seconds(backend: str, config, batch_size: int, threads: int, repeats: int) -> float:
    """The harness's training step in the trainer's mode: seconds per step, best of `repeats` timed runs of
    about a second each, after its compile and a warm-up."""
    import vae_torch
    from benchmarks.backend import backend_class
    from benchmarks.points import Point

    weights = Path(tempfile.mkdtemp(prefix="twinvae-bench-trainer-")) / "model.safetensors"
    vae_torch.save_checkpoint(weights, vae_torch.init_model(config, seed=0), config)
    worker = backend_class(backend)(MODES[backend], device="cpu", threads=threads, tf32=False)
    worker.setup(Point(config, batch_size, "float32", "train"), str(weights))
    worker.run(3)
    start = time.perf_counter()
    worker.run(5)
    steps = max(1, round(5 / max(time.perf_counter() - start, 1e-6)))  # about a second a run
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        worker.run(steps)
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def measure_twin(args) -> dict:
    """This process's twin: the harness's step, then the trainer's epochs (`twinvae train`, in a process of
    its own: the trainer is the application, above the harness); what the table needs."""
    config = PRESETS["seed"].config(DATASET_SHAPES[args.dataset])
    step = harness_step_seconds(args.one, config, args.batch_size, args.threads, args.repeats)
    out = Path(tempfile.mkdtemp(prefix="twinvae-bench-trainer-")) / "run"
    command = [sys.executable, "-m", "twinvae", "train", "--backend", args.one, "--dataset", args.dataset,
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--out", str(out),
               "--no-progress", *(["--data-dir", args.data_dir] if args.data_dir else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    last = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()][-1]
    record = json.loads((out / "run.json").read_text())
    return {"backend": args.one, "mode": MODES[args.one], "step_s": step, "steps": last["step"] // args.epochs,
            "epoch_s": last["seconds"], "timings": record["timings"], "versions": versions()}


def _in_fresh_process(backend: str, argv: list[str]) -> dict:
    """measure_twin in a new process with a cold compilation cache of its own, as a user's first run."""
    env = {**os.environ, "TWINVAE_BENCH_CACHE": tempfile.mkdtemp(prefix="twinvae-bench-cache-")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-m", "benchmarks.trainer", *argv, "--one", backend],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"python -m benchmarks.trainer: the {backend} process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def table(results: list[dict]) -> str:
    """Each twin's harness step, steps x step, the trainer's epoch against it, and the run's breakdown."""
    header = ["backend (mode)", "harness step", "steps x step", "trainer's epoch", "overhead",
              *(f"{part} (s, all epochs)" for part in PARTS)]
    rows = []
    for r in results:
        steps_s = r["steps"] * r["step_s"]
        rows.append([f"{r['backend']} ({r['mode']})", f"{1e3 * r['step_s']:.2f} ms", f"{steps_s:.2f} s",
                     f"{r['epoch_s']:.2f} s", f"{100 * (r['epoch_s'] / steps_s - 1):+.1f}%",
                     *(f"{r['timings'][part]:.2f}" for part in PARTS)])
    return markdown_table(header, rows)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    if min(args.batch_size, args.epochs, args.repeats, args.threads) < 1:
        raise SystemExit("python -m benchmarks.trainer: error: --batch-size, --epochs, --repeats and --threads "
                         "must be at least 1")
    if args.one:
        allocator.keep_freed_memory()  # the harness's step as its workers and twinvae's commands run it
        print(json.dumps(measure_twin(args)))
        return 0
    make_results_folder(args.out)  # a bad path fails before the minutes of work
    results = [_in_fresh_process(backend, argv) for backend in args.backend or list(MODES)]
    command = "python -m benchmarks.trainer " + " ".join(argv)
    machine = machine_record({name: version for r in results for name, version in r["versions"].items()})
    text = (f"{results_origin(command, machine)}; seed model, {args.dataset}, batch {args.batch_size}, "
            f"epoch {args.epochs} of {args.epochs} timed, {args.threads} threads.\n\n{table(results)}\n")
    publish_results(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
