"""`twinvae train`: the training loop, framework-free. It reaches a twin through twinvae.twin.load_twin and
uses only the Twin interface, so both backends run the very same loop: the same data order and eps (from
vae_core.seeds), the same KL warm-up, the same evaluation, the same files.

The loop in named parts: `_build_step` (eager, compiled or data-parallel), `_train_epoch` (the batches of
one epoch), `_end_epoch` (evaluate, log, save); `_fit` runs them for every epoch left."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from twinvae import __version__, launcher
from twinvae.apps import write_interpolations, write_loss_curve, write_reconstructions, write_samples
from twinvae.data import Dataset, load_dataset
from twinvae.denoising import add_noise, denoising_figures, write_denoising
from twinvae.environment import cpu_name, git_commit, versions
from twinvae.evaluation import negative_elbo
from twinvae.progress import Progress
from twinvae.twin import BACKENDS, DEFAULT_BACKEND, Twin, load_twin
from vae_core import checks, parallel, seeds
from vae_core.checkpoint import CheckpointError, atomic_write_bytes, atomic_write_json, read_safetensors_header
from vae_core.config import VAEConfig

LR_SCHEDULES = ("constant", "cosine")
CHECKPOINT = "model.safetensors"
TRAIN_STATE = "train_state.safetensors"
TRAIN_STATE_FORMAT = "twinvae-train-state"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the message names the step, and the last checkpoint is intact."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C: the state was saved first; the message says how to continue."""


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
    dtype: str = "float32"
    seed: int = 0
    out: str = "runs/train"
    compile: bool | None = None  # None: each backend's fastest here (torch eager, jax jit)
    checkpoint_every: int = 0  # also save every this many steps (0: at the end of each epoch only)
    devices: int = 1  # jax: data-parallel over this many devices of a mesh (0: all it sees)
    nproc: int = 1  # torch: data-parallel over this many DistributedDataParallel processes on this machine

    def __post_init__(self):
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
        if self.dtype not in checks.PRECISIONS:
            raise ValueError(f"dtype must be one of {tuple(checks.PRECISIONS)}, got {self.dtype!r}")
        if self.devices < 0 or self.nproc < 1:
            raise ValueError(f"devices must be >= 0 (0: all) and nproc >= 1, got {self.devices}, {self.nproc}")
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


def train(config: VAEConfig, options: TrainOptions, progress: bool = True, log=None) -> dict | None:
    """Train, evaluate each epoch, write the run folder (log, checkpoint, training state, run record, loss
    curve, reconstructions, prior samples, interpolations); returns the last epoch's record. Data-parallel
    with options.devices (JAX) or options.nproc / torchrun (torch): only rank 0 evaluates and writes.
    `log` takes each epoch's line (default: stdout, above the progress bar)."""
    out = Path(options.out)
    if _launches(options):
        _refuse_existing_run(out)
        launcher.launch_workers(_worker, (options.backend, train, (config, options, progress)), options.nproc)
        return _last_record(out)
    twin = load_twin(options.backend)
    rank, world = _join_workers(twin, options)
    if rank == 0:
        _refuse_existing_run(out)
    dataset, n_batches = _data(config, options)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "run.json", run_record(config, options))
    model = twin.init_model(config, options.seed, options.param_dtype, compute_dtype=options.compute_dtype)
    state = twin.create_train_state(model, learning_rate=options.lr, free_bits=options.free_bits)
    run = Run(twin, config, options, dataset, n_batches, rank, world)
    return _fit(run, state, Position(), progress, log)


