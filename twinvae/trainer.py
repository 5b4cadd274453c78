"""`twinvae train`: the training loop, framework-free. It reaches a twin through twinvae.twin.load_twin and
uses only the Twin interface, so both backends run the very same loop: the same data order and eps (from
vae_core.seeds), the same KL warm-up, the same evaluation, the same files.

The loop in named parts: `_build_step` (eager, compiled or data-parallel), `_train_epoch` (the batches of
one epoch), `_end_epoch` (evaluate, log, save); `_fit` runs them for every epoch left. What keeps the run
folder whole under crashes, kills and a second writer is twinvae.run_folder's; stopping on Ctrl-C or
SIGTERM is twinvae.stopping's."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from twinvae import __version__, allocator, launcher, run_folder
from twinvae.apps import (
    INTERPOLATION_PAIRS,
    write_interpolations,
    write_loss_curve,
    write_reconstructions,
    write_samples,
)
from twinvae.data import BINARIZE, Dataset, binarized, load_dataset
from twinvae.denoising import denoising_figures, write_denoising
from twinvae.environment import cpu_name, git_commit, versions
from twinvae.evaluation import negative_elbo
from twinvae.input_pipeline import epoch_batches
from twinvae.progress import Progress
from twinvae.run_folder import CHECKPOINT, LOG, RECORD, RESULTS, RUN_FILES, Position, RunLock, Unit
from twinvae.stopping import StopRequests, signal_name
from twinvae.timings import Timings, timings_text
from twinvae.twin import BACKENDS, DEFAULT_BACKEND, Twin, load_twin
from vae_core import checks, parallel
from vae_core.checkpoint import (
    WriteError,
    atomic_write_bytes,
    atomic_write_json,
    read_safetensors_header,
    write_checkpoint,
)
from vae_core.config import VAEConfig

LR_SCHEDULES = ("constant", "cosine")
RESUMABLE = ("epochs", "backend", "devices", "nproc")  # the options a resume may change
READBACK_EVERY = 32  # steps whose losses are read back at once: a host sync per group, not per step


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the message names the step, and the last checkpoint is intact."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: the state was saved first; the message says how to continue. `exit_code` is the
    signal's, as a shell reports it (130, 143)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    backend: str = DEFAULT_BACKEND
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None  # folder dataset only
    channels: int = 1  # folder dataset only
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": decays to 0 at the end of the last epoch
    lr_warmup: int = 0  # steps over which the learning rate rises linearly to lr
    kl_warmup: int = 0  # steps over which beta rises linearly from beta/kl_warmup to beta
    free_bits: float = 0.0  # nats per latent dimension in the training objective (never in evaluation)
    denoise: float = 0.0  # > 0: train a denoising VAE on inputs with Gaussian noise of this sigma
    binarize: str | None = None  # "dynamic" or "threshold": binarised data (twinvae.data.binarized)
    dtype: str = "float32"
    seed: int = 0
    out: str = "runs/train"
    compile: bool | None = None  # None: each backend's fastest here (torch eager, jax jit)
    checkpoint_every: int = 0  # also save every this many steps (0: at the end of each epoch only)
    devices: int = 1  # jax: data-parallel over this many devices of a mesh (0: all it sees)
    nproc: int = 1  # torch: data-parallel over this many DistributedDataParallel processes on this machine

    def __post_init__(self):
        _check_field_types(self)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint-every must be >= 0 steps, got {self.checkpoint_every}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr-schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_warmup < 0:
            raise ValueError(f"lr-warmup must be >= 0 steps, got {self.lr_warmup}")
        if self.kl_warmup < 0:
            raise ValueError(f"kl-warmup must be >= 0 steps, got {self.kl_warmup}")
        checks.check_free_bits(self.free_bits)
        checks.check_noise(self.denoise)
        if self.binarize is not None and self.binarize not in BINARIZE:
            raise ValueError(f"binarize must be one of {BINARIZE} (or none), got {self.binarize!r}")
        if self.dtype not in checks.PRECISIONS:
            raise ValueError(f"dtype must be one of {tuple(checks.PRECISIONS)}, got {self.dtype!r}")
        if self.devices < 0:
            raise ValueError(f"devices must be a number >= 1, or 0 for all; got {self.devices}")
        if self.nproc < 1:
            raise ValueError(f"nproc must be at least 1 (processes), got {self.nproc}")
        if self.devices != 1 and self.backend != "jax":
            raise ValueError("devices is JAX's data parallelism (one process, a mesh of devices); torch's is "
                             "nproc (one process per device), or torchrun")
        if self.nproc != 1 and self.backend != "torch":
            raise ValueError("nproc is torch's data parallelism (DistributedDataParallel processes); JAX's is "
                             "devices (a mesh in one process)")
        if self.nproc > 1:
            parallel.check_divisible_batch(self.batch_size, self.nproc, "processes")
            if self.free_bits > 0:
                raise ValueError("free bits clamp the KL's mean over the global batch per latent dimension, "
                                 "which a DistributedDataParallel process does not see: not with nproc > 1 "
                                 "(JAX's devices support it)")

    @property
    def param_dtype(self) -> str:
        """The parameters' and the data's dtype: float32 for "bfloat16" (mixed precision)."""
        return checks.PRECISIONS[self.dtype][0]

    @property
    def compute_dtype(self) -> str | None:
        return checks.PRECISIONS[self.dtype][1]


FIELD_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}


def _check_field_types(options: TrainOptions) -> None:
    """Each option of the type its annotation names (a run.json edited by hand, a wrong JSON type): a
    TypeError naming the option, before any comparison fails on it."""
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        allowed = tuple(t for name in field.type.split(" | ") for t in FIELD_TYPES[name])
        if not isinstance(value, allowed) or isinstance(value, bool) and bool not in allowed:
            raise TypeError(f"option {field.name} must be {field.type.replace(' | ', ' or ')}, got {value!r}")


def beta_at(step: int, beta: float, warmup: int) -> float:
    """KL weight of training step `step` (0-based): linear warm-up over `warmup` steps, then beta."""
    return beta if warmup <= 0 else beta * min(1.0, (step + 1) / warmup)


def learning_rate_at(step: int, options: TrainOptions, total_steps: int) -> float:
    """Learning rate of training step `step` (0-based): a linear warm-up over options.lr_warmup steps
    (from lr/lr_warmup up to lr), then constant, or a cosine from lr down to 0 at step total_steps."""
    if step < options.lr_warmup:
        return options.lr * (step + 1) / options.lr_warmup
    if options.lr_schedule == "constant":
        return options.lr
    progress = min(1.0, (step - options.lr_warmup) / max(1, total_steps - options.lr_warmup))
    return options.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(config: VAEConfig, options: TrainOptions, progress: bool = True, log=None,
          overwrite: bool = False) -> dict | None:
    """Train, evaluate each epoch, write the run folder (log, checkpoint, training state, run record, loss
    curve, reconstructions, prior samples, interpolations); returns the last epoch's record. Data-parallel
    with options.devices (JAX) or options.nproc / torchrun (torch): only rank 0 evaluates and writes.
    `log` takes each epoch's line (default: stdout, above the progress bar). A folder that holds a run is
    refused unless `overwrite`, which deletes that run's files first."""
    out, say = Path(options.out), log or print
    # before any work, and before the lock file is made; checked again under the lock
    run_folder.clearable(out) if overwrite else _refuse_existing_run(out)
    if _launches(options):
        with _writer_lock(out, rank=0):
            _start_folder(out, overwrite, say)
            return _launch(options, train, (config, options, progress))
    twin = load_twin(options.backend, float64=options.param_dtype == "float64")
    with _workers(twin, options) as (rank, world):
        return _train_here(twin, config, options, rank, world, progress, log, overwrite)


