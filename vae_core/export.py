"""The export contract both twins implement: the parts a model is exported as, each part's inputs and outputs
(names, shapes in a twin's layout, dtypes), the formats and the twin that makes each, the checks an
artifact's inputs get, and the sidecar JSON beside every artifact (jax.export has no field for user
metadata; an ONNX file holds a copy too). Framework-free, like the rest of the spec."""

from __future__ import annotations

import hashlib
import importlib
import json
import pickletools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vae_core import checks
from vae_core.checkpoint import atomic_write_bytes
from vae_core.config import VAEConfig

# part -> its inputs (labels follow, where the model is class-conditional) and outputs; every part is a pure
# function: the vae part takes eps, so it draws nothing.
PARTS = {"encoder": (("images",), ("mu", "logvar")),
         "decoder": (("z",), ("logits",)),
         "vae": (("images", "eps"), ("mu", "logvar", "logits"))}
# format -> the twin that makes it, its file suffix, the packages that make it and those that run it (an
# ONNX file runs in onnxruntime alone, without either twin's framework), and the extra that installs each
FORMATS = {"onnx": "torch", "torch.export": "torch", "stablehlo": "jax"}
SUFFIXES = {"onnx": ".onnx", "torch.export": ".pt2", "stablehlo": ".stablehlo"}
MAKERS = {"onnx": ("torch", "onnx", "onnxscript"), "torch.export": ("torch",), "stablehlo": ("jax", "flax")}
RUNTIMES = {"onnx": ("onnxruntime",), "torch.export": ("torch",), "stablehlo": ("jax",)}
EXTRAS = {"torch": "torch", "onnx": "export", "onnxscript": "export", "onnxruntime": "export", "jax": "jax",
          "flax": "jax"}
# bfloat16: the twins' mixed precision (float32 parameters, inputs and outputs; layers computing in bf16).
# ONNX is float32 only: onnxruntime's CPU provider cannot load a bf16 model.
DTYPES = ("float32", "bfloat16")
FLOAT32_ONLY = ("onnx",)
PLATFORMS = ("cpu", "cuda", "tpu")
# where each format's artifacts run: onnxruntime and torch have no TPU backend here (torch_xla does not
# match the pinned torch); StableHLO is lowered for any of them
FORMAT_PLATFORMS = {"onnx": ("cpu", "cuda"), "torch.export": ("cpu", "cuda"), "stablehlo": PLATFORMS}
BATCH = "batch"  # the name of a dynamic batch dimension, in the shapes below and in the artifacts
SIDECAR_FORMAT = "twinvae-export"
SIDECAR_VERSION = 1


class ExportError(ValueError):
    """An artifact or sidecar that cannot be used: missing, of another version, not matching the other, or
    refused as unsafe."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a part: its name, shape (BATCH where the batch is dynamic) and dtype name. As
    an artifact declares it (Loaded): name None where the artifact names none, a dynamic dimension as its
    symbol's name."""

    name: str | None
    shape: tuple
    dtype: str

    @classmethod
    def from_dict(cls, data: dict) -> TensorSpec:
        """From a sidecar's entry, checked: a name, a shape of sizes >= 1 or BATCH, and a dtype name."""
        if not isinstance(data, dict) or set(data) != {"name", "shape", "dtype"}:
            raise ValueError(f"expected an object of name, shape and dtype, got {data!r}")
        name, shape, dtype = data["name"], data["shape"], data["dtype"]
        sizes = isinstance(shape, (list, tuple)) and all(d == BATCH or (type(d) is int and d >= 1) for d in shape)
        if not (isinstance(name, str) and isinstance(dtype, str) and sizes):
            raise ValueError(f"expected a name, a shape of sizes >= 1 or {BATCH!r} and a dtype name, got {data!r}")
        return cls(name, tuple(shape), dtype)


@dataclass(frozen=True)
class Loaded:
    """An artifact loaded in its runtime: run (numpy inputs in signature order -> a tuple of numpy outputs,
    unchecked), and what the artifact itself declares it takes and gives and where it runs (platforms None:
    anywhere), which load compares with its sidecar (check_signature)."""

    run: Callable
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    platforms: tuple[str, ...] | None = None


def check_part(part: str) -> str:
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}: choose one of {', '.join(PARTS)}")
    return part


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")
    return format