def resume(run_dir, backend: str | None = None, epochs: int | None = None, progress: bool = True,
           log=None, devices: int | None = None, nproc: int | None = None) -> dict | None:
    """Continue a run from its last saved state, in the same backend (bitwise the same as an uninterrupted
    run) or the other one (the same optimizer state; equal within float32 rounding); on as many devices
    or processes as it had, or as given (the same function, to rounding)."""
    out = Path(run_dir)
    config, stored = read_run_record(out)
    switched = backend is not None and backend != stored.backend  # the other engine: its own parallelism
    options = dataclasses.replace(stored, out=str(out), backend=backend or stored.backend,
                                  epochs=stored.epochs if epochs is None else epochs,
                                  devices=devices if devices is not None else 1 if switched else stored.devices,
                                  nproc=nproc if nproc is not None else 1 if switched else stored.nproc)
    if _launches(options):
        launcher.launch_workers(_worker, (options.backend, resume, (str(out), options.backend, options.epochs,
                                                                    progress, None, options.devices,
                                                                    options.nproc)), options.nproc)
        return _last_record(out)
    arrays, position = read_train_state(out / TRAIN_STATE)
    twin = load_twin(options.backend)
    rank, world = _join_workers(twin, options)
    model, saved_config, metadata = twin.load_checkpoint(out / CHECKPOINT, dtype=options.param_dtype,
                                                         compute_dtype=options.compute_dtype)
    if saved_config != config or metadata.get("step") != position.step:
        raise ValueError(f"{out}: the checkpoint (step {metadata.get('step')}) and the training state (step "
                         f"{position.step}) do not belong together")
    if position.epoch >= options.epochs:
        raise ValueError(f"{out} already finished {position.epoch} epochs; pass a larger --epochs to go on")
    dataset, n_batches = _data(config, options)
    state = twin.create_train_state(model, learning_rate=options.lr, free_bits=options.free_bits)
    state = twin.import_optimizer_state(state, arrays)
    if rank == 0:
        (log or print)(f"resuming {out} at epoch {position.epoch + 1}, step {position.step}, with "
                       f"{options.backend}")
    return _fit(Run(twin, config, options, dataset, n_batches, rank, world), state, position, progress, log)


def read_run_record(out: Path) -> tuple[VAEConfig, TrainOptions]:
    """The config and options a run folder's run.json records."""
    try:
        record = json.loads((out / "run.json").read_text())
        return VAEConfig.from_dict(record["config"], complete=True), TrainOptions(**record["options"])
    except FileNotFoundError:
        raise ValueError(f"{out} holds no run to resume (no run.json)") from None
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{out}/run.json is not a twinvae run record: {err}") from None


def _refuse_existing_run(out: Path) -> None:
    if (out / "log.jsonl").exists() or (out / CHECKPOINT).exists():
        raise ValueError(f"{out} already holds a run (log.jsonl / {CHECKPOINT}); choose another --out, or "
                         f"continue it with --resume {out}")


def _launches(options: TrainOptions) -> bool:
    """Whether this process starts options.nproc torch workers (not one of them, nor under torchrun)."""
    return options.backend == "torch" and options.nproc > 1 and "WORLD_SIZE" not in os.environ


