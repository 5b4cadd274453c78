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
import re
import warnings
import zipfile

import torch
from torch import nn

from vae_core import export as spec
from vae_core.checkpoint import atomic_write_bytes
from vae_torch.model import LAYOUT, VAE

FORMATS = ("onnx", "torch.export")
LABEL_DTYPE = "int64"  # as_labels' dtype
ONNX_OPSET = 20  # recorded in the sidecar; onnxruntime 1.17 and newer run it
EXAMPLE_BATCH = 2  # traced with 2 images: torch.export specialises a batch of 1 to a constant
# What this twin's torch.export programs hold (torch.export.save of every part, dtype and batch, of
# unconditional and class-conditional models, on the CPU: twinvae/export_test.py), by kind: the records of
# the .pt2 and of the torch.save archive of its sample inputs, and the globals that archive's pickle imports.
# torch.export.load unpickles the sample inputs, and any payload a config marks use_pickle, falling back to
# a full pickle load (weights_only=False) where the safe one fails; load_part refuses anything else first.
_PT2_RECORDS = {"data": r"archive_format|archive_version|byteorder|\.data/(version|serialization_id)"
                        r"|data/weights/weight_\d+|data/constants/tensor_\d+",
                "program": r"models/model\.json",
                "payload config": r"data/(weights/model_weights|constants/model_constants)_config\.json",
                "torch.save": r"data/sample_inputs/model\.pt"}
_RAW_PAYLOAD = r"(weight|tensor)_\d+"  # a payload config's path_name of a weight or constant read as raw bytes
_SAVE_RECORDS = {"data": r"byteorder|version|\.format_version|\.storage_alignment"
                         r"|\.data/(version|serialization_id)|data/\d+",
                 "pickle": r"data\.pkl"}
# The program's strings that torch.export.load evaluates as code: each symbolic size (sympy.sympify of its
# expr_str) and each guard (compiled into the module's input check); this twin's hold only these forms.
_SIZE_TERM = r"Symbol\('s\d+', positive=True, integer=True\)|Integer\(-?\d+\)"
_SIZE_SYNTAX = r"(Mul\(|Add\(|, |\))*"
_INPUT_SIZE = r"L\['inputs'\]\[\d+\]\.size\(\)\[\d+\]"
_GUARD = rf"{_INPUT_SIZE} (==|!=|<=|>=|<|>) ({_INPUT_SIZE}|-?\d+)"
PICKLE_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"), ("torch", "FloatStorage"), ("torch", "LongStorage"),
                   ("collections", "OrderedDict")}


class _Part(nn.Module):
    """One part of a model as a module of positional tensors (vae_core.export.signature's order) that
    returns a tuple: what the exporters trace. Unchecked (the artifact's loader checks its inputs)."""

    def __init__(self, model: VAE, part: str):
        super().__init__()
        self.model, self.part = model, spec.check_part(part)

    def forward(self, *inputs):
        labels = inputs[-1] if self.model.config.num_classes else None
        if self.part == "encoder":
            return self.model.encode(inputs[0], labels=labels, check_inputs=False)
        if self.part == "decoder":
            return (self.model.decode(inputs[0], labels=labels, check_inputs=False),)
        out = self.model(inputs[0], inputs[1], labels=labels, check_inputs=False)
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


def load_part(path, format: str) -> spec.Loaded:
    """The torch.export artifact at path, loaded (torch.export.load) once its archive has passed
    _check_archive: its runner (numpy inputs in signature order -> a tuple of numpy outputs, unchecked:
    twinvae.export.load checks against the sidecar), its signature and its device. An ONNX file runs in
    onnxruntime, which needs neither twin (twinvae.export)."""
    if format != "torch.export":
        raise ValueError(f"the torch twin loads torch.export programs, not {format!r}")
    with open(path, "rb") as f:
        data = f.read()
    _check_archive(path, data)
    with _quiet():  # a buffer: torch.export.load wants a file named .pt2; and torch reads the bytes checked
        program = torch.export.load(io.BytesIO(data))
    module = program.module()
    device = next((t.device for t in [*module.parameters(), *module.buffers()]), torch.device("cpu"))

    @torch.no_grad()
    def run(*arrays):
        return tuple(o.cpu().numpy() for o in module(*(torch.as_tensor(a, device=device) for a in arrays)))

    return spec.Loaded(run, *_signature(program), (device.type,))


def _signature(program) -> tuple[tuple[spec.TensorSpec, ...], tuple[spec.TensorSpec, ...]]:
    """A program's user inputs and outputs as its graph declares them (fake tensors): unnamed (its names
    are the tracer's), a symbolic size by its symbol."""
    nodes = {node.name: node for node in program.graph.nodes}

    def declared(names):
        values = [nodes[name].meta["val"] for name in names]
        return tuple(spec.TensorSpec(None, tuple(d if isinstance(d, int) else str(d) for d in v.shape),
                                     str(v.dtype).removeprefix("torch.")) for v in values)

    return declared(program.graph_signature.user_inputs), declared(program.graph_signature.user_outputs)


