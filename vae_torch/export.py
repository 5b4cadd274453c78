"""This twin's parts (vae_core.export.PARTS) as deployable artifacts: ONNX, made by torch.onnx's dynamo
exporter (onnxscript), run in onnxruntime; a torch.export program (.pt2), run by torch.export.load. Mirrors
vae_jax/export.py name for name."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import warnings

import torch
from torch import nn

from vae_core import export as spec
from vae_core.checkpoint import atomic_write_bytes
from vae_torch.model import LAYOUT, VAE

FORMATS = ("onnx", "torch.export")
LABEL_DTYPE = "int64"  # as_labels' dtype
ONNX_OPSET = 20  # recorded in the sidecar; onnxruntime 1.17 and newer run it
EXAMPLE_BATCH = 2  # traced with 2 images: torch.export specialises a batch of 1 to a constant


class _Part(nn.Module):
    """One part of a model as a module of positional tensors (vae_core.export.signature's order) that
    returns a tuple: what the exporters trace. Unchecked (the artifact's loader checks its inputs)."""

    def __init__(self, model: VAE, part: str):
        super().__init__()
        self.model, self.part = model, spec.check_part(part)

    def forward(self, *inputs):
        labels = inputs[-1] if self.model.config.num_classes else None
        if self.part == "encoder":
            return self.model._encode(inputs[0], labels)
        if self.part == "decoder":
            return (self.model._decode(inputs[0], labels),)
        out = self.model._forward(inputs[0], inputs[1], labels)
        return out.mu, out.logvar, out.logits


def part_function(model: VAE, part: str) -> _Part:
    """The part as a module in inference mode: inputs in signature order, a tuple of outputs."""
    return _Part(model, part).eval()


def part_signature(model: VAE, part: str, batch: int | None = None):
    """The part's (inputs, outputs) in this twin's layout (vae_core.export.TensorSpec); batch None: dynamic."""
    return spec.signature(model.config, part, LAYOUT, batch, LABEL_DTYPE)


def export_part(model: VAE, part: str, format: str, path, *, batch: int | None = None,
                platform: str | None = None, metadata: dict | None = None) -> dict:
    """Write the part as a `format` artifact at path (atomically: a failed export leaves any file there as
    it was); batch None gives a dynamic batch dimension. platform (default: the model's device): where it
    is to run. An ONNX file is the same for every device (onnxruntime's execution provider picks); a
    torch.export program holds its device, so it is traced on a copy of the model moved there, which this
    machine must have. metadata: a JSON-able dict an ONNX file keeps in its metadata_props under "twinvae".
    Returns what the sidecar records of the format (ONNX: the opset)."""
    if format not in FORMATS:
        raise ValueError(f"the torch twin exports {', '.join(FORMATS)}, not {format!r}")
    spec.check_dtype(format, model.compute_dtype or "float32")
    platform = spec.check_platform(format, platform or model.fc_mu.weight.device.type)
    if format == "torch.export" and platform != model.fc_mu.weight.device.type:
        if platform == "cuda" and not torch.cuda.is_available():
            raise ValueError("a torch.export program for cuda is traced on a CUDA device; this machine has none")
        model = copy.deepcopy(model).to(platform)
    batch = spec.check_batch(batch)
    inputs, outputs = part_signature(model, part, batch)
    module = part_function(model, part)
    args = tuple(_example(model, s, batch or EXAMPLE_BATCH) for s in inputs)
    # the vararg `inputs` of _Part.forward: one dynamic shape each
    dynamic = None if batch else {"inputs": tuple({0: torch.export.Dim(spec.BATCH, min=1)} for _ in inputs)}
    with _quiet(), torch.no_grad():
        if format == "onnx":
            program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=dynamic, verbose=False,
                                        input_names=[s.name for s in inputs], opset_version=ONNX_OPSET,
                                        output_names=[s.name for s in outputs], report=False)
            if metadata is not None:  # the sidecar's fields, with what this returns
                program.model.metadata_props["twinvae"] = json.dumps({**metadata, "opset": ONNX_OPSET},
                                                                     sort_keys=True)
            atomic_write_bytes(path, program.model_proto.SerializeToString())
            return {"opset": ONNX_OPSET}
        buffer = io.BytesIO()
        torch.export.save(torch.export.export(module, args, dynamic_shapes=dynamic), buffer)
        atomic_write_bytes(path, buffer.getvalue())
        return {}


def load_part(path, format: str):
    """A runner of the torch.export artifact at path (torch.export.load): numpy inputs in signature order ->
    a tuple of numpy outputs. Unchecked (twinvae.export.load checks against the sidecar). An ONNX file
    runs in onnxruntime, which needs neither twin (twinvae.export)."""
    if format != "torch.export":
        raise ValueError(f"the torch twin loads torch.export programs, not {format!r}")
    with open(path, "rb") as f, _quiet():  # a buffer: torch.export.load wants a file named .pt2
        program = torch.export.load(io.BytesIO(f.read())).module()
    device = next((t.device for t in [*program.parameters(), *program.buffers()]), torch.device("cpu"))

    @torch.no_grad()
    def run(*arrays):
        return tuple(o.cpu().numpy() for o in program(*(torch.as_tensor(a, device=device) for a in arrays)))

    return run


def _example(model: VAE, s: spec.TensorSpec, batch: int) -> torch.Tensor:
    shape = (batch, *s.shape[1:])
    device = model.fc_mu.weight.device
    if s.name == "labels":
        return torch.zeros(shape, dtype=torch.int64, device=device)
    return torch.full(shape, 0.5, dtype=torch.float32, device=device)


@contextlib.contextmanager
def _quiet():
    """The exporters' progress lines and warnings (torchvision absent, the archive's weight grouping) are
    not the user's concern; errors still raise."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    with warnings.catch_warnings(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        warnings.simplefilter("ignore")
        logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(level)