def _worker(backend: str, function, args) -> None:
    """One process of a multi-process run (launcher.launch_workers): run it, then leave the group."""
    try:
        function(*args)
    finally:
        load_twin(backend).distributed.shutdown()


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
    lines = [line for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def _data(config: VAEConfig, options: TrainOptions) -> tuple[Dataset, int]:
    dataset = load_dataset(options.dataset, options.data_dir, image_size=options.image_size,
                           channels=options.channels, seed=0)
    if dataset.image_shape != config.image_shape:
        raise ValueError(f"the config's image_shape {config.image_shape} does not match the {options.dataset} "
                         f"images {dataset.image_shape}")
    n_batches = len(dataset.train_x) // options.batch_size
    if n_batches < 1:
        raise ValueError(f"batch size {options.batch_size} is larger than the {len(dataset.train_x)} training "
                         "images")
    return dataset, n_batches


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
    """Every epoch left from `position`; returns the last epoch's record (None on ranks other than 0)."""
    options = run.options
    state, step_fn = _build_step(run, state)
    bar = Progress(run.total_steps, enabled=progress and run.writer)
    bar.advance(position.epoch * run.n_batches + position.batch)
    say = log or bar.write
    record = None
    log_file = open(run.out / "log.jsonl", "a") if run.writer else None  # noqa: SIM115 (closed below)
    # Ctrl-C's save-and-stop between steps needs every worker to stop at the same step: single process only
    # (a multi-process run stops at once; its checkpoints, written atomically, stay whole)
    with (log_file or contextlib.nullcontext()), (_CtrlC() if run.world == 1 else _NoCtrlC()) as interrupt:
        try:
            for epoch in range(position.epoch, options.epochs):
                start = time.perf_counter()
                state, position = _train_epoch(run, state, step_fn, epoch, position, bar, interrupt)
                if run.writer:
                    record = _end_epoch(run, state, position, time.perf_counter() - start, log_file)
                    say(_epoch_line(record))
                position = Position(epoch + 1, 0, position.step)
        finally:
            bar.close()
    if not run.writer:
        return None
    records = [json.loads(line) for line in (run.out / "log.jsonl").read_text().splitlines() if line.strip()]
    write_run_pictures(run.twin, state.model, run.dataset, run.out, records, options.seed, options.denoise)
    # this process's record: a resumed run's command, backend and epochs, not the first process's
    atomic_write_bytes(run.out / "results.md", results_markdown(run_record(run.config, options), records).encode())
    return record


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


def _train_epoch(run: Run, state, step_fn, epoch: int, position: Position, bar: Progress, interrupt):
    """The batches of one epoch from `position` on; returns the state and the position at its end (the
    epoch's loss sums in it). Stops with TrainingDiverged on a non-finite loss, and saves and stops with
    TrainingInterrupted at the first Ctrl-C."""
    options, twin = run.options, run.twin
    sums, step, model = np.array(position.sums), position.step, state.model  # model: the inputs' dtype, device
    order = seeds.epoch_order(options.seed, epoch, len(run.dataset.train_x))
    for b in range(position.batch, run.n_batches):
        x = run.dataset.train_x[order[b * options.batch_size:(b + 1) * options.batch_size]]
        x = x.astype(options.param_dtype)
        eps = seeds.eps_for_step(options.seed, step, options.batch_size, run.config.latent_dim,
                                 options.param_dtype)
        # a denoising VAE encodes the noisy images and reconstructs the clean ones
        inputs = add_noise(x, options.denoise, options.seed, step) if options.denoise else x
        target = twin.as_input(x, model) if options.denoise else None
        state, losses = step_fn(state, twin.as_input(inputs, model), twin.as_input(eps, model),
                                beta_at(step, run.config.beta, options.kl_warmup), target=target,
                                learning_rate=learning_rate_at(step, options, run.total_steps))
        values = [float(twin.to_numpy(v)) for v in losses]
        if not all(math.isfinite(v) for v in values):
            checkpoint = run.out / CHECKPOINT
            raise TrainingDiverged(
                f"the loss became {values[0]} at step {step + 1} (epoch {epoch + 1}); stopped. "
                + (f"The last good checkpoint, {checkpoint}, is intact." if checkpoint.exists()
                   else "No checkpoint was written yet."))
        sums += values
        step += 1
        bar.advance()
        bar.stage(f"epoch {epoch + 1}/{options.epochs} loss {values[0]:.3f}")
        here = Position(epoch, b + 1, step, sums.tolist())
        if interrupt.requested:  # Ctrl-C lands between steps, never inside one
            _save(run, state, here)
            raise TrainingInterrupted(f"interrupted at step {step}; the state is saved: continue with "
                                      f"twinvae train --resume {run.out}")
        if run.writer and options.checkpoint_every and step % options.checkpoint_every == 0:
            _save(run, state, here)
    return state, Position(epoch, run.n_batches, step, sums.tolist())


def _end_epoch(run: Run, state, position: Position, seconds: float, log_file) -> dict:
    """Rank 0 at an epoch's end: evaluate on the test set, append the epoch's record to log.jsonl, save
    the model and the training state at the start of the next epoch. Returns the record."""
    options, step = run.options, position.step
    test = negative_elbo(run.twin, state.model, run.dataset.test_x, options.seed, options.param_dtype)
    train_means = (np.array(position.sums) / run.n_batches).tolist()
    record = {"epoch": position.epoch + 1, "step": step, "seconds": round(seconds, 3),
              "beta": beta_at(step - 1, run.config.beta, options.kl_warmup),
              "lr": learning_rate_at(step - 1, options, run.total_steps),
              "train": dict(zip(("total", "reconstruction", "kl"), train_means)), "test": test}
    if options.denoise:
        record["denoising"] = denoising_figures(run.twin, state.model, run.dataset.test_x, options.denoise,
                                                options.seed)
    log_file.write(json.dumps(record) + "\n")
    log_file.flush()
    _save(run, state, Position(position.epoch + 1, 0, step), test["total"])
    return record


def _epoch_line(record: dict) -> str:
    psnr = record.get("denoising")
    line = (f"epoch {record['epoch']}: train {record['train']['total']:.3f}, test {record['test']['total']:.3f} "
            f"nats/image ({record['seconds']:.1f}s)")
    return line + (f"; PSNR noisy {psnr['psnr_noisy']:.2f} dB, denoised {psnr['psnr_denoised']:.2f} dB"
                   if psnr else "")


def _save(run: Run, state, position: Position, test_loss: float | None = None) -> None:
    # the training state first: a crash between the two files leaves them at different steps, which
    # resume detects; each file itself is written atomically
    options = run.options
    save_train_state(run.out / TRAIN_STATE, run.twin.export_optimizer_state(state), position)
    run.twin.save_checkpoint(run.out / CHECKPOINT, state.model, run.config, {
        "dataset": options.dataset, "epoch": position.epoch, "step": position.step, "backend": options.backend,
        "seed": options.seed, "test_loss": test_loss, "denoise": options.denoise})


def write_run_pictures(twin: Twin, model, data: Dataset, out, records: list[dict], seed: int = 0,
                       denoise: float = 0.0) -> list[Path]:
    """What a training run leaves: loss curve, reconstructions, prior samples, interpolations, and for a
    denoising run test images before and after denoising."""
    written = [write_loss_curve(records, Path(out) / "loss.png"),
               write_reconstructions(twin, model, data, out),
               write_samples(twin, model, out, seed=seed),
               *write_interpolations(twin, model, data, out, seed=seed),
               write_denoising(twin, model, data.test_x, out, denoise, seed) if denoise else None]
    return [p for p in written if p is not None]


class _NoCtrlC:
    requested = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class _CtrlC:
    """While training, the first Ctrl-C asks the loop to save and stop after the step under way (a step
    cut in half would leave torch's parameters half-updated and JAX's donated buffers gone); a second one
    interrupts at once."""

    def __enter__(self):
        self.requested, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def save_train_state(path: Path, arrays: dict, position: Position) -> None:
    """Adam's moments and step (canonical layout) plus the run's position, atomically, as safetensors."""
    from safetensors.numpy import save

    header = {"format": TRAIN_STATE_FORMAT, "format_version": "1",
              "position": json.dumps(dataclasses.asdict(position))}
    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=header))


