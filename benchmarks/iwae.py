"""How fast the IWAE bound of `twinvae evaluate` runs, in latents decoded per second:

    taskset -c 0 python -m benchmarks.iwae --repeats 3 --out benchmarks/results/cpu-iwae.md

`twinvae.evaluation.iwae_nll` itself, on random binary images and the canonical initial weights of the
seed model (the speed does not depend on the weights), for each backend in its default forms and in the
native ones, each in a fresh process with the allocator as twinvae's commands set it (freed memory kept,
twinvae.allocator) and as the system leaves it. Each figure is the best of --repeats runs after one
untimed run, so the JAX twin's compile is not in it; beside it, the share of that run's CPU time spent in
the kernel (page faults, mostly) and the count of those minor page faults. A K = 1000 evaluation of
10,000 images decodes 10 million latents: its time is 1e7 / (latents/s)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from twinvae import allocator, evaluation
from twinvae.results import (
    machine_record,
    make_results_folder,
    markdown_table,
    publish_results,
    results_origin,
    versions,
)
from twinvae.twin import load_twin
from vae_core.config import VAEConfig
from vae_core.forms import NATIVE_FORMS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.iwae", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["torch", "jax"], action="append",
                   help="torch or jax, repeatable (default both)")
    p.add_argument("--images", type=int, default=40, help="test images (default 40)")
    p.add_argument("--k", type=int, default=1000, help="importance samples per image (default 1000)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="write the table here too (markdown)")
    p.add_argument("--one", choices=["torch", "jax"], help=argparse.SUPPRESS)  # a backend's process
    return p


def latents_per_second(twin, model, images: np.ndarray, k: int, repeats: int) -> tuple[float, float, float]:
    """(latents/s, the kernel's share of the CPU time, minor page faults per 1,000 latents) of the best of
    `repeats` timed runs. The faults are a count, not a time: how many fresh pages the run mapped, which the
    allocator decides and other processes on the cores do not."""
    evaluation.iwae_nll(twin, model, images, k, seed=0, dtype="float32")  # warm-up (JAX: the compile)
    best = (float("inf"), 0.0, 0.0)
    for _ in range(repeats):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        evaluation.iwae_nll(twin, model, images, k, seed=0, dtype="float32")
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        system, user = after.ru_stime - before.ru_stime, after.ru_utime - before.ru_utime
        faults = (after.ru_minflt - before.ru_minflt) * 1000 / (len(images) * k)
        best = min(best, (seconds, system / max(system + user, 1e-9), faults))
    return len(images) * k / best[0], best[1], best[2]


def rows(backend: str, images: np.ndarray, k: int, repeats: int) -> list[dict]:
    """This process's rows: the backend in each of its forms, under this process's allocator."""
    twin = load_twin(backend)
    out = []
    for forms_name, forms in (("default", {}), ("native", NATIVE_FORMS)):
        model = twin.init_model(VAEConfig(), 0, **forms)  # the seed model
        forms_text = "+".join(v for v in model.forms.values() if v != "native") or "native"
        speed, system, faults = latents_per_second(twin, model, images, k, repeats)
        out.append({"backend": backend, "forms": f"{forms_name} ({forms_text})", "allocator": allocator.setting(),
                    "latents_per_s": speed, "system": system, "faults": faults, "versions": versions()})
    return out


def _in_fresh_process(backend: str, kept: bool, argv: list[str]) -> list[dict]:
    env = {**os.environ, allocator.SWITCH: "1" if kept else "0"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.iwae", *argv, "--one", backend],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"python -m benchmarks.iwae: the {backend} process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if min(args.images, args.k, args.repeats) < 1:
        raise SystemExit("python -m benchmarks.iwae: error: --images, --k and --repeats must be at least 1")
    make_results_folder(args.out)  # a bad path fails before the minutes of work
    images = (np.random.default_rng(0).random((args.images, *VAEConfig().image_shape)) > 0.5).astype(np.float32)
    argv = sys.argv[1:] if argv is None else list(argv)
    if args.one:
        allocator.keep_freed_memory()  # before the framework starts its threads (off by the environment's switch)
        print(json.dumps(rows(args.one, images, args.k, args.repeats)))
        return 0
    measured = [r for b in args.backend or ["torch", "jax"] for kept in (True, False)
                for r in _in_fresh_process(b, kept, argv)]
    table = markdown_table(
        ["backend", "forms", "allocator", "latents/s", "kernel's share of CPU time",
         "page faults per 1,000 latents", "K = 1000 on 10,000 images"],
        [[row["backend"], row["forms"], row["allocator"], f"{row['latents_per_s']:,.0f}",
          f"{100 * row['system']:.0f}%", f"{row['faults']:,.1f}", f"{1e7 / row['latents_per_s'] / 60:.1f} min"]
         for row in measured])
    command = "python -m benchmarks.iwae " + " ".join(argv)
    machine = machine_record({name: version for row in measured for name, version in row["versions"].items()})
    text = f"{results_origin(command, machine)}; seed model, {args.images} images, K = {args.k}.\n\n{table}\n"
    publish_results(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