def _train_here(twin: Twin, config: VAEConfig, options: TrainOptions, rank: int, world: int, progress: bool,
                log, overwrite: bool) -> dict | None:
    """train's work in this process, one of `world` (the state dies with this frame, before the group)."""
    out = Path(options.out)
    dataset, n_batches = _data(config, options)
    if config.likelihood == "discretized_logistic":  # its bins are the data's levels
        if dataset.levels < 2:
            raise ValueError(f"the discretized logistic is a mass on the data's grey levels, and the "
                             f"{options.dataset} images lie on no grid of levels (float or 16-bit images resized "
                             "off it): choose another --likelihood")
        config = dataclasses.replace(config, levels=dataset.levels)
    with _writer_lock(out, rank):
        model = twin.init_model(config, options.seed, options.param_dtype, compute_dtype=options.compute_dtype)
        if rank == 0:
            _start_folder(out, overwrite, log or print)
            atomic_write_json(out / RECORD, {**run_record(config, options, model), "files": list(RUN_FILES),
                                             "steps_per_epoch": n_batches})
        state = twin.create_train_state(model, learning_rate=options.lr, free_bits=options.free_bits)
        run = Run(twin, config, options, dataset, n_batches, rank, world)
        return _fit(run, state, Position(), progress, log)


def resume(run_dir, backend: str | None = None, epochs: int | None = None, progress: bool = True,
           log=None, devices: int | None = None, nproc: int | None = None) -> dict | None:
    """Continue a run from its last complete checkpoint unit, in the same backend (bitwise the same as an
    uninterrupted run) or the other one (the same optimizer state; equal within float32 rounding); on as
    many devices or processes as it had, or as given (the same function, to rounding). A run that saved
    no unit starts again from its beginning; a finished run whose end-of-run files a crash cut short gets
    them written."""
    out = Path(run_dir)
    config, stored = read_run_record(out)
    switched = backend is not None and backend != stored.backend  # the other engine: its own parallelism
    options = dataclasses.replace(stored, out=str(out), backend=backend or stored.backend,
                                  epochs=stored.epochs if epochs is None else epochs,
                                  devices=devices if devices is not None else 1 if switched else stored.devices,
                                  nproc=nproc if nproc is not None else 1 if switched else stored.nproc)
    say = log or print
    if _launches(options):
        with _writer_lock(out, rank=0):
            _check_resumable(out, config, options, say)
            return _launch(options, resume, (str(out), options.backend, options.epochs, progress, None,
                                             options.devices, options.nproc))
    twin = load_twin(options.backend, float64=options.param_dtype == "float64")
    with _workers(twin, options) as (rank, world):
        return _resume_here(twin, config, options, rank, world, progress, log)


