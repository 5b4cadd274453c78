"""The comparisons: both twins from the same canonical weights, fed the same batches and the same eps
(from vae_core's stream), compared quantity by quantity in the canonical (NCHW, torch-named) layout with
the float64 torch twin, the reference: the forward pass, the losses, the gradients, sampling and decoding,
checkpoints each way, an Adam trajectory, and the exported artifacts (docs/parity.md)."""

from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np

from twinvae import export as artifacts
from twinvae.compare import relative_error
from twinvae.parity.cases import Case, case_data, twin_forms
from twinvae.parity.compiles import counted
from twinvae.parity.measures import first_step_error, norm_error, worst
from twinvae.parity.report import Row
from twinvae.parity.tolerances import PARAM_DTYPE, tolerance
from twinvae.parity.twins import ComparedTwin, compared_twin, comparing
from twinvae.twin import load_twin
from vae_core import export as export_spec
from vae_core import seeds
from vae_core.forms import NATIVE_FORMS
from vae_core.layout import init_weights

BACKENDS = ("torch", "jax")  # in the order their rows come


def compare(case: Case, dtype: str, device: str = "cpu", weights_fn=init_weights, steps=None,
            forms: str = "all") -> list[Row]:
    """Every quantity of one case in one dtype. float64: JAX vs the torch reference; float32: each twin vs
    the float64 torch reference. `weights_fn` is swappable so a test can feed deliberately bad weights.
    forms: which forms of each twin (FORM_SETS: "default", "each" or "all"). What it compiles is added to
    compiles.COMPILED."""
    with counted(), comparing(dtype, device):
        return _compare(case, dtype, device, weights_fn, steps, forms)


def _compare(case, dtype, device, weights_fn, steps, forms) -> list[Row]:
    config = case.config
    steps = case.steps if steps is None else steps
    weights = {k: v.astype(PARAM_DTYPE[dtype]) for k, v in weights_fn(config, seed=case.seed).items()}
    # the reference is torch's native ConvTranspose2d; every other way of computing it is compared with it
    reference = compared_twin("torch", config, weights, "float64")
    twins = [compared_twin(backend, config, weights, dtype, twin_form) for backend in BACKENDS
             for twin_form in twin_forms(load_twin(backend), config, device, forms)
             if not (backend == "torch" and twin_form == NATIVE_FORMS and dtype == "float64")]
    # Inputs rounded to the run's dtype first, so the reference sees exactly the same numbers.
    batches, labels, eps = case_data(dataclasses.replace(case, steps=steps), case.seed)  # eps of every step
    batches = [b.astype(PARAM_DTYPE[dtype]) for b in batches]
    eps = [e.astype(PARAM_DTYPE[dtype]) for e in eps]
    rows = []

    def add(twin, quantity, error, where=""):
        rows.append(Row(case.name, quantity, dtype, twin.name, error, where, config))

    z = seeds.standard_normal(1, "sample", 0, (5, config.latent_dim)).astype(PARAM_DTYPE[dtype])
    z_labels = np.arange(5) % config.num_classes if config.num_classes else None

    def generated(twin: ComparedTwin) -> tuple:
        return twin.generated(n=5, seed=3, z=z, x=batches[1], z_labels=z_labels, x_labels=labels[1])

    ref_out, ref_losses, ref_grads = reference.outputs(batches[0], eps[0], labels[0])
    ref_scales = reference.loss_scales(batches[0], eps[0], labels[0])
    ref_generated = generated(reference)
    for twin in twins:
        out, losses, grads = twin.outputs(batches[0], eps[0], labels[0])
        for name in ref_out:  # mu, logvar, z, logits, and a VampPrior's prior.mu, prior.logvar
            add(twin, name, relative_error(out[name], ref_out[name]))
        for name in ("total", "reconstruction", "kl"):
            add(twin, f"loss.{name}", relative_error(losses[name], ref_losses[name], ref_scales[name]))
        add(twin, "grad", *worst(grads, ref_grads, norm_error if dtype == "bfloat16" else relative_error))
        for name, image, ref in zip(("sample", "decode", "reconstruct"), generated(twin), ref_generated):
            add(twin, name, relative_error(image, ref))
    if dtype != "bfloat16":  # a mixed-precision model stores float32 weights: float32's rows cover it
        rows += _compare_checkpoints(case, dtype, weights)
    if steps:
        rows += _compare_adam(case, dtype, twins, reference, batches, labels, eps, steps, ref_grads)
    return rows


