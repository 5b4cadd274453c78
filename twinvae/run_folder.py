"""A training run's folder, and what keeps it whole under every fault.

    run.json                  the run record: config, options, command, versions (and each resume's)
    log.jsonl                 one JSON record per finished epoch
    train_state.safetensors   the checkpoint unit: model weights, Adam's state, the position in the run
    train_state.previous.safetensors   the unit before it, kept as a fallback against a corrupt file
    model.safetensors         the model alone, the ordinary canonical checkpoint either backend loads
    run.lock                  held (fcntl.flock) by the one process that writes the folder

The unit is one file, written atomically, so at every instant the folder holds a complete, consistent
one (once the first save is done). The log's position is the unit's: on resume, records of epochs the
unit has not finished are dropped. model.safetensors follows the unit, and is rewritten from it wherever
a crash left it behind.

A run touches only its own files: these names, and the temp files of their atomic writes. None of them may
be a symbolic link (refused, naming it), and --overwrite deletes only those its run record lists.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from vae_core import layout
from vae_core.checkpoint import (
    HEADER_CHECKSUM,
    TRAIN_STATE_FORMAT,
    CheckpointError,
    atomic_write_bytes,
    read_safetensors,
    refuse_symlink,
    remove_temp_files,
    temp_files,
    write_error,
    write_safetensors,
)
from vae_core.config import VAEConfig

RECORD, LOG, CHECKPOINT, LOCK, RESULTS = "run.json", "log.jsonl", "model.safetensors", "run.lock", "results.md"
TRAIN_STATE, PREVIOUS_STATE = "train_state.safetensors", "train_state.previous.safetensors"
TRAIN_STATE_VERSION = 2  # 2: the unit holds the model's weights too; 1: it paired with model.safetensors
MODEL_PREFIX = "model."  # the weights' keys in the unit; Adam's are exp_avg.<key>, exp_avg_sq.<key>, step
PICTURES = ("loss.png", "reconstructions.png", "samples.png", "interpolation-linear.png",
            "interpolation-spherical.png", "denoising.png")
RUN_FILES = (RECORD, LOG, CHECKPOINT, TRAIN_STATE, PREVIOUS_STATE, RESULTS, *PICTURES)  # run.json lists them
OWN_NAMES = (*RUN_FILES, LOCK)


class RunFolderError(ValueError):
    """A run folder that holds what a run may not touch: a symbolic link among its names, files of its names
    that no run record claims, or others where --overwrite would have to delete."""


class RunInUse(RuntimeError):
    """Another live process holds the run folder's lock."""


@dataclasses.dataclass
class Position:
    """Where a run is: the epoch under way (0-based), the next batch in it, the global step, and the
    running sums of that epoch's training losses. With the counter-based seed streams this is all the
    RNG state there is: data order and eps follow from (seed, epoch, step)."""
    epoch: int = 0
    batch: int = 0
    step: int = 0
    sums: list = dataclasses.field(default_factory=lambda: [0.0, 0.0, 0.0])


@dataclasses.dataclass(frozen=True)
class Unit:
    """One checkpoint unit as read back: the model's canonical weights (None in a version-1 file, whose
    weights are model.safetensors), Adam's arrays, the position, and the file it came from."""
    weights: dict | None
    optimizer: dict
    position: Position
    path: Path


class RunLock:
    """An advisory lock on folder/run.lock, held while the `with` block runs; the file records the
    holder's PID. A dead holder's lock is gone with it (the kernel drops flock locks of closed files)."""

    def __init__(self, folder):
        self.path = Path(folder) / LOCK

    def __enter__(self):
        import fcntl

        try:  # never through a link: the PID would be written into the file it names
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            refuse_symlink(self.path)
            raise write_error(self.path, err) from None
        if not _holds_a_pid(self.fd) or os.fstat(self.fd).st_nlink > 1:
            os.close(self.fd)
            raise RunFolderError(f"{self.path} is not a twinvae run lock (it holds something other than a PID, "
                                 "or is a hard link to another file): it is not this run's to overwrite; move "
                                 "it, or choose another --out")
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise RunInUse(f"{self.path.parent} is in use by another twinvae process (PID {holder}); two "
                           "writers would corrupt it: wait for that one to finish, or stop it first") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the lock; the file stays (unlinking it would race a new holder)


