"""This twin's parts (vae_core.export.PARTS) as deployable artifacts: StableHLO, made by jax.export
(serialised, reloadable with jax.export.deserialize), lowered for one platform. Mirrors
vae_torch/export.py name for name."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vae_core import export as spec
from vae_core.checkpoint import atomic_write_bytes
from vae_jax.forms import compiler_options
from vae_jax.model import LAYOUT, VAE

FORMATS = ("stablehlo",)
LABEL_DTYPE = "int32"  # as_labels' dtype


def part_function(model: VAE, part: str):
    """The part as a pure function of arrays in signature order -> a tuple of outputs; the parameters are
    closed over, so an export embeds them as constants. Unchecked (the artifact's loader checks)."""
    spec.check_part(part)
    conditional = bool(model.config.num_classes)

    def run(*inputs):
        labels = inputs[-1] if conditional else None
        if part == "encoder":
            return model.encode(inputs[0], labels=labels, check_inputs=False)
        if part == "decoder":
            return (model.decode(inputs[0], labels=labels, check_inputs=False),)
        out = model(inputs[0], inputs[1], labels=labels, check_inputs=False)
        return out.mu, out.logvar, out.logits

    return run


def part_signature(model: VAE, part: str, batch: int | None = None):
    """The part's (inputs, outputs) in this twin's layout (vae_core.export.TensorSpec); batch None: dynamic."""
    return spec.signature(model.config, part, LAYOUT, batch, LABEL_DTYPE)


def export_part(model: VAE, part: str, format: str, path, *, batch: int | None = None,
                platform: str | None = None, metadata: dict | None = None) -> dict:
    """Write the part as a `format` artifact at path (atomically), lowered for `platform` (default: the
    CPU), which need not be this machine's: build the model in that platform's forms
    (default_forms(platform)) for the program it runs fastest. batch None gives a dynamic batch
    dimension. metadata: unused by StableHLO, which has no field for it (the sidecar holds it). Returns
    what the sidecar records of the format."""
    if format not in FORMATS:
        raise ValueError(f"the JAX twin exports {', '.join(FORMATS)}, not {format!r}")
    spec.check_dtype(format, model.compute_dtype or "float32")
    platform = spec.check_platform(format, platform or "cpu")
    batch = spec.check_batch(batch)
    inputs, _ = part_signature(model, part, batch)
    n = jax.export.symbolic_shape(spec.BATCH)[0] if batch is None else batch
    avals = [jax.ShapeDtypeStruct((n, *s.shape[1:]), jnp.dtype(s.dtype)) for s in inputs]
    exported = jax.export.export(jax.jit(part_function(model, part)), platforms=[platform])(*avals)
    atomic_write_bytes(path, exported.serialize())
    return {"calling_convention_version": exported.calling_convention_version}


def load_part(path, format: str) -> spec.Loaded:
    """The artifact at path, deserialised (jax.export.deserialize): its runner, jitted with this twin's
    compiler options (numpy inputs in signature order -> a tuple of numpy outputs, unchecked:
    twinvae.export.load checks against the sidecar), its signature and its platforms. Refused on a
    platform the artifact was not lowered for."""
    if format not in FORMATS:
        raise ValueError(f"the JAX twin loads {', '.join(FORMATS)}, not {format!r}")
    with open(path, "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    here = jax.default_backend()
    name = {"gpu": "cuda"}.get(here, here)  # jax.export's name of the platform
    if name not in exported.platforms:
        raise spec.ExportError(f"{path} was lowered for {', '.join(exported.platforms)}; this JAX runs on "
                               f"{name}: export it with --platform {name}")
    call = jax.jit(exported.call, compiler_options=compiler_options(here))
    return spec.Loaded(lambda *arrays: tuple(np.asarray(o) for o in call(*arrays)), *_signature(exported),
                       tuple(exported.platforms))


def _signature(exported: jax.export.Exported) -> tuple[tuple[spec.TensorSpec, ...], tuple[spec.TensorSpec, ...]]:
    """An exported function's inputs and outputs as it declares them (in_avals, out_avals): unnamed, a
    symbolic size by its expression."""
    def declared(avals):
        return tuple(spec.TensorSpec(None, tuple(d if isinstance(d, int) else str(d) for d in a.shape),
                                     str(a.dtype)) for a in avals)

    return declared(exported.in_avals), declared(exported.out_avals)