def check_dtype(format: str, dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"an artifact computes in one of {', '.join(DTYPES)}, not {dtype!r}")
    if dtype != "float32" and format in FLOAT32_ONLY:
        raise ValueError(f"{format} artifacts are float32 only (onnxruntime's CPU provider cannot load a "
                         f"{dtype} model); use --format torch.export or stablehlo for {dtype}")
    return dtype


def check_platform(format: str, platform: str) -> str:
    allowed = FORMAT_PLATFORMS[check_format(format)]
    if platform not in allowed:
        hint = " (for a TPU: --format stablehlo)" if platform == "tpu" else ""
        raise ValueError(f"{format} artifacts run on {' or '.join(allowed)}, not {platform!r}{hint}")
    return platform


def check_batch(batch) -> int | None:
    """None (a dynamic batch dimension) or a fixed batch size >= 1."""
    return None if batch is None else checks.check_count("batch", batch)


def require(format: str, purpose: str = "export") -> None:
    """Import the packages that make ("export") or run ("run") a format's artifacts, or say which extra
    installs them."""
    for module in (MAKERS if purpose == "export" else RUNTIMES)[check_format(format)]:
        try:
            importlib.import_module(module)
        except ImportError as err:
            verb = "exporting" if purpose == "export" else "running"
            raise ModuleNotFoundError(f"{verb} {format} needs {module}, which is not installed ({err}): "
                                      f"pip install 'twinvae[{EXTRAS[module]}]'") from None