def _resume_here(twin: Twin, config: VAEConfig, options: TrainOptions, rank: int, world: int, progress: bool,
                 log) -> dict | None:
    """resume's work in this process, one of `world` (the state dies with this frame, before the group)."""
    out, say = Path(options.out), log or print
    with _writer_lock(out, rank):
        unit = _check_resumable(out, config, options, say, writer=rank == 0)
        dataset, n_batches = _data(config, options)
        run = Run(twin, config, options, dataset, n_batches, rank, world)
        state, position = _restore(run, unit)
        if rank == 0:
            _record_resume(out, options, position, state.model)
            say(f"resuming {out} at epoch {position.epoch + 1}, step {position.step}, with {options.backend}"
                if unit else f"{out} holds no complete checkpoint: training it from its beginning")
        return _fit(run, state, position, progress, log)


def _check_resumable(out: Path, config: VAEConfig, options: TrainOptions, say,
                     writer: bool = True) -> Unit | None:
    """The unit to resume from (None: from the start); refuses a run that is done, or a folder with links
    where the run keeps its files. The writer (rank 0) tidies the folder first: temp files removed, the log
    trimmed to the unit (a log that is gone is said to be)."""
    say = say if writer else lambda *args: None
    run_folder.check_no_links(out)
    unit = run_folder.read_unit(out, config, say, _run_size(out, options))
    position = unit.position if unit else Position()
    if position.epoch > options.epochs:
        raise ValueError(f"{out} has trained {position.epoch} epochs, more than --epochs {options.epochs}")
    if position.epoch == options.epochs and _finished_at(out) == position.step:
        raise ValueError(f"{out} already finished {position.epoch} epochs; pass a larger --epochs to go on")
    if writer:
        run_folder.remove_leftovers(out, say)
        if position.epoch and not (out / LOG).exists():
            say(f"warning: {out / LOG} is missing: the records of epochs 1 to {position.epoch} are lost, and the "
                f"log will hold the epochs from {position.epoch + 1} on only")
        run_folder.trim_log(out, position.epoch, say)
    return unit


def _run_size(out: Path, options: TrainOptions) -> run_folder.RunSize:
    """The positions the run record allows: the most epochs it was given (or this resume gives), and the
    steps of an epoch where it records them (read_run_record checked the record)."""
    record = json.loads((out / RECORD).read_text())
    steps = record.get("steps_per_epoch")
    return run_folder.RunSize(max(options.epochs, record["options"]["epochs"]),
                              steps if isinstance(steps, int) and not isinstance(steps, bool) else None)


def _restore(run: Run, unit: Unit | None):
    """(train state, position) of a unit: its weights and Adam's state (a version-1 unit's weights are
    model.safetensors, which must be at its step); a fresh state at step 0 without one. model.safetensors
    is rewritten from the unit where a crash left it at another step."""
    twin, options, config = run.twin, run.options, run.config
    if unit is not None and unit.weights is None:
        model, saved_config, metadata = twin.load_checkpoint(run.out / CHECKPOINT, dtype=options.param_dtype,
                                                             compute_dtype=options.compute_dtype)
        if saved_config != config or metadata.get("step") != unit.position.step:
            raise ValueError(f"{run.out}: the checkpoint (step {metadata.get('step')}) and the training state "
                             f"(step {unit.position.step}) do not belong together")
    else:
        model = twin.init_model(config, options.seed, options.param_dtype, compute_dtype=options.compute_dtype)
        if unit is not None:
            model = twin.import_weights(model, unit.weights)
            if run.writer and _checkpoint_step(run.out / CHECKPOINT) != unit.position.step:
                _write_model(run, unit.weights, unit.position)
    state = twin.create_train_state(model, learning_rate=options.lr, free_bits=options.free_bits)
    if unit is None:
        return state, Position()
    return twin.import_optimizer_state(state, unit.optimizer), unit.position


