"""Exported artifacts as benchmark modes beside the twins' inference rows: the model's `vae` part, exported
by `twinvae export` from the point's weights for a fixed batch (static shapes, as the compiled twins see)
and run through twinvae.export.load in its own runtime: ONNX in onnxruntime (the torch worker's
"onnxruntime" mode), StableHLO through JAX (the JAX worker's "stablehlo" mode). eps is zero, so the
artifact computes the twins' reconstruction (z = mu) up to its mean image, which the gate applies and the
timed call leaves out (one elementwise op over the output, as the reparameterisation the artifact does in
its place). Inputs are numpy arrays on the host, as a deployment feeds them."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from benchmarks.points import Point, compile_seconds, synthetic_batches
from vae_core import export as export_spec

MODES = {"onnxruntime": "onnx", "stablehlo": "stablehlo"}  # benchmark mode -> export format


def unavailable(mode: str, point: Point) -> str | None:
    """Why the mode cannot run on the point (None: it can): artifacts infer, in their formats' dtypes,
    made and run by packages that must be installed."""
    format = MODES[mode]
    if point.kind != "infer":
        return "an exported artifact is inference only"
    try:
        export_spec.check_dtype(format, point.dtype)
        export_spec.require(format, "export")
        export_spec.require(format, "run")
    except (ValueError, ModuleNotFoundError) as err:
        return str(err)
    return None


def artifact_setup(mode: str, point: Point, weights_path: str, platform: str, threads: int, score):
    """(step, batches, setup): the point's `vae` part exported as the mode's artifact and loaded, and a
    worker's setup record. step(x, eps) runs it, unchecked (as the twins' rows run with
    check_inputs=False), and returns the logits; batches: the point's synthetic (images in the artifact's
    layout, zero eps), on the host; setup: the gate, score(logits) of the first call (the worker's sum of
    its twin's mean image), the seconds of the export and that call, and the artifact's forms."""
    from twinvae.export import export, load  # imports the twin that makes the format

    start = time.perf_counter()
    folder = os.environ.get("TWINVAE_BENCH_CACHE") or tempfile.mkdtemp()
    path = os.path.join(folder, f"vae{export_spec.SUFFIXES[MODES[mode]]}")
    info = export(weights_path, MODES[mode], "vae", path, batch=point.batch_size, dtype=point.dtype,
                  platform=platform)
    artifact = load(path, threads=threads)
    nhwc = info["layout"] == "NHWC"
    batches = [(x.transpose(0, 2, 3, 1).copy() if nhwc else x, np.zeros_like(eps))
               for x, eps in synthetic_batches(point)]

    def step(x, eps):
        return artifact.run(x, eps)[2]

    export_s = time.perf_counter() - start
    compile_s, gate = compile_seconds(lambda i: score(step(*batches[i])))
    return step, batches, {"gate": gate, "compile_s": export_s + compile_s, "forms": info["forms"]}