def _holds_a_pid(fd: int) -> bool:
    """Whether the open file is empty or holds what RunLock writes: a PID and a newline."""
    text = os.pread(fd, 64, 0)
    return len(text) < 64 and text.strip().isdigit() or not text.strip()


def has_unit(out: Path) -> bool:
    return (out / TRAIN_STATE).is_file() or (out / PREVIOUS_STATE).is_file()


def check_no_links(out: Path) -> None:
    """Refuse a run folder where one of a run's names (or a temp file of one) is a symbolic link, or a file it
    writes in place is a hard link: reads and writes through it would reach a file outside the run."""
    links = [out / name for name in OWN_NAMES if (out / name).is_symlink()]
    links += [p for p in out.iterdir() if p.is_symlink() and p.name.startswith(".") and p.name.endswith(".tmp")
              and p not in links and any(p.name.startswith(f".{name}.") for name in RUN_FILES)]
    if links:
        raise RunFolderError(f"{out} holds symbolic links where the run keeps its files: "
                             f"{', '.join(f'{p.name} -> {os.readlink(p)}' for p in links)}; twinvae does not "
                             "follow links in a run folder: remove them, or choose another --out")
    # the files written in place (the others are replaced whole, which leaves another name's file as it was)
    shared = [name for name in (LOG, LOCK) if (out / name).is_file() and (out / name).stat().st_nlink > 1]
    if shared:
        raise RunFolderError(f"{out}: {', '.join(shared)} is a hard link to another file; twinvae writes it in "
                             "place, which would write that file too: remove it, or choose another --out")


def holds_record(out: Path) -> bool:
    """Whether out/run.json is a run record (a JSON object with a run's config and options), not merely a file
    of that name: only a record claims a folder's files for a run."""
    try:
        record = json.loads(_read_own(out / RECORD))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and isinstance(record.get("config"), dict) and isinstance(
        record.get("options"), dict)


def foreign_files(out: Path) -> list[str]:
    """The names in `out` that a run would write but that no run record there claims."""
    if holds_record(out):
        return []
    return [name for name in RUN_FILES if (out / name).exists() or (out / name).is_symlink()]


def remove_leftovers(out: Path, say) -> None:
    """Delete the temp files that interrupted writes of the run's files left, naming each."""
    for leftover in remove_temp_files(out, RUN_FILES):
        say(f"removed {leftover}, left by an interrupted write")


def clear(out: Path, say) -> None:
    """--overwrite: delete the files the run record lists as its own (clearable), and the temp files of their
    writes, naming them."""
    removed = [out / name for name in clearable(out) if (out / name).is_file()]
    for path in removed:
        path.unlink()
    remove_leftovers(out, say)
    if removed:
        say(f"--overwrite: deleted {', '.join(p.name for p in removed)} in {out}")


def clearable(out: Path) -> tuple[str, ...]:
    """The names --overwrite may delete in `out`: those its run record lists (RUN_FILES in a record that
    predates the list). Without a run record (a run.json that is not one counts as none) it refuses unless
    the folder holds nothing but a run's names (a run whose record was lost), listing what else it found; a
    link among them is refused too."""
    if not out.is_dir():
        return ()
    check_no_links(out)
    if holds_record(out):
        return _listed_files(out / RECORD)
    if (out / RECORD).exists():
        raise RunFolderError(f"--overwrite {out}: its run.json is not a twinvae run record (no config and "
                             "options): the folder is not a run's, and --overwrite deletes nothing in it; choose "
                             "another --out")
    leftovers = temp_files(out, RUN_FILES)
    others = sorted(p.name for p in out.iterdir() if p.name not in OWN_NAMES and p not in leftovers)
    if others:
        raise RunFolderError(f"--overwrite {out}: the folder holds no run record (run.json), and files that "
                             f"are not a run's: {', '.join(others)}; it deletes only a run's own files: "
                             "choose another --out, or empty the folder yourself")
    return RUN_FILES


def _listed_files(record: Path) -> tuple[str, ...]:
    """The files a run record lists as its run's (only run names: a record cannot make --overwrite delete
    another file)."""
    try:
        listed = json.loads(record.read_text()).get("files", RUN_FILES)
    except (OSError, ValueError, AttributeError) as err:
        raise RunFolderError(f"--overwrite: {record} is not a readable run record ({err}); it lists the files "
                             "to delete: restore it, or empty the folder yourself") from None
    return tuple(name for name in RUN_FILES if name in listed)