def _checkpoint_step(path: Path) -> int | None:
    """The step in a checkpoint's header, or None where it has none (or no readable header)."""
    try:
        info = read_safetensors_header(path, path.read_bytes()).get("__metadata__") or {}
        return json.loads(info.get("metadata", "{}")).get("step")
    except (OSError, ValueError, AttributeError):
        return None


def read_run_record(out: Path) -> tuple[VAEConfig, TrainOptions]:
    """The config and options a run folder's run.json records; ValueError names the folder and what is wrong
    (a file given for the folder, no record, a field of the wrong type)."""
    if out.is_file():
        raise ValueError(f"--resume takes a run folder; {out} is a file" + (
            f" (the run folder it is in is {out.parent})" if (out.parent / RECORD).is_file() else ""))
    if not out.is_dir():
        raise ValueError(f"{out} is not a folder")
    run_folder.check_no_links(out)
    try:
        record = json.loads((out / RECORD).read_text())
        return VAEConfig.from_dict(record["config"], complete=True), TrainOptions(**record["options"])
    except FileNotFoundError:
        raise ValueError(f"{out} holds no run to resume (no run.json): start one there with twinvae train "
                         f"--out {out}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{out}/run.json is not a twinvae run record: {err}") from None


def _record_resume(out: Path, options: TrainOptions, position: Position, model) -> None:
    """run.json takes the options in force (the ones a resume may change), the forms the model now runs,
    and a line for this resume."""
    record = json.loads((out / RECORD).read_text())
    record["forms"] = model_forms(model)
    changed = {k: getattr(options, k) for k in RESUMABLE if record["options"][k] != getattr(options, k)}
    record["options"].update({k: getattr(options, k) for k in RESUMABLE})
    record.setdefault("resumes", []).append({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": sys.argv,
                                             "step": position.step, "changed": changed})
    record.pop("finished_step", None)
    record.pop("timings", None)  # the finished process's: this one writes its own at the end
    atomic_write_json(out / RECORD, record)


def _finished_at(out: Path) -> int | None:
    try:
        return json.loads((out / RECORD).read_text()).get("finished_step")
    except (OSError, ValueError):
        return None


def _refuse_existing_run(out: Path) -> None:
    """A new run's folder holds no run, and none of a run's files that no run record claims (they would be
    overwritten); both refusals say what is there and what to do."""
    if not out.is_dir():
        if out.exists():
            raise ValueError(f"--out {out} is a file; a run writes a folder: name another path")
        return
    run_folder.check_no_links(out)
    foreign = run_folder.foreign_files(out)
    if foreign:
        raise ValueError(f"{out} holds {', '.join(foreign)} but no run record (run.json): files a run would "
                         "overwrite, not a run's; choose another --out, or --overwrite to delete them (if the "
                         "folder holds nothing else)")
    if run_folder.has_unit(out) or (out / CHECKPOINT).exists() or (out / LOG).exists():
        raise ValueError(f"{out} already holds a run; choose another --out, continue it with --resume {out}, "
                         "or start it again with --overwrite (which deletes it)")
    if run_folder.holds_record(out):
        raise ValueError(f"{out} holds a run that stopped before its first checkpoint: resume it from its "
                         f"beginning with --resume {out}, or start it again with --overwrite")


def _start_folder(out: Path, overwrite: bool, say) -> None:
    """Under the lock: the folder emptied of a run (overwrite: only the files its record lists) or checked to
    hold none; the temp files of interrupted writes of the run's files removed, each named."""
    if overwrite:
        run_folder.clear(out, say)
    _refuse_existing_run(out)
    run_folder.remove_leftovers(out, say)


@contextlib.contextmanager
def _writer_lock(out: Path, rank: int):
    """The run folder's lock, held by its one writer (rank 0), unless the launcher that started this
    process holds it for its workers."""
    if rank != 0 or os.environ.get(launcher.LOCK_OWNER) == str(os.getppid()):
        yield
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the run folder {out}: {err.strerror}") from None
    with RunLock(out):
        yield


def _launch(options: TrainOptions, function, args) -> dict | None:
    """Run `function(*args)` in options.nproc torch workers; their interruption becomes this process's."""
    try:
        launcher.launch_workers(_worker, (function, args), options.nproc)
    except launcher.WorkersStopped as err:
        raise _interrupted(Path(options.out), err.exit_code) from None
    return _last_record(Path(options.out))