def signature(config: VAEConfig, part: str, layout: str, batch: int | None,
              label_dtype: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """A part's inputs and outputs in a twin's layout ("NCHW" or "NHWC"); batch None: dynamic."""
    n = BATCH if batch is None else batch
    shapes = {"images": (n, *checks.image_shape_in(layout, config.image_shape)),
              "eps": (n, config.noise_dim), "z": (n, config.latent_dim), "mu": (n, config.latent_dim),
              "logvar": (n, config.latent_dim),
              "logits": (n, *checks.image_shape_in(layout, config.output_shape)), "labels": (n,)}
    names, outputs = PARTS[check_part(part)]
    names = (*names, "labels") if config.num_classes else names
    inputs = tuple(TensorSpec(name, shapes[name], label_dtype if name == "labels" else "float32")
                   for name in names)
    return inputs, tuple(TensorSpec(name, shapes[name], "float32") for name in outputs)


def check_inputs(inputs: tuple[TensorSpec, ...], arrays: list[np.ndarray], config: VAEConfig,
                 layout: str) -> list[np.ndarray]:
    """An artifact's inputs checked against its signature (shape in its layout, one batch size, dtype,
    values: finite, images in [0, 1], labels classes of the model); labels of any integer dtype are cast
    to the artifact's. Returns the arrays to feed it."""
    if len(arrays) != len(inputs):
        names = ", ".join(spec.name for spec in inputs)
        raise ValueError(f"this artifact takes {len(inputs)} inputs ({names}), got {len(arrays)}")
    fixed = inputs[0].shape[0] != BATCH
    batch = inputs[0].shape[0] if fixed else (arrays[0].shape[0] if arrays[0].ndim else 0)
    fed = []
    for spec, array in zip(inputs, arrays):
        dtype = str(array.dtype)
        if spec.name == "labels":
            checks.check_label_batch("labels", array.shape, dtype, batch)
            checks.check_label_values("labels", int(array.min()), int(array.max()), config.num_classes)
            fed.append(array.astype(spec.dtype, copy=False))
            continue
        if spec.name == "images":
            checks.check_image_batch("images", array.shape, dtype, config.image_shape, layout, spec.dtype)
            if array.shape[0] != batch:
                expected = ", ".join(map(str, (batch, *spec.shape[1:])))
                raise ValueError(f"images has shape {array.shape}, expected ({expected}): this artifact was "
                                 f"exported for a fixed batch of {batch}")
        else:
            width = config.noise_dim if spec.name == "eps" else config.latent_dim  # both levels' noise
            checks.check_latent_batch(spec.name, array.shape, dtype, width, spec.dtype, batch)
        checks.check_values(spec.name, bool(np.isfinite(array).all()), float(array.min()), float(array.max()),
                            (0.0, 1.0) if spec.name == "images" else None)
        fed.append(array)
    return fed


def sidecar_path(path: str | Path) -> Path:
    return Path(f"{path}.json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(config: VAEConfig, format: str, part: str, layout: str, inputs, outputs, *, batch: int | None,
             dtype: str, platform: str, version: str, extra: dict | None = None) -> dict:
    """The sidecar's fields, less the artifact's checksum (an ONNX file holds this copy of them)."""
    return {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "twinvae_version": version,
            "artifact_format": format, "part": part, "backend": FORMATS[format], "layout": layout,
            "batch": "dynamic" if batch is None else batch, "dtype": dtype, "platform": platform,
            "config": config.to_dict(), "inputs": [asdict(s) for s in inputs],
            "outputs": [asdict(s) for s in outputs], **(extra or {})}


def write_sidecar(path: str | Path, info: dict) -> Path:
    """PATH.json beside the artifact at PATH, with the artifact's SHA-256, so a sidecar left from another
    export is found out."""
    sidecar = sidecar_path(path)
    data = {**info, "artifact": Path(path).name, "sha256": file_sha256(path)}
    atomic_write_bytes(sidecar, (json.dumps(data, indent=2) + "\n").encode())
    return sidecar


def read_sidecar(path: str | Path, sha256: str | None = None) -> dict:
    """The sidecar of the artifact at PATH, checked: both files there, a twinvae export sidecar of a
    version this twinvae reads, describing this very file (its SHA-256), with every field load reads of its
    type. sha256: the artifact's SHA-256 as the user knows it from elsewhere, which it must have (the
    sidecar's, beside the file, is no defence against whoever could rewrite both)."""
    path, sidecar = Path(path), sidecar_path(path)
    if not path.is_file():
        raise ExportError(f"no artifact at {path}")
    actual = file_sha256(path)
    if sha256 is not None and str(sha256).lower() != actual:
        raise ExportError(f"{path} has SHA-256 {actual}, not the {sha256} it was pinned to: it is not the "
                          "artifact you trust")
    if not sidecar.is_file():
        raise ExportError(f"{path} has no sidecar {sidecar}: twinvae.export.load reads an artifact's inputs, "
                          "outputs and config there; export it again with `twinvae export`")
    try:
        info = json.loads(sidecar.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"sidecar {sidecar} is not valid JSON: {err}") from None
    if not isinstance(info, dict) or info.get("format") != SIDECAR_FORMAT:
        raise ExportError(f"{sidecar} is not a twinvae export sidecar")
    version = info.get("version")
    if type(version) is not int or version < 1:
        raise ExportError(f"sidecar {sidecar}: field 'version' is {version!r}, not an export format version "
                          "(an integer >= 1)")
    if version > SIDECAR_VERSION:
        raise ExportError(f"{sidecar} is of export format {version}, newer than this twinvae's "
                          f"{SIDECAR_VERSION}: upgrade twinvae")
    if info.get("sha256") != actual:
        raise ExportError(f"sidecar {sidecar} does not match {path} (its SHA-256 is another file's: "
                          f"{info.get('artifact')!r} of another export); export again to write both")
    _check_fields(info, sidecar, path)
    return info


def _check_fields(info: dict, sidecar: Path, path: Path) -> None:
    """The fields load reads beyond the checksum, each of its type and agreeing with the file's name, so
    that a sidecar edited or damaged is named field by field, not met later as a KeyError or TypeError."""
    def refuse(field, problem):
        raise ExportError(f"sidecar {sidecar}: field {field!r} {problem}")

    format = info.get("artifact_format")
    if format not in SUFFIXES:
        refuse("artifact_format", f"is {format!r}, not one of {', '.join(SUFFIXES)}")
    if path.suffix != SUFFIXES[format]:
        refuse("artifact_format", f"is {format!r}, whose files end in {SUFFIXES[format]}, but the artifact "
                                  f"is {path.name}")
    for field, allowed in (("layout", tuple(checks.LAYOUT_AXES)), ("platform", FORMAT_PLATFORMS[format])):
        if info.get(field) not in allowed:
            refuse(field, f"is {info.get(field)!r}, not one of {', '.join(allowed)} (for {format})")
    for field, parse in (("config", VAEConfig.from_dict), ("inputs", _specs), ("outputs", _specs)):
        if field not in info:
            refuse(field, "is missing")
        try:
            parse(info[field])
        except (TypeError, ValueError) as err:
            refuse(field, f"is malformed: {err}")


def _specs(entries: list) -> tuple[TensorSpec, ...]:
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"expected a list of inputs or outputs, got {entries!r}")
    return tuple(TensorSpec.from_dict(entry) for entry in entries)