# --- the checkpoint unit ------------------------------------------------------------------------------------

def save_unit(out: Path, weights: dict, optimizer: dict, position: Position, config: VAEConfig) -> None:
    """The model's weights, Adam's arrays and the position as one file, atomically, the unit before kept
    as PREVIOUS_STATE. Refuses (ValueError naming the tensor) to save non-finite values: the unit on disk
    stays the last good one."""
    arrays = {**{MODEL_PREFIX + k: v for k, v in weights.items()}, **optimizer}
    bad = _non_finite(arrays)
    if bad:
        raise ValueError(f"{_describe(bad[0])} holds NaN or inf at step {position.step}" +
                         (f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""))
    header = {"format": TRAIN_STATE_FORMAT, "format_version": str(TRAIN_STATE_VERSION),
              "config": config.to_json(), "position": json.dumps(dataclasses.asdict(position))}
    write_safetensors(out / TRAIN_STATE, arrays, header, previous=out / PREVIOUS_STATE)


@dataclasses.dataclass(frozen=True)
class RunSize:
    """What a run record says of a unit's possible positions: its epochs (the most it was asked for) and the
    steps of each epoch (None in a record that predates it: then only what a position says of itself is
    checked)."""
    epochs: int
    steps_per_epoch: int | None = None


def read_train_state(path: Path, config: VAEConfig | None = None, size: RunSize | None = None, say=None) -> Unit:
    """One unit file, checked whole: format, checksums (every tensor and the header), position (in range and
    consistent with Adam's step count and, given them, the run's sizes), finite values and (given a config)
    the shapes of every tensor; ValueError names the file and what is wrong. A unit without a header
    checksum (written before twinvae kept one) is range-checked, with a warning through `say`."""
    try:
        arrays, header = read_safetensors(path, "training state")
        if header.get("format") != TRAIN_STATE_FORMAT:
            raise CheckpointError(f"training state {path}: not a twinvae training state")
        version = int(header.get("format_version", "0"))
        if version not in (1, TRAIN_STATE_VERSION):
            raise CheckpointError(f"training state {path}: format version {version} is not one this "
                                  f"twinvae reads (1, {TRAIN_STATE_VERSION})")
        position = Position(**json.loads(header["position"]))
    except FileNotFoundError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(err if isinstance(err, CheckpointError) else
                              f"training state {path}: unreadable ({err})") from None
    if HEADER_CHECKSUM not in header and say is not None:
        say(f"warning: training state {path} has no header checksum (written before twinvae kept one): its "
            "position is range-checked only")
    _check_position(path, position, arrays.get("step"), size)
    bad = _non_finite(arrays)
    if bad:
        raise CheckpointError(f"training state {path}: {_describe(bad[0])} holds NaN or inf (the run had "
                              "diverged when it was saved)")
    weights = {k.removeprefix(MODEL_PREFIX): v for k, v in arrays.items() if k.startswith(MODEL_PREFIX)} or None
    optimizer = {k: v for k, v in arrays.items() if not k.startswith(MODEL_PREFIX)}
    if config is not None:
        _check_unit_shapes(path, config, weights, optimizer, header)
    return Unit(weights, optimizer, position, Path(path))


def _check_position(path, position: Position, adam_step, size: RunSize | None) -> None:
    """A unit's position: counts that are ints >= 0, three finite loss sums, the step Adam counted, and
    within the run's sizes (epoch at most its epochs, batch at most an epoch's steps, step = epoch x steps
    per epoch + batch)."""
    p = position
    counts = (p.epoch, p.batch, p.step)
    problem = None
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        problem = "its counts are not ints >= 0"
    elif not (isinstance(p.sums, list) and len(p.sums) == 3 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in p.sums)):
        problem = "its loss sums are not three finite numbers"
    elif p.batch > p.step:
        problem = "its batch is past its step"
    elif adam_step is not None and int(np.asarray(adam_step).reshape(-1)[0]) != p.step:
        problem = f"Adam's state counts {int(np.asarray(adam_step).reshape(-1)[0])} steps"
    elif size is not None and (p.epoch > size.epochs or p.epoch == size.epochs and p.batch > 0):
        problem = f"the run has {size.epochs} epochs"
    elif size is not None and size.steps_per_epoch is not None and (
            p.batch > size.steps_per_epoch or p.step != p.epoch * size.steps_per_epoch + p.batch):
        problem = f"the run's epochs have {size.steps_per_epoch} steps each"
    if problem:
        raise CheckpointError(f"training state {path}: its position (epoch {p.epoch}, batch {p.batch}, step "
                              f"{p.step}) cannot be this run's: {problem} (a corrupt or edited header)")