def _launches(options: TrainOptions) -> bool:
    """Whether this process starts options.nproc torch workers (not one of them, nor under torchrun)."""
    return options.backend == "torch" and options.nproc > 1 and "WORLD_SIZE" not in os.environ


def _worker(function, args) -> None:
    """One process of a multi-process run (launcher.launch_workers); a stop on request exits with the
    signal's code, which the launcher reads."""
    try:
        function(*args)
    except TrainingInterrupted as err:
        sys.exit(err.exit_code)


@contextlib.contextmanager
def _workers(twin: Twin, options: TrainOptions):
    """(rank, world size) of this process among the run's workers (_join_workers); at the end it leaves
    their group, after waiting for the others when its part ended well (twin.distributed.shutdown).
    Under torchrun too, which leaves that to the program."""
    rank, world = _join_workers(twin, options)
    if world == 1:
        yield rank, world
        return
    ended_well = False
    try:
        yield rank, world
        ended_well = True
    finally:
        twin.distributed.shutdown(wait_for_peers=ended_well)


def _join_workers(twin: Twin, options: TrainOptions) -> tuple[int, int]:
    """(rank, world size) of this process. torch under torchrun or launch_workers: the process group,
    joined here (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT in the environment). JAX on several hosts:
    jax.distributed, joined here when JAX_COORDINATOR_ADDRESS (process 0's host:port), JAX_NUM_PROCESSES
    and JAX_PROCESS_ID are set. Otherwise (0, 1)."""
    if options.backend == "jax" and os.environ.get("JAX_COORDINATOR_ADDRESS"):
        if options.devices != 0:
            raise ValueError("a multi-host JAX run shards each batch over every host's devices: pass "
                             "--devices all")
        try:
            hosts, index = int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"])
        except (KeyError, ValueError):
            raise ValueError("JAX_COORDINATOR_ADDRESS is set: set JAX_NUM_PROCESSES (the number of hosts) and "
                             "JAX_PROCESS_ID (this host's index, 0-based) too") from None
        return twin.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], hosts, index)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if options.backend != "torch":
        raise ValueError(f"WORLD_SIZE={world} is set (torchrun?) but the backend is {options.backend}: JAX runs "
                         "data-parallel in one process, with devices")
    if options.nproc not in (1, world):
        raise ValueError(f"nproc is {options.nproc} but the launcher started {world} processes")
    parallel.check_divisible_batch(options.batch_size, world, "processes")
    return twin.distributed.initialize()


def _last_record(out: Path) -> dict | None:
    records = run_folder.read_log(out)
    return records[-1] if records else None


def _data(config: VAEConfig, options: TrainOptions) -> tuple[Dataset, int]:
    """The dataset, checked up front against everything the run will ask of it: the model's image
    shape in both splits, at least one batch, and the test images that evaluation and the end-of-run
    pictures take."""
    dataset = load_dataset(options.dataset, options.data_dir, image_size=options.image_size,
                           channels=options.channels, seed=0)
    if options.binarize:
        dataset = binarized(dataset, options.binarize)
    for split in ("train", "test"):
        shape = tuple(int(n) for n in getattr(dataset, f"{split}_x").shape[1:])
        if shape != config.image_shape:
            raise ValueError(f"the {options.dataset} {split} images are {shape} (C, H, W), the model takes "
                             f"{config.image_shape}")
    if config.num_classes:
        _check_classes(dataset, config.num_classes, options.dataset)
    n_batches = len(dataset.train_x) // options.batch_size
    if n_batches < 1:
        raise ValueError(f"batch size {options.batch_size} is larger than the {len(dataset.train_x)} training "
                         "images")
    if len(dataset.test_x) < 2:
        raise ValueError(f"the {options.dataset} dataset has {len(dataset.test_x)} test image(s): evaluation and "
                         "the interpolation pictures need at least 2 (give the folder more images)")
    return dataset, n_batches


def _check_classes(dataset: Dataset, num_classes: int, name: str) -> None:
    """A class-conditional model's data: labels in both splits, every one a class of the model."""
    if dataset.train_y is None or dataset.test_y is None:
        raise ValueError(f"a class-conditional model (num_classes={num_classes}) needs labelled data; the {name} "
                         "dataset has no labels")
    top = int(max(dataset.train_y.max(), dataset.test_y.max()))
    if top >= num_classes:
        raise ValueError(f"the {name} labels run from 0 to {top}: a conditional model of them needs num_classes "
                         f"{top + 1} (--num-classes {top + 1}), not {num_classes}")


