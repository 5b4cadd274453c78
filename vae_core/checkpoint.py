"""The checkpoint file: one safetensors file with the canonical weights and, in its header, the format,
its version, the config, the caller's metadata and a SHA-256 of every tensor. Every file twinvae writes
goes through atomic_write_bytes, so a crash leaves the old file or the new one, never a torn one; every
safetensors file it writes goes through write_safetensors, and reads back through read_safetensors, which
verifies each tensor against its checksum."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np

from vae_core.config import VAEConfig
from vae_core.layout import WeightsError, check_weights

FORMAT_NAME = "twinvae"
# 2: the config may hold fields format 1 lacks (LATER_FIELDS), which 1 reads as before; 3: also the training
# objective's (objective, train_samples), which 2 lacks. Every earlier version loads, its missing fields as
# LATER_FIELDS says; a newer one is refused.
FORMAT_VERSION = 3
TEMP_SUFFIX = ".twinvae.tmp"  # atomic_write_bytes' temp files: .<name>.<random>.twinvae.tmp beside the target
# a temp file of NAME, as this version writes it and as earlier ones did (.NAME.<8 of mkstemp's characters>.tmp
# and .NAME.link.tmp); remove_temp_files removes only these, and only for the names it is given
TEMP_NAMES = (re.compile(r"\.(?P<name>.+)\.(?:[a-z0-9_]{8}|link)\.twinvae\.tmp"),
              re.compile(r"\.(?P<name>.+)\.(?:[a-z0-9_]{8}|link)\.tmp"))
TRAIN_STATE_FORMAT = "twinvae-train-state"  # a run's optimizer state and position (twinvae.run_folder)
CHECKSUMS = "sha256"  # the header field: JSON {tensor name: SHA-256 of its bytes}
HEADER_CHECKSUM = "header_sha256"  # the header field: SHA-256 of the other fields and each tensor's dtype, shape


_KEPT: dict[tuple[int, int], str] = {}  # (device, inode) -> path: the inputs of the command under way


@contextlib.contextmanager
def inputs_kept(paths):
    """While the block runs, atomic_write_bytes refuses to replace any of these files (a command's inputs:
    its checkpoint, config, data, images), naming it, whatever path (a link, another spelling) reaches it."""
    added = {_identity(p): str(p) for p in paths if os.path.isfile(p)}
    added = {key: path for key, path in added.items() if key not in _KEPT}
    _KEPT.update(added)
    try:
        yield
    finally:
        for key in added:
            _KEPT.pop(key, None)


def _identity(path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def refuse_input(path) -> None:
    """An output at `path` that is one of the kept inputs (inputs_kept) is refused, naming both."""
    kept = _KEPT.get(_identity(path)) if _KEPT and os.path.isfile(path) else None
    # the input still there (an inode freed by a deletion can come back as another file's)
    if kept is not None and os.path.isfile(kept) and _identity(kept) == _identity(path):
        raise ValueError(f"{path} is {kept}, an input of this command: it is not overwritten; name another "
                         "output")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, not safetensors, not twinvae, newer format."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes, previous: str | os.PathLike | None = None) -> None:
    """Write to a temp file in the target's folder, fsync, rename over the target: a crash at any point
    leaves either the old file or the new one, never a truncated one. With `previous`, the old file is
    kept there (hard-linked first, so that `path` exists at every instant). A target that is a symbolic
    link is refused (the write would replace the link, not the file it names); an OSError (a full disk)
    names the file and leaves the old one."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    for target in (path, *([] if previous is None else [Path(previous)])):
        refuse_symlink(target)
        refuse_input(target)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        os.fchmod(fd, _file_mode(path))  # mkstemp makes 0600; give the file the mode a plain open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.is_file():
            _keep_as(path, Path(previous))
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, (FileNotFoundError, WriteError)):
            raise write_error(path, err) from None
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        os.close(dir_fd)


class WriteError(OSError):
    """A write that failed (a full disk, no permission), naming the file; errno kept for callers."""

    def __str__(self) -> str:
        return self.strerror


def write_error(path, err: OSError) -> WriteError:
    """An OSError of a write, as one that names the file (and a full disk as such)."""
    reason = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else err.strerror or str(err)
    return WriteError(err.errno, f"cannot write {path}: {reason}")


def refuse_symlink(path: str | os.PathLike) -> None:
    """twinvae never writes through a symbolic link: one at `path` is refused (ValueError), naming it and the
    file it names."""
    if os.path.islink(path):
        raise ValueError(f"{path} is a symbolic link (to {os.readlink(path)}); twinvae does not read or write "
                         "through links there: remove it, or name another file")


def _keep_as(path: Path, previous: Path) -> None:
    """Make `previous` a second name of `path`'s current file, atomically (a hard link renamed into place)."""
    link = previous.with_name(f".{previous.name}.link{TEMP_SUFFIX}")
    if link.exists() or link.is_symlink():
        link.unlink()
    os.link(path, link, follow_symlinks=False)
    os.replace(link, previous)


def temp_files(folder: str | os.PathLike, names) -> list[Path]:
    """The temp files that interrupted atomic writes of the files `names` left in `folder` (TEMP_NAMES: this
    version's and earlier versions' exact names); nobody else's, however they are named."""
    names = set(names)
    return sorted(entry for entry in Path(folder).iterdir()
                  if any((m := pattern.fullmatch(entry.name)) and m["name"] in names for pattern in TEMP_NAMES)
                  and not entry.is_symlink() and entry.is_file())