def sidecar_specs(info: dict) -> tuple[VAEConfig, tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The config, inputs and outputs of a sidecar that read_sidecar has checked."""
    return VAEConfig.from_dict(info["config"]), _specs(info["inputs"]), _specs(info["outputs"])


def check_signature(path: str | Path, info: dict, loaded: Loaded) -> None:
    """The sidecar's inputs, outputs and platform are what the artifact itself declares, compared in order
    (names where the artifact has them, shapes with any symbol for a dynamic BATCH, dtypes): a sidecar edited
    to disagree is refused at load, naming both sides, rather than failing at the first call in the runtime."""
    _, inputs, outputs = sidecar_specs(info)
    for field, described, declared in (("inputs", inputs, loaded.inputs), ("outputs", outputs, loaded.outputs)):
        if len(described) != len(declared) or not all(map(_same_tensor, described, declared)):
            raise ExportError(f"sidecar {sidecar_path(path)} does not match {path}: its {field} are "
                              f"{_describe(described)}; the artifact's are {_describe(declared)}")
    if loaded.platforms is not None and info["platform"] not in loaded.platforms:
        raise ExportError(f"sidecar {sidecar_path(path)} does not match {path}: its platform is "
                          f"{info['platform']}; the artifact's is {', '.join(loaded.platforms)}")


def _same_tensor(described: TensorSpec, declared: TensorSpec) -> bool:
    """The same name (where the artifact names it), dtype and rank, BATCH where the artifact has a symbol."""
    dynamic = [d == BATCH for d in described.shape] == [isinstance(d, str) for d in declared.shape]
    fixed = all(a == b for a, b in zip(described.shape, declared.shape) if a != BATCH)
    return declared.name in (None, described.name) and described.dtype == declared.dtype and dynamic and fixed


def _describe(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{s.name + ' ' if s.name else ''}({', '.join(map(str, s.shape))}) {s.dtype}" for s in specs)


# opcodes that push a str (STACK_GLOBAL's operands), and those that store the top of the stack in the memo
_STRING_OPCODES = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE",
                   "BINUNICODE8"}
_MEMO_PUTS = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_FRAMING = {"PROTO", "FRAME"}  # change nothing on the stack: a frame may fall between a global's two strings


def pickle_globals(data: bytes) -> set[tuple[str, str]]:
    """The (module, name) of every global the pickle in data would import (GLOBAL, INST, STACK_GLOBAL), read
    from its opcodes (pickletools.genops) without loading it, so without running anything it names; as
    written (a protocol 0-2 pickle's Python 2 names are mapped by the unpickler: an allowlist of Python 3
    names refuses them). STACK_GLOBAL takes the two strings just pushed, or fetched from the memo;
    ValueError for one it cannot name so (its operands computed), for the extension registry (EXT1, EXT2,
    EXT4) and for a malformed pickle, which an allowlist cannot judge."""
    found, strings, memo = set(), [], {}  # strings: the str values known to be on top of the stack
    for opcode, arg, position in pickletools.genops(data):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            found.add(tuple(arg.split(" ", 1)))
        elif name == "STACK_GLOBAL":
            if len(strings) < 2:
                raise ValueError(f"a STACK_GLOBAL at byte {position} of a module and name not pushed as strings")
            found.add((strings[-2], strings[-1]))
        elif name.startswith("EXT"):
            raise ValueError(f"{name} at byte {position}: a global from copyreg's extension registry")
        if name in _STRING_OPCODES:
            strings.append(arg)
        elif name in _MEMO_PUTS:
            memo[len(memo) if name == "MEMOIZE" else arg] = strings[-1] if strings else None
        elif name in _MEMO_GETS and isinstance(memo.get(arg), str):
            strings.append(memo[arg])
        elif name not in _FRAMING:
            strings = []
    return found
