"""The checkpoint file: one safetensors file with the canonical weights and, in its header, the format,
its version, the config and the caller's metadata. Every file twinvae writes goes through
atomic_write_bytes, so a crash leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from vae_core.config import VAEConfig
from vae_core.layout import WeightsError, check_weights

FORMAT_NAME = "twinvae"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, not safetensors, not twinvae, newer format."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the target's folder, fsync, rename over the target: a crash at any point
    leaves either the old file or the new one, never a truncated one."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode(path))  # mkstemp makes 0600; give the file the mode a plain open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | os.PathLike, data) -> None:
    """data as indented JSON, atomically (run records, evaluation figures)."""
    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


def _file_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_checkpoint(path, weights: dict[str, np.ndarray], config: VAEConfig,
                     metadata: dict | None = None) -> None:
    """One safetensors file: canonical weights; header metadata holds format, version, config, metadata."""
    from safetensors.numpy import save

    check_weights(weights, config)
    try:
        metadata_json = json.dumps({} if metadata is None else metadata, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint metadata must be JSON-serialisable: {err}") from None
    header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
              "config": config.to_json(), "metadata": metadata_json}
    arrays = {key: np.ascontiguousarray(value) for key, value in weights.items()}
    atomic_write_bytes(path, save(arrays, metadata=header))


def read_checkpoint(path) -> tuple[dict[str, np.ndarray], VAEConfig, dict]:
    """Read and validate a checkpoint; every failure names the path and what is wrong."""
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (or is not a file)")
    data = path.read_bytes()
    header = read_safetensors_header(path, data)
    info = header.get("__metadata__") or {}
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise CheckpointError(f"checkpoint {path}: a safetensors file, but not written by twinvae "
                              f"(its header has no format={FORMAT_NAME!r})")
    try:
        version = int(info.get("format_version", ""))
    except (TypeError, ValueError):
        version = 0
    if version < 1:
        raise CheckpointError(f"checkpoint {path}: bad format_version {info.get('format_version')!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format version {version} is newer than this twinvae "
                              f"reads ({FORMAT_VERSION}); upgrade twinvae")
    try:
        config = VAEConfig.from_json(info.get("config", ""), complete=True)
        metadata = json.loads(info.get("metadata", "{}"))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: bad config or metadata in header: {err}") from None
    try:
        weights = load(data)
    except Exception as err:  # safetensors raises its own error types for corrupt payloads
        raise CheckpointError(f"checkpoint {path}: corrupt tensor data ({err})") from None
    try:
        check_weights(weights, config)
    except WeightsError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None
    return weights, config, metadata


def read_safetensors_header(path: Path, data: bytes, what: str = "checkpoint") -> dict:
    """The JSON header of a safetensors file's bytes, checked to describe data the file really holds;
    CheckpointError names `what` and the path otherwise."""
    if len(data) < 8:
        raise CheckpointError(f"{what} {path}: {len(data)} bytes, too short for a safetensors file "
                              "(truncated or not a checkpoint)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise CheckpointError(f"{what} {path}: header claims {header_len} bytes but the file has "
                              f"{len(data)} (truncated or not a safetensors file)")
    try:
        header = json.loads(data[8:8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{what} {path}: header is not JSON (not a safetensors file)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{what} {path}: header is not a JSON object (not a safetensors file)")
    end = 0
    for key, tensor in header.items():
        if key == "__metadata__":
            continue
        offsets = tensor.get("data_offsets") if isinstance(tensor, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise CheckpointError(f"{what} {path}: header entry {key!r} has no valid data_offsets "
                                  "(corrupt or not a safetensors file)")
        end = max(end, offsets[1])
    if 8 + header_len + end > len(data):
        raise CheckpointError(f"{what} {path}: tensor data ends at byte {8 + header_len + end} but the "
                              f"file has {len(data)} bytes (truncated)")
    return header