def remove_temp_files(folder: str | os.PathLike, names) -> list[Path]:
    """Delete temp_files(folder, names); returns them, for the caller to name."""
    leftovers = temp_files(folder, names)
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return leftovers


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
    check_weights(weights, config)
    try:
        metadata_json = json.dumps({} if metadata is None else metadata, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint metadata must be JSON-serialisable: {err}") from None
    write_safetensors(path, weights, {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
                                      "config": config.to_json(), "metadata": metadata_json})


def tensor_checksums(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """SHA-256 of each array's bytes (C order), by name."""
    return {key: hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
            for key, value in sorted(arrays.items())}


def header_checksum(metadata: dict[str, str], arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of a safetensors file's metadata (less this checksum) and of each tensor's dtype and shape: with
    the tensors' own checksums, every byte of the file that says what it holds is covered."""
    described = {"metadata": {k: v for k, v in metadata.items() if k != HEADER_CHECKSUM},
                 "tensors": {k: [str(v.dtype), list(v.shape)] for k, v in arrays.items()}}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def write_safetensors(path, arrays: dict[str, np.ndarray], header: dict[str, str], previous=None) -> None:
    """arrays as one safetensors file, atomically, with `header`, the checksum of every array and that of
    the header in its metadata (see atomic_write_bytes for `previous`)."""
    from safetensors.numpy import save

    arrays = {key: np.ascontiguousarray(value) for key, value in arrays.items()}
    metadata = {**header, CHECKSUMS: json.dumps(tensor_checksums(arrays))}
    metadata[HEADER_CHECKSUM] = header_checksum(metadata, arrays)
    atomic_write_bytes(path, save(arrays, metadata=metadata), previous)


def read_safetensors(path, what: str = "checkpoint", check_header=None) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, header metadata) of a safetensors file, each array verified against the checksum in the
    header, and the header against its own (HEADER_CHECKSUM); CheckpointError names `what`, the path and,
    on a mismatch, the tensor or the header. A file without tensor checksums (written before twinvae
    recorded them) loads with a warning; one without a header checksum (the same) loads, and the caller
    sees that HEADER_CHECKSUM is absent. check_header(metadata), if given, vets the header (its format)
    before any tensor is read."""
    from safetensors.numpy import load

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder, not a file" + (
            f"; the model checkpoint in it is {path / 'model.safetensors'}"
            if (path / "model.safetensors").is_file() else ""))
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    data = path.read_bytes()
    info = read_safetensors_header(path, data, what).get("__metadata__") or {}
    info = info if isinstance(info, dict) else {}
    if check_header is not None:
        check_header(info)
    try:
        arrays = load(data)
    except Exception as err:  # safetensors raises its own error types for corrupt payloads
        raise CheckpointError(f"{what} {path}: corrupt tensor data ({err})") from None
    _verify_checksums(path, what, arrays, info.get(CHECKSUMS))
    if HEADER_CHECKSUM in info and info[HEADER_CHECKSUM] != header_checksum(info, arrays):
        raise CheckpointError(f"{what} {path}: its header (the metadata, or a tensor's dtype or shape) does not "
                              "match its SHA-256 checksum: the file is corrupt (a flipped bit, a bad disk or "
                              "copy, an edit); use another copy")
    return arrays, info


def _verify_checksums(path, what: str, arrays: dict[str, np.ndarray], recorded: str | None) -> None:
    if recorded is None:
        warnings.warn(f"{what} {path} carries no checksums (written before twinvae recorded them): its "
                      "tensors cannot be verified", stacklevel=3)
        return
    try:
        expected = json.loads(recorded)
    except json.JSONDecodeError:
        raise CheckpointError(f"{what} {path}: its checksum field is not JSON (corrupt header)") from None
    actual = tensor_checksums(arrays)
    if not isinstance(expected, dict) or set(expected) != set(actual):
        raise CheckpointError(f"{what} {path}: its checksums do not name the tensors it holds (corrupt header)")
    bad = [key for key in actual if actual[key] != expected[key]]
    if bad:
        raise CheckpointError(f"{what} {path}: tensor {bad[0]!r} does not match its SHA-256 checksum"
                              + (f" (nor do {len(bad) - 1} more)" if len(bad) > 1 else "")
                              + ": the file is corrupt (a flipped bit, a bad disk or copy); use another copy")


def read_checkpoint(path) -> tuple[dict[str, np.ndarray], VAEConfig, dict]:
    """Read and validate a checkpoint; every failure names the path and what is wrong."""
    weights, info = read_safetensors(path, check_header=lambda info: _check_checkpoint_header(path, info))
    try:
        config = VAEConfig.from_json(info.get("config", ""), complete=True)
        metadata = json.loads(info.get("metadata", "{}"))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: bad config or metadata in header: {err}") from None
    try:
        check_weights(weights, config)
    except WeightsError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None
    return weights, config, metadata


def _check_checkpoint_header(path, info: dict) -> None:
    """A model checkpoint's format and version, before its tensors are read."""
    if info.get("format") == TRAIN_STATE_FORMAT:
        model = Path(path).parent / "model.safetensors"
        raise CheckpointError(f"checkpoint {path}: a twinvae training state (the optimizer and position of a "
                              f"run), not a model; the model beside it is {model}")
    if info.get("format") != FORMAT_NAME:
        raise CheckpointError(f"checkpoint {path}: a safetensors file, but not written by twinvae (its header "
                              f"has no format={FORMAT_NAME!r})")
    try:
        version = int(info.get("format_version", ""))
    except (TypeError, ValueError):
        version = 0
    if version < 1:
        raise CheckpointError(f"checkpoint {path}: bad format_version {info.get('format_version')!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format version {version} is newer than this twinvae "
                              f"reads ({FORMAT_VERSION}); upgrade twinvae")


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