def _compare_checkpoints(case, dtype, weights) -> list[Row]:
    """A checkpoint written by each twin, read by the other: the weights must come back bitwise."""
    twins = {backend: load_twin(backend, float64=dtype == "float64") for backend in BACKENDS}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.safetensors")
        model = twins["torch"].import_weights(twins["torch"].init_model(case.config, dtype=dtype), weights)
        for writer, reader in (("torch", "jax"), ("jax", "torch")):
            twins[writer].save_checkpoint(path, model, case.config, {"writer": writer})
            model, _, _ = twins[reader].load_checkpoint(path)
            rows.append(Row(case.name, "checkpoint", dtype, f"{writer}->{reader}",
                            *worst(twins[reader].export_weights(model), weights)))
    return rows


def _compare_adam(case, dtype, twins, reference, batches, labels, eps, steps, ref_grads) -> list[Row]:
    """Adam from the same weights on the same batches and eps; losses and all parameters every step."""
    loss_err = {twin.name: (0.0, "") for twin in twins}
    param_err, step1_err = dict(loss_err), dict(loss_err)
    for step in range(steps):
        x, y = batches[step % len(batches)], labels[step % len(batches)]
        scale = reference.loss_scales(x, eps[step], y)["total"]  # at the parameters the step's loss sees
        ref_loss, ref_params = reference.train_step(x, eps[step], y)
        for twin in twins:
            loss, params = twin.train_step(x, eps[step], y)
            e = relative_error(loss, ref_loss, scale)
            if not e <= loss_err[twin.name][0]:
                loss_err[twin.name] = (e, f"step {step + 1}")
            if step == 0:
                step1_err[twin.name] = first_step_error(params, ref_params, ref_grads,
                                                        tolerance(dtype, "grad", case.config))
            e, key = worst(params, ref_params)
            if not e <= param_err[twin.name][0]:
                param_err[twin.name] = (e, f"step {step + 1}, {key}")
    rows = []
    for twin in twins:
        for quantity, errors in (("adam.loss", loss_err), ("adam.step1", step1_err), ("adam.params", param_err)):
            rows.append(Row(case.name, quantity, dtype, twin.name, *errors[twin.name], case.config))
    return rows


def compare_exports(case: Case, dtype: str, device: str = "cpu", formats=tuple(export_spec.FORMATS),
                    parts=tuple(export_spec.PARTS), weights_fn=init_weights) -> list[Row]:
    """Each part exported in each format (from a checkpoint of the case's weights, as `twinvae export`
    does), run in its own runtime through twinvae.export.load, against the float64 torch reference on the
    harness' batch and eps: the artifact's outputs at the forward tolerance of its dtype, the same the
    twins are held to. Artifacts are lowered for `device`; ONNX is skipped in bf16 (float32 only)."""
    config = case.config
    weights = {k: v.astype("float32") for k, v in weights_fn(config, seed=0).items()}
    batches, labels, eps = case_data(dataclasses.replace(case, steps=1))
    x, y, e = batches[0].astype("float32"), labels[0], eps[0].astype("float32")
    e = e if e.ndim == 2 else e[0]  # an artifact's forward takes one sample per image: the IWAE bound's first
    z = seeds.standard_normal(1, "sample", 0, (case.batch_size, config.latent_dim)).astype("float32")
    with comparing(dtype, device):
        expected = _reference_parts(compared_twin("torch", config, weights, "float64"), x, e, z, y)
    formats = [f for f in formats if dtype == "float32" or f not in export_spec.FLOAT32_ONLY]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = os.path.join(folder, "model.safetensors")
        torch_twin = load_twin("torch")
        model = torch_twin.import_weights(torch_twin.init_model(config), weights)
        torch_twin.save_checkpoint(checkpoint, model, config, {"backend": "torch"})
        for format in formats:
            for part in parts:
                path = os.path.join(folder, f"{part}{export_spec.SUFFIXES[format]}")
                artifacts.export(checkpoint, format, part, path, dtype=dtype, platform=device)
                artifact = artifacts.load(path)
                nhwc = artifact.info["layout"] == "NHWC"
                given = {"images": x.transpose(0, 2, 3, 1) if nhwc else x, "eps": e, "z": z, "labels": y}
                outputs = artifact(**{s.name: given[s.name] for s in artifact.inputs})  # checked, as a user's
                outputs = outputs if isinstance(outputs, tuple) else (outputs,)
                for spec, value in zip(artifact.outputs, outputs):
                    value = value.transpose(0, 3, 1, 2) if nhwc and value.ndim == 4 else value
                    rows.append(Row(case.name, f"export.{spec.name}", dtype, f"{format} {part}",
                                    relative_error(value, expected[part][spec.name]), "", config))
    return rows


def _reference_parts(reference: ComparedTwin, x, eps, z, y) -> dict:
    """What each part computes, by the float64 torch twin: {part: {output: canonical array}}."""
    out = reference.forward(x, eps, y)
    mu, logvar = out["mu"], out["logvar"]
    return {"encoder": {"mu": mu, "logvar": logvar}, "decoder": {"logits": reference.decode(z, y)},
            "vae": {"mu": mu, "logvar": logvar, "logits": out["logits"]}}
