"""`twinvae export` and `twinvae.export.load`: any checkpoint, whichever twin wrote it, as a deployable
artifact of one part (encoder, decoder, vae) in one format (ONNX, torch.export, StableHLO), with the
sidecar PATH.json that describes it (vae_core/export.py); load runs an artifact in its own runtime, its
inputs checked against that sidecar first.

    from twinvae.export import export, load
    export("runs/x/model.safetensors", "onnx", "decoder", "decoder.onnx")
    logits = load("decoder.onnx")(z)  # z: float32 (N, latent_dim)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twinvae import __version__
from twinvae.twin import load_twin
from vae_core import checks
from vae_core import export as spec
from vae_core.checkpoint import read_checkpoint
from vae_core.config import VAEConfig
from vae_core.forms import NATIVE_FORMS


def default_path(checkpoint: str | Path, format: str, part: str) -> Path:
    """Beside the checkpoint: model.safetensors -> model-decoder.onnx (.pt2, .stablehlo)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}-{part}{spec.SUFFIXES[spec.check_format(format)]}")


def export(checkpoint: str | Path, format: str, part: str, out: str | Path | None = None, *,
           batch: int | None = None, dtype: str = "float32", platform: str = "cpu") -> dict:
    """Export one part of the checkpoint's model as a `format` artifact at `out` (default_path if None),
    with its sidecar; returns the sidecar's fields. batch None: a dynamic batch dimension. dtype
    "bfloat16": mixed precision (float32 in and out). platform: where the artifact is to run; StableHLO is
    lowered for it (from any machine), in the forms the JAX twin uses there."""
    format, part = spec.check_format(format), spec.check_part(part)
    dtype, batch = spec.check_dtype(format, dtype), spec.check_batch(batch)
    platform = spec.check_platform(format, platform)
    out = Path(out) if out is not None else default_path(checkpoint, format, part)
    if out.exists() and out.resolve() == Path(checkpoint).resolve():
        raise ValueError(f"--out {out} is the checkpoint itself; name another file")
    _, _, metadata = read_checkpoint(checkpoint)  # a bad file fails here, before a framework is imported
    spec.require(format, "export")
    twin = load_twin(spec.FORMATS[format])
    # the forms the twin computes in where the artifact runs; an ONNX file is one for every runtime and
    # device: the native forms (ConvTranspose, not the col2im output layer's Col2Im, which not every
    # execution provider has)
    forms = dict(NATIVE_FORMS) if format == "onnx" else twin.default_forms(platform)
    # float32 parameters whatever the checkpoint holds: artifacts take and give float32 (DTYPES)
    model, config, _ = twin.load_checkpoint(checkpoint, dtype="float32",
                                            compute_dtype=None if dtype == "float32" else dtype, **forms)
    inputs, outputs = twin.part_signature(model, part, batch)
    source = {"checkpoint": Path(checkpoint).name, "checkpoint_sha256": spec.file_sha256(checkpoint),
              "written_by": metadata.get("backend"), "forms": model.forms}
    info = spec.describe(config, format, part, twin.LAYOUT, inputs, outputs, batch=batch, dtype=dtype,
                         platform=platform, version=__version__, extra=source)
    info.update(twin.export_part(model, part, format, out, batch=batch, platform=platform, metadata=info))
    spec.write_sidecar(out, info)
    return spec.read_sidecar(out)


@dataclass(frozen=True)
class Artifact:
    """An exported part, ready to run: call it with its inputs (numpy, in its layout: positional in the
    order of `inputs`, or by name); it returns its outputs in the order of `outputs` (the one array of a
    decoder). `info` is the sidecar."""

    path: Path
    info: dict
    config: VAEConfig
    inputs: tuple[spec.TensorSpec, ...]
    outputs: tuple[spec.TensorSpec, ...]
    run: Callable

    def __call__(self, *arrays, **named):
        fed = spec.check_inputs(self.inputs, self._arrange(arrays, named), self.config, self.info["layout"])
        results = self.run(*fed)
        return results[0] if len(results) == 1 else results

    def _arrange(self, arrays, named) -> list[np.ndarray]:
        names = [s.name for s in self.inputs]
        unknown = sorted(set(named) - set(names))
        if unknown:
            raise ValueError(f"this artifact has no input {unknown[0]!r}; its inputs are {', '.join(names)}")
        given = dict(zip(names, arrays)) | named
        missing = [name for name in names if name not in given]
        if len(arrays) > len(names) or missing:
            hint = " (the model is class-conditional)" if "labels" in missing else ""
            raise ValueError(f"this artifact takes {', '.join(names)}; got {len(arrays)} positional and "
                             f"{', '.join(named) or 'no'} named inputs{hint}")
        return [np.asarray(given[name]) for name in names]


def load(path: str | Path, *, sha256: str | None = None, threads: int | None = None) -> Artifact:
    """The artifact at path, with its sidecar PATH.json checked (present, this artifact's, well formed),
    loaded in its runtime: onnxruntime for ONNX (neither twin's framework needed), torch.export.load (once
    its archive's pickles pass the torch twin's allowlist), or jax.export.deserialize; then the sidecar is
    checked against the signature the artifact itself declares. Any failure is an ExportError naming the
    file. sha256: the SHA-256 of the artifact you trust, from elsewhere than its sidecar; it must match.
    threads: onnxruntime's intra-op threads (None: its default, one per core); the other runtimes take
    theirs from the process (torch.set_num_threads, XLA's flags)."""
    path = Path(path)
    if threads is not None:
        checks.check_count("threads", threads)
    info = spec.read_sidecar(path, sha256)
    format = info["artifact_format"]
    spec.require(format, "run")
    loaded = _load_in_runtime(path, format, threads)
    spec.check_signature(path, info, loaded)
    return Artifact(path, info, *spec.sidecar_specs(info), loaded.run)


def _load_in_runtime(path: Path, format: str, threads: int | None) -> spec.Loaded:
    """The artifact loaded by its runtime, whose errors on a file that is not what its sidecar says
    (struct.error, BadZipFile, InvalidProtobuf, RuntimeError, ...) become one ExportError naming it."""
    try:
        if format == "onnx":
            return _onnx_runner(path, threads)
        return load_twin(spec.FORMATS[format]).load_part(path, format)
    except spec.ExportError:
        raise
    except Exception as err:  # whatever a runtime raises on a damaged or mislabelled file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "no message"
        raise spec.ExportError(f"{path} does not load as {format} ({type(err).__name__}: {reason}): it is "
                               f"damaged, or not the {format} file its sidecar says") from None


def _onnx_runner(path: Path, threads: int | None) -> spec.Loaded:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = [i.name for i in inputs]
    return spec.Loaded(lambda *arrays: tuple(session.run(None, dict(zip(names, arrays)))),
                       tuple(map(_onnx_tensor, inputs)), tuple(map(_onnx_tensor, outputs)))


def _onnx_tensor(arg) -> spec.TensorSpec:
    """A graph input or output as onnxruntime reads it: 'tensor(float)' -> float32, a dynamic size by its
    dim_param ("?" where it has none)."""
    element = arg.type.removeprefix("tensor(").removesuffix(")")
    return spec.TensorSpec(arg.name, tuple("?" if d is None else d for d in arg.shape),
                           {"float": "float32", "double": "float64"}.get(element, element))