def _check_archive(path, data: bytes) -> None:
    """Refuse the .pt2 at path (data: its bytes, those torch is then given) unless it holds only the records
    this twin's programs hold, no payload marked for unpickling, and a sample-inputs pickle that imports
    only PICKLE_GLOBALS: torch.export.load would unpickle anything else in full, running any code it
    names. Read as a zip and a pickle's opcodes, never loaded."""
    for name, kind, content in _records(str(path), data, _PT2_RECORDS, "a torch.export archive"):
        if kind == "payload config":
            _check_payload_config(path, name, content)
        elif kind == "program":
            _check_program(path, name, content)
        elif kind == "torch.save":
            for inner, inner_kind, pickled in _records(f"{path} member {name}", content, _SAVE_RECORDS,
                                                       "a torch.save archive"):
                if inner_kind == "pickle":
                    _check_pickle(path, f"{name} (its {inner})", pickled)


def _records(where: str, data: bytes, kinds: dict, what: str) -> list[tuple[str, str, bytes]]:
    """(name, kind, content) of each record of the zip archive in data, by its name less the one folder all
    are in; content read for the kinds other than "data". A record of no kind is refused, and so is a name
    twice or outside that folder, where torch's zip reader and Python's might not agree on what it holds."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            root = names[0].split("/")[0] + "/" if names else ""
            kinds_of = {name: next((kind for kind, pattern in kinds.items()
                                    if re.fullmatch(pattern, name.removeprefix(root))), None) for name in names}
            unknown = [name for name, kind in kinds_of.items() if kind is None or not name.startswith(root)]
            if unknown or len(kinds_of) < len(names) or not names:
                held = repr(unknown[0]) if unknown else "a record twice" if names else "no record"
                raise spec.ExportError(f"refused {where}: it is not {what} of this twin's: it holds {held}")
            return [(name, kind, b"" if kind == "data" else archive.read(name)) for name, kind in kinds_of.items()]
    except zipfile.BadZipFile as err:
        raise spec.ExportError(f"refused {where}: it is not {what} (a zip archive): {err}") from None


def _check_payload_config(path, name: str, content: bytes) -> None:
    """Every weight and constant the config lists is read as raw tensor bytes from a record _records knows
    as such: torch.load(weights_only=False) reads one marked use_pickle, and a constant named
    opaque_obj_* or custom_obj_* is unpickled whatever it is marked; this twin's programs have none."""
    try:
        entries = json.loads(content)["config"]
        unpickled = [(key, entry["path_name"]) for key, entry in entries.items()
                     if entry["use_pickle"] is not False or not re.fullmatch(_RAW_PAYLOAD, entry["path_name"])]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise spec.ExportError(f"refused {path}: its archive member {name} is not a payload config ({err!r})"
                               ) from None
    if unpickled:
        key, record = unpickled[0]
        raise spec.ExportError(f"refused {path}: its archive member {name} has {key} unpickled or read from "
                               f"{record!r}, not raw tensor bytes as in this twin's programs")


def _check_program(path, name: str, content: bytes) -> None:
    """The program's symbolic sizes and guards, the strings torch.export.load runs as Python (sympify, a
    compiled guard), are of the forms this twin's programs hold (_SIZE_TERM, _GUARD), and its range
    constraints name plain symbols: anything else could be code."""
    try:
        program = json.loads(content)
        sizes = list(_values_of(program, "expr_str"))
        guards = program.get("guards_code") or []
        symbols = list(program.get("range_constraints") or {})
    except (ValueError, AttributeError) as err:
        raise spec.ExportError(f"refused {path}: its archive member {name} is not a program ({err})") from None
    odd = [s for s in sizes if not (isinstance(s, str) and re.fullmatch(_SIZE_SYNTAX, re.sub(_SIZE_TERM, "", s)))]
    odd += [g for g in guards if not (isinstance(g, str) and re.fullmatch(_GUARD, g))]
    odd += [k for k in symbols if not re.fullmatch(r"s\d+", k)]
    if odd:
        raise spec.ExportError(f"refused {path}: its archive member {name} holds {odd[0]!r}, which "
                               "torch.export.load would run as Python, and not a symbolic size or guard of this "
                               "twin's programs")


def _values_of(tree, key: str):
    """Every value stored under `key` anywhere in a JSON tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key:
                yield v
            yield from _values_of(v, key)
    elif isinstance(tree, list):
        for v in tree:
            yield from _values_of(v, key)


def _check_pickle(path, member: str, data: bytes) -> None:
    """The pickle in data imports only PICKLE_GLOBALS (spec.pickle_globals: from its opcodes, unloaded)."""
    allowed = ", ".join(".".join(g) for g in sorted(PICKLE_GLOBALS))
    try:
        imported = spec.pickle_globals(data)
    except ValueError as err:
        raise spec.ExportError(f"refused {path}: its archive member {member} is a pickle whose globals "
                               f"cannot be named ({err}); this twin's import only {allowed}") from None
    refused = sorted(imported - PICKLE_GLOBALS)
    if refused:
        raise spec.ExportError(f"refused {path}: its archive member {member} imports {'.'.join(refused[0])}, "
                               f"which unpickling would run; this twin's programs import only {allowed}")


def _example(model: VAE, s: spec.TensorSpec, batch: int) -> torch.Tensor:
    shape = (batch, *s.shape[1:])
    device = model.fc_mu.weight.device
    if s.name == "labels":
        return torch.zeros(shape, dtype=torch.int64, device=device)
    return torch.full(shape, 0.5, dtype=torch.float32, device=device)


@contextlib.contextmanager
def _quiet():
    """The exporters' and the loader's progress lines, warnings and logged tracebacks (torchvision absent,
    the archive's weight grouping, a failed load before its exception) are not the user's concern; errors
    still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