@dataclasses.dataclass(frozen=True)
class Run:
    """What one process of a run trains with: the twin, the model's config, the options, the data, and
    this process's place among the workers (only rank 0 evaluates, logs and writes)."""
    twin: Twin
    config: VAEConfig
    options: TrainOptions
    dataset: Dataset
    n_batches: int
    rank: int = 0
    world: int = 1
    timings: Timings = dataclasses.field(default_factory=Timings)  # this process's, from its data and model

    @property
    def out(self) -> Path:
        return Path(self.options.out)

    @property
    def writer(self) -> bool:
        return self.rank == 0

    @property
    def total_steps(self) -> int:
        return self.options.epochs * self.n_batches


def _fit(run: Run, state, position: Position, progress: bool, log) -> dict | None:
    """Every epoch left from `position`, then the end-of-run files; returns the last epoch's record (None
    on ranks other than 0)."""
    options = run.options
    state, step_fn = _build_step(run, state)
    bar = Progress(run.total_steps, enabled=progress and run.writer)
    bar.advance(position.epoch * run.n_batches + position.batch)
    say = log or bar.write
    with StopRequests() as stop, _writes_of(run):
        try:
            for epoch in range(position.epoch, options.epochs):
                start = time.perf_counter()
                state, position = _train_epoch(run, state, step_fn, epoch, position, bar, stop)
                if run.writer:
                    say(_epoch_line(_end_epoch(run, state, position, time.perf_counter() - start)))
                position = Position(epoch + 1, 0, position.step)
        finally:
            bar.close()
    if not run.writer:
        return None
    with _writes_of(run):
        return _finish(run, state, position, say)


@contextlib.contextmanager
def _writes_of(run: Run):
    """A write of the run folder that failed (a full disk, a lost mount): an error naming the file (the
    writes' WriteError), saying that the last saved state is intact and how to go on from it."""
    try:
        yield
    except WriteError as err:
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        hint = f" Free some space, then continue with twinvae train --resume {run.out}" if full else ""
        raise WriteError(err.errno, f"{err}. {_last_good(run)}{hint}") from None


def _finish(run: Run, state, position: Position, say) -> dict:
    """The end-of-run files: pictures, results.md, and in run.json the finished mark and this process's
    timings (twinvae.timings)."""
    options = run.options
    records = run_folder.read_log(run.out, say)
    with run.timings.measure("pictures"):
        write_run_pictures(run.twin, state.model, run.dataset, run.out, records, options.seed, options.denoise)
    timings = run.timings.record()
    # this process's record: a resumed run's command, backend and epochs, not the first process's
    markdown = results_markdown({**run_record(run.config, options, state.model), "timings": timings}, records)
    atomic_write_bytes(run.out / RESULTS, markdown.encode())
    record = json.loads((run.out / RECORD).read_text())
    atomic_write_json(run.out / RECORD, {**record, "finished_step": position.step,  # what resume reads
                                         "timings": timings})
    return records[-1]


def _build_step(run: Run, state):
    """(state, step function): the twin's eager or compiled step, or its data-parallel one over the
    workers or devices (which then holds the replicated state). Each takes the checked dataset's batches
    unchecked."""
    options = run.options
    compiled = options.compile if options.compile is not None else options.backend == "jax"
    if run.world == 1 and options.devices == 1:
        if compiled:
            return state, run.twin.compile_train_step(state, check_inputs=False)
        return state, functools.partial(run.twin.train_step, check_inputs=False)
    dist = run.twin.distributed  # every process takes the same global batch
    state = dist.replicate(state, run.world if options.backend == "torch" else options.devices or None)
    if options.backend == "jax":
        parallel.check_divisible_batch(options.batch_size, state.mesh.devices.size, "devices")
        return state, dist.compile_train_step(state, check_inputs=False)
    return state, dist.compile_train_step(state, "default" if compiled else None, check_inputs=False)


