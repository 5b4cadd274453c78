"""How fast the IWAE bound of `twinvae evaluate` runs, in latents decoded per second:

    python -m benchmarks.iwae --repeats 3 --out benchmarks/results/cpu-iwae.md

`twinvae.evaluation.iwae_nll` itself, on random binary images and the canonical initial weights of the
seed model (the speed does not depend on the weights), for each backend in its default forms and in the
native ones, with the decoder called LATENTS_PER_CALL latents at a time and with every draw of eps in one
call (SAMPLES_PER_CHUNK latents, as before 2026-12-06). Each figure is the best of --repeats runs after
one untimed run, so the JAX twin's compile is not in it. A K = 1000 evaluation of 10,000 images decodes 10
million latents: its time is 1e7 / (latents/s)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from unittest import mock

import numpy as np

from twinvae import evaluation
from twinvae.environment import results_origin
from twinvae.twin import load_twin
from vae_core.checkpoint import atomic_write_bytes
from vae_core.config import VAEConfig
from vae_core.layout import NATIVE_FORMS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.iwae", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=["torch", "jax"], action="append",
                   help="torch or jax, repeatable (default both)")
    p.add_argument("--images", type=int, default=40, help="test images (default 40)")
    p.add_argument("--k", type=int, default=1000, help="importance samples per image (default 1000)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="write the table here too (markdown)")
    return p


def latents_per_second(twin, model, images: np.ndarray, k: int, repeats: int) -> float:
    evaluation.iwae_nll(twin, model, images, k, seed=0, dtype="float32")  # warm-up (JAX: the compile)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        evaluation.iwae_nll(twin, model, images, k, seed=0, dtype="float32")
        best = min(best, time.perf_counter() - start)
    return len(images) * k / best


def rows(backend: str, images: np.ndarray, k: int, repeats: int) -> list[tuple[str, str, str, float]]:
    twin = load_twin(backend)
    config = VAEConfig()  # the seed model
    out = []
    for forms_name, forms in (("default", {}), ("native", NATIVE_FORMS)):
        model = twin.init_model(config, 0, **forms)
        forms_text = "+".join(v for v in model.forms.values() if v != "native") or "native"
        for per_call in (evaluation.LATENTS_PER_CALL, evaluation.SAMPLES_PER_CHUNK):
            with mock.patch.object(evaluation, "LATENTS_PER_CALL", per_call):
                speed = latents_per_second(twin, model, images, k, repeats)
            out.append((backend, f"{forms_name} ({forms_text})", f"{per_call:,}", speed))
    return out


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if min(args.images, args.k, args.repeats) < 1:
        raise SystemExit("python -m benchmarks.iwae: error: --images, --k and --repeats must be at least 1")
    if args.out:  # its folder made first, as the benchmark's --out: a bad path fails before the timing
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    images = (np.random.default_rng(0).random((args.images, *VAEConfig().image_shape)) > 0.5).astype(np.float32)
    table = ["| backend | forms | latents a decoder call | latents/s | K = 1000 on 10,000 images |",
             "|---|---|---|---|---|"]
    for backend, forms, per_call, speed in (r for b in args.backend or ["torch", "jax"]
                                            for r in rows(b, images, args.k, args.repeats)):
        table.append(f"| {backend} | {forms} | {per_call} | {speed:,.0f} | {1e7 / speed / 60:.1f} min |")
    command = "python -m benchmarks.iwae " + " ".join(sys.argv[1:] if argv is None else argv)
    text = (f"{results_origin(command)}; seed model, {args.images} images, K = {args.k}.\n\n"
            + "\n".join(table) + "\n")
    print(text)
    if args.out:
        atomic_write_bytes(args.out, text.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