def read_train_state(path: Path) -> tuple[dict, Position]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if not Path(path).is_file():
        raise ValueError(f"{path} does not exist: nothing to resume from")
    data = Path(path).read_bytes()
    try:
        header = read_safetensors_header(path, data, "training state").get("__metadata__") or {}
        arrays = load(data)
        if header.get("format") != TRAIN_STATE_FORMAT:
            raise ValueError("not a twinvae training state")
        position = Position(**json.loads(header["position"]))
    except (CheckpointError, SafetensorError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: unreadable training state ({err})") from None
    return arrays, position


def results_markdown(run: dict, records: list[dict]) -> str:
    """A run's results.md: what ran, where, and each epoch's losses (nats per image; test: beta = 1, the
    'eval' stream's eps), the file the docs show through `python docs/refresh.py`."""
    argv = run["command"]
    command = " ".join(["twinvae", *argv[1:]] if argv and argv[0].endswith(("twinvae", "__main__.py")) else argv)
    options = run["options"]
    lines = [f"Command: `{command}`; {run['date']}, twinvae {run['twinvae']}, commit {run['git_commit'] or '-'}; "
             f"{run.get('cpu', '')}, {', '.join(f'{k} {v}' for k, v in run['versions'].items())}.", "",
             f"Backend {options['backend']}, dataset {options['dataset']}, seed {options['seed']}, batch "
             f"{options['batch_size']}, {options['dtype']}; config `{json.dumps(run['config'])}`.", ""]
    denoising = any("denoising" in r for r in records)
    header = ["epoch", "train total", "train reconstruction", "train KL", "test total", "test reconstruction",
              "test KL", "seconds"] + (["PSNR noisy (dB)", "PSNR denoised (dB)"] if denoising else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        cells = [str(r["epoch"]), *(f"{r[split][term]:.3f}" for split in ("train", "test")
                                    for term in ("total", "reconstruction", "kl")), f"{r['seconds']:.1f}"]
        if denoising:
            cells += [f"{r['denoising'][k]:.2f}" for k in ("psnr_noisy", "psnr_denoised")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_record(config: VAEConfig, options: TrainOptions) -> dict:
    """What the run folder records: config, options, command line, versions, git commit, machine. Call it
    after the twin is imported: the versions are those of the frameworks this process loaded."""
    return {"config": config.to_dict(), "options": dataclasses.asdict(options), "command": sys.argv,
            "twinvae": __version__, "versions": versions(), "python": platform.python_version(),
            "git_commit": git_commit(), "cpu": cpu_name(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