def _train_epoch(run: Run, state, step_fn, epoch: int, position: Position, bar: Progress, stop):
    """The batches of one epoch from `position` on; returns the state and the position at its end (the
    epoch's loss sums in it). The steps' losses stay on the device and are read back READBACK_EVERY steps
    at a time, and before any save (`_read_back`): a non-finite loss stops the run with TrainingDiverged at
    the step where it appeared, before anything after it is saved. A stop request saves and stops with
    TrainingInterrupted at the next step (every worker of a multi-process run at the same step)."""
    options = run.options
    sums, step, pending = np.array(position.sums), position.step, []  # pending: (step, losses) not read back
    batches = epoch_batches(run, state.model, epoch, position.batch, step)  # model: the inputs' dtype, device
    for b in range(position.batch, run.n_batches):
        with run.timings.measure("input"):
            inputs, eps, labels, target = next(batches)
        with run.timings.measure("step"):
            state, losses = step_fn(state, inputs, eps, beta_at(step, run.config.beta, options.kl_warmup),
                                    labels=labels, target=target,
                                    learning_rate=learning_rate_at(step, options, run.total_steps))
        pending.append((step, losses))
        step += 1
        run.timings.steps += 1
        bar.advance()
        stopping = stop.requested if run.world == 1 else run.twin.distributed.any_process(stop.requested)
        saving = run.writer and options.checkpoint_every and step % options.checkpoint_every == 0
        if stopping or saving or len(pending) == READBACK_EVERY or b + 1 == run.n_batches:
            _read_back(run, pending, sums, epoch)
            bar.stage(f"epoch {epoch + 1}/{options.epochs} loss {sums[0] / (b + 1):.3f}")
        here = Position(epoch, b + 1, step, sums.tolist())
        if stopping:
            if run.writer:
                _save(run, state, here)
            raise _interrupted(run.out, stop.exit_code, step)
        if saving:
            _save(run, state, here)
    return state, Position(epoch, run.n_batches, step, sums.tolist())


def _read_back(run: Run, pending: list, sums: np.ndarray, epoch: int) -> None:
    """The pending steps' losses, read back to the host and added to `sums` in step order (so the sums are
    bitwise those of a read-back after every step); the first non-finite one is TrainingDiverged, naming
    its step. Empties `pending`."""
    with run.timings.measure("readback"):
        rows = [(step, [float(run.twin.to_numpy(v)) for v in losses]) for step, losses in pending]
    pending.clear()
    for step, values in rows:
        if not all(math.isfinite(v) for v in values):
            raise TrainingDiverged(f"the loss became {values[0]} at step {step + 1} (epoch {epoch + 1}); "
                                   f"stopped. {_last_good(run)}")
        sums += values


def _interrupted(out: Path, exit_code: int, step: int | None = None) -> TrainingInterrupted:
    step = _checkpoint_step(out / CHECKPOINT) if step is None else step
    return TrainingInterrupted(f"stopped by {signal_name(exit_code)} at step {step}; the state is saved: "
                               f"continue with twinvae train --resume {out}", exit_code)


def _last_good(run: Run) -> str:
    step = _checkpoint_step(run.out / CHECKPOINT) if run.writer else None
    return (f"The last good checkpoint ({run.out}, step {step}) is intact: --resume {run.out} continues from "
            "it." if step is not None else "No checkpoint was written yet.")


def _end_epoch(run: Run, state, position: Position, seconds: float) -> dict:
    """Rank 0 at an epoch's end: evaluate on the test set, append the epoch's record to log.jsonl, save
    the model and the training state at the start of the next epoch. Returns the record."""
    options, step = run.options, position.step
    with run.timings.measure("evaluation"):
        test = negative_elbo(run.twin, state.model, run.dataset.test_x, options.seed, options.param_dtype,
                             run.dataset.test_y)
    train_means = (np.array(position.sums) / run.n_batches).tolist()
    record = {"epoch": position.epoch + 1, "step": step, "seconds": round(seconds, 3),
              "beta": beta_at(step - 1, run.config.beta, options.kl_warmup),
              "lr": learning_rate_at(step - 1, options, run.total_steps),
              "train": dict(zip(("total", "reconstruction", "kl"), train_means)), "test": test}
    if options.denoise:
        with run.timings.measure("evaluation"):
            record["denoising"] = denoising_figures(run.twin, state.model, run.dataset.test_x, options.denoise,
                                                    options.seed, run.dataset.test_y)
    with run.timings.measure("saving"):
        run_folder.append_log(run.out, record)  # a crash before the save below: resume drops this record
    _save(run, state, Position(position.epoch + 1, 0, step), test["total"])
    return record


def _epoch_line(record: dict) -> str:
    psnr = record.get("denoising")
    line = (f"epoch {record['epoch']}: train {record['train']['total']:.3f}, test {record['test']['total']:.3f} "
            f"nats/image ({record['seconds']:.1f}s)")
    return line + (f"; PSNR noisy {psnr['psnr_noisy']:.2f} dB, denoised {psnr['psnr_denoised']:.2f} dB"
                   if psnr else "")


def _save(run: Run, state, position: Position, test_loss: float | None = None) -> None:
    """The checkpoint unit (run_folder.save_unit: one atomic file), then model.safetensors from the same
    weights. Non-finite values are never saved: TrainingDiverged, the last good unit left as it was."""
    with run.timings.measure("saving"):
        weights = run.twin.export_weights(state.model)
        try:
            run_folder.save_unit(run.out, weights, run.twin.export_optimizer_state(state), position, run.config)
        except ValueError as err:
            raise TrainingDiverged(f"{err}: the run diverged; not saved. {_last_good(run)}") from None
        _write_model(run, weights, position, test_loss)