def _check_unit_shapes(path, config: VAEConfig, weights, optimizer: dict, header: dict) -> None:
    if "config" in header and VAEConfig.from_json(header["config"], complete=True) != config:
        raise CheckpointError(f"training state {path} was written for another model than the run record's")
    parts = {"Adam's exp_avg": "exp_avg.", "Adam's exp_avg_sq": "exp_avg_sq."}
    groups = {name: {k.removeprefix(p): v for k, v in optimizer.items() if k.startswith(p)}
              for name, p in parts.items()}
    for name, group in (({"the weights": weights} if weights is not None else {}) | groups).items():
        try:
            layout.check_weights(group, config)
        except layout.WeightsError as err:
            raise CheckpointError(f"training state {path}: {name} do not fit the run's model: {err}") from None
    if "step" not in optimizer:
        raise CheckpointError(f"training state {path}: no Adam step count")


def _non_finite(arrays: dict) -> list[str]:
    """The names of the float arrays that hold a NaN or an inf."""
    return [k for k, v in arrays.items() if np.issubdtype(np.asarray(v).dtype, np.floating)
            and not np.isfinite(v).all()]


def _describe(key: str) -> str:
    if key.startswith(MODEL_PREFIX):
        return f"weight {key.removeprefix(MODEL_PREFIX)!r}"
    return f"Adam's state {key!r}"


def read_unit(out: Path, config: VAEConfig, say, size: RunSize | None = None) -> Unit | None:
    """The newest readable unit of a run folder: TRAIN_STATE, else (saying why) PREVIOUS_STATE; None when
    the folder holds neither. Both present and unreadable: ValueError naming both."""
    errors = []
    for name in (TRAIN_STATE, PREVIOUS_STATE):
        try:
            unit = read_train_state(out / name, config, size, say)
        except FileNotFoundError:
            continue
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors:
            say(f"warning: {errors[0]}; resuming from the unit before it, {unit.path} (step "
                f"{unit.position.step})")
        return unit
    if errors:
        raise ValueError("no readable checkpoint to resume from: " + "; ".join(errors))
    return None


# --- the log ---------------------------------------------------------------------------------------------------

def read_log(out: Path, say=None) -> list[dict]:
    """log.jsonl's records. A torn last line (a crash mid-write) is dropped, with a warning through `say`
    (default: warnings.warn); any other unreadable line is a ValueError naming the file and line."""
    path = out / LOG
    if not path.is_file():
        return []
    lines = _read_own(path).splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number < len(lines):
                raise ValueError(f"{path}, line {number}: not a JSON record ({err}); the log is damaged") from None
            message = f"warning: {path}: its last line is torn (a crash while it was written); dropped"
            say(message) if say else warnings.warn(message, stacklevel=2)
    return records


def trim_log(out: Path, epochs: int, say) -> list[dict]:
    """Keep the records of the first `epochs` epochs (those the unit has finished), dropping later ones
    (a crash between the log write and the save) and a torn line; rewrites the file atomically where
    anything changed."""
    path = out / LOG
    text = _read_own(path) if path.is_file() else ""
    kept = [r for r in read_log(out, say) if r.get("epoch", math.inf) <= epochs]
    fresh = "".join(json.dumps(r) + "\n" for r in kept)
    if fresh != text and path.exists():
        atomic_write_bytes(path, fresh.encode())
    return kept


def append_log(out: Path, record: dict) -> None:
    """One record, flushed to the disk before the unit that follows it is saved (never through a link)."""
    path = out / LOG
    refuse_symlink(path)
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666), "a") as f:
            if os.fstat(f.fileno()).st_nlink > 1:  # another name of a file outside the run: not appended to
                raise RunFolderError(f"{path} is a hard link to another file; twinvae does not write through "
                                     "it: remove it, or choose another --out")
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise write_error(path, err) from None


def _read_own(path: Path) -> str:
    """A run file's text, opened without following a link (refused, naming it)."""
    refuse_symlink(path)
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), errors="replace") as f:
        return f.read()