def _write_model(run: Run, weights: dict, position: Position, test_loss: float | None = None) -> None:
    options = run.options
    write_checkpoint(run.out / CHECKPOINT, weights, run.config, {
        "dataset": options.dataset, "epoch": position.epoch, "step": position.step, "backend": options.backend,
        "seed": options.seed, "test_loss": test_loss, "denoise": options.denoise,
        "binarize": options.binarize, **_class_names(run)})


def _class_names(run: Run) -> dict:
    """A conditional model's class names, in the checkpoint's metadata for `twinvae sample --label NAME`."""
    return {"classes": list(run.dataset.classes)} if run.config.num_classes and run.dataset.classes else {}


def write_run_pictures(twin: Twin, model, data: Dataset, out, records: list[dict], seed: int = 0,
                       denoise: float = 0.0) -> list[Path]:
    """What a training run leaves: loss curve, reconstructions, prior samples, interpolations, and for a
    denoising run test images before and after denoising."""
    written = [write_loss_curve(records, Path(out) / "loss.png"),
               write_reconstructions(twin, model, data, out),
               write_samples(twin, model, out, seed=seed),
               *write_interpolations(twin, model, data, out, min(INTERPOLATION_PAIRS, len(data.test_x) // 2),
                                     seed=seed),
               write_denoising(twin, model, data.test_x, out, denoise, seed, labels=data.test_y)
               if denoise else None]
    return [p for p in written if p is not None]


def results_markdown(run: dict, records: list[dict]) -> str:
    """A run's results.md: what ran, where, and each epoch's losses (nats per image; test: beta = 1, the
    'eval' stream's eps), the file the docs show through `python docs/refresh.py`."""
    argv = run["command"]
    command = " ".join(["twinvae", *argv[1:]] if argv and argv[0].endswith(("twinvae", "__main__.py")) else argv)
    options = run["options"]
    lines = [f"Command: `{command}`; {run['date']}, twinvae {run['twinvae']}, commit {run['git_commit'] or '-'}; "
             f"{run.get('cpu', '')}, {', '.join(f'{k} {v}' for k, v in run['versions'].items())}"
             + (f"; allocator: {run['allocator']}" if "allocator" in run else "") + ".", "",
             f"Backend {options['backend']}, dataset {options['dataset']}, seed {options['seed']}, batch "
             f"{options['batch_size']}, {options['dtype']}; config `{json.dumps(run['config'])}`"
             + (f"; forms {_forms_text(run['forms'])}" if "forms" in run else "") + ".", ""]
    denoising = any("denoising" in r for r in records)
    header = ["epoch", "train total", "train reconstruction", "train KL", "test total", "test reconstruction",
              "test KL", "seconds"] + (["PSNR noisy (dB)", "PSNR denoised (dB)"] if denoising else [])
    lines += [timings_text(run["timings"]), ""] if "timings" in run else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        cells = [str(r["epoch"]), *(f"{r[split][term]:.3f}" for split in ("train", "test")
                                    for term in ("total", "reconstruction", "kl")), f"{r['seconds']:.1f}"]
        if denoising:
            cells += [f"{r['denoising'][k]:.2f}" for k in ("psnr_noisy", "psnr_denoised")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _forms_text(forms: dict) -> str:
    """A run record's forms as results.md shows them: each form, then any compiler options as name="value"."""
    options = forms.get("compiler_options") or {}
    return ", ".join([*(f"{k} {v}" for k, v in forms.items() if k != "compiler_options"),
                      *([f"compiler options {' '.join(f'{k}={json.dumps(v)}' for k, v in options.items())}"]
                        if options else [])])


def model_forms(model) -> dict:
    """How a model computes: its layer forms, its memory format and its twin's compiler options (what a
    run records)."""
    return {**model.forms, "memory_format": model.memory_format, "compiler_options": model.compiler_options}


def run_record(config: VAEConfig, options: TrainOptions, model=None) -> dict:
    """What the run folder records: config, options, the model's forms, command line, versions, git commit,
    machine. Call it after the twin is imported: the versions are those of the frameworks this process
    loaded."""
    return {"config": config.to_dict(), "options": dataclasses.asdict(options),
            **({"forms": model_forms(model)} if model is not None else {}), "command": sys.argv,
            "twinvae": __version__, "versions": versions(), "allocator": allocator.setting(),
            "python": platform.python_version(),
            "git_commit": git_commit(), "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
