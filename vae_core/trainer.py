"""`twinvae train`: the training loop, framework-free. It reaches a twin through a lazy import chosen by
`backend` and uses only that twin's public API, so both backends run the very same loop: the same data
order and eps (from vae_core.seeds), the same KL warm-up, the same evaluation, the same files."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from vae_core import __version__, checks, parallel, seeds
from vae_core.apps import write_run_pictures
from vae_core.config import VAEConfig
from vae_core.data import load_dataset
from vae_core.denoising import add_noise, denoising_figures
from vae_core.progress import Progress

BACKENDS = ("jax", "torch")
LR_SCHEDULES = ("constant", "cosine")
CHECKPOINT = "model.safetensors"
TRAIN_STATE = "train_state.safetensors"
TRAIN_STATE_FORMAT = "twinvae-train-state"
EVAL_BATCH = 500


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the message names the step, and the last checkpoint is intact."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C: the state was saved first; the message says how to continue."""


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    backend: str = "jax"
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


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The training-set permutation of one epoch (0-based), the same in both backends."""
    return seeds.rng(seed, "data", step=1 + epoch).permutation(n)


def evaluate(backend, model, images: np.ndarray, seed: int, dtype: str) -> dict:
    """Mean per-image negative ELBO, reconstruction and KL at beta = 1, in nats, with eps drawn from the
    'eval' stream (so every epoch and both backends see the same noise)."""
    sums = np.zeros(3)
    for start in range(0, len(images), EVAL_BATCH):
        x = images[start:start + EVAL_BATCH]
        eps = seeds.standard_normal(seed, "eval", start // EVAL_BATCH, (len(x), model.config.latent_dim), dtype)
        losses = backend.evaluate(model, backend.as_input(x.astype(dtype), model), backend.as_input(eps, model))
        sums += [float(backend.to_numpy(v).astype(np.float64).sum()) for v in losses]
    return dict(zip(("total", "reconstruction", "kl"), (sums / len(images)).tolist()))


def train(config: VAEConfig, options: TrainOptions, progress: bool = True, log=print) -> dict:
    """Train, evaluate each epoch, write the run folder (log, checkpoint, training state, run record, loss
    curve, reconstructions, prior samples, interpolations); returns the last epoch's record. Data-parallel
    with options.devices (JAX) or options.nproc / torchrun (torch): only rank 0 evaluates and writes."""
    out = Path(options.out)
    if _launches(options):
        _refuse_existing_run(out)
        parallel.launch_workers(_worker, (train, (config, options, progress)), options.nproc)
        return _last_record(out)
    backend = importlib.import_module(f"vae_{options.backend}")
    rank, world = _join_workers(options)
    if rank == 0:
        _refuse_existing_run(out)
    dataset, n_batches = _data(config, options)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "run.json", run_record(config, options))
    state = backend.create_train_state(backend.init_model(config, options.seed, options.param_dtype,
                                                          compute_dtype=options.compute_dtype),
                                       learning_rate=options.lr, free_bits=options.free_bits)
    return _fit(backend, state, config, options, dataset, n_batches, Position(), progress, log, rank, world)


def resume(run_dir, backend: str | None = None, epochs: int | None = None, progress: bool = True,
           log=print, devices: int | None = None, nproc: int | None = None) -> dict:
    """Continue a run from its last saved state, in the same backend (bitwise the same as an uninterrupted
    run) or the other one (the same optimizer state; equal within float32 rounding); on as many devices
    or processes as it had, or as given (the same function, to rounding)."""
    out = Path(run_dir)
    try:
        run = json.loads((out / "run.json").read_text())
        config = VAEConfig.from_dict(run["config"], complete=True)
        stored = TrainOptions(**run["options"])
    except FileNotFoundError:
        raise ValueError(f"{out} holds no run to resume (no run.json)") from None
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{out}/run.json is not a twinvae run record: {err}") from None
    switched = backend is not None and backend != stored.backend  # the other engine: its own parallelism
    options = dataclasses.replace(stored, out=str(out), backend=backend or stored.backend,
                                  epochs=epochs or stored.epochs,
                                  devices=devices if devices is not None else 1 if switched else stored.devices,
                                  nproc=nproc if nproc is not None else 1 if switched else stored.nproc)
    if _launches(options):
        parallel.launch_workers(_worker, (resume, (str(out), options.backend, options.epochs, progress, print,
                                                   options.devices, options.nproc)), options.nproc)
        return _last_record(out)
    arrays, position = read_train_state(out / TRAIN_STATE)
    twin = importlib.import_module(f"vae_{options.backend}")
    rank, world = _join_workers(options)
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
        log(f"resuming {out} at epoch {position.epoch + 1}, step {position.step}, with {options.backend}")
    return _fit(twin, state, config, options, dataset, n_batches, position, progress, log, rank, world)


def _refuse_existing_run(out: Path) -> None:
    if (out / "log.jsonl").exists() or (out / CHECKPOINT).exists():
        raise ValueError(f"{out} already holds a run (log.jsonl / {CHECKPOINT}); choose another --out, or "
                         f"continue it with --resume {out}")


def _launches(options: TrainOptions) -> bool:
    """Whether this process starts options.nproc torch workers (not one of them, nor under torchrun)."""
    return options.backend == "torch" and options.nproc > 1 and "WORLD_SIZE" not in os.environ


def _worker(function, args) -> None:
    """One process of a multi-process run (parallel.launch_workers): run it, then leave the group."""
    try:
        function(*args)
    finally:
        importlib.import_module("vae_torch.distributed").shutdown()


def _join_workers(options: TrainOptions) -> tuple[int, int]:
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
        return importlib.import_module("vae_jax.distributed").initialize(
            os.environ["JAX_COORDINATOR_ADDRESS"], hosts, index)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if options.backend != "torch":
        raise ValueError(f"WORLD_SIZE={world} is set (torchrun?) but the backend is {options.backend}: JAX runs "
                         "data-parallel in one process, with devices")
    if options.nproc not in (1, world):
        raise ValueError(f"nproc is {options.nproc} but the launcher started {world} processes")
    parallel.check_divisible_batch(options.batch_size, world, "processes")
    return importlib.import_module("vae_torch.distributed").initialize()


def _last_record(out: Path) -> dict | None:
    lines = [line for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


@dataclasses.dataclass
class Position:
    """Where a run is: the epoch under way (0-based), the next batch in it, the global step, and the
    running sums of that epoch's training losses. With the counter-based seed streams this is all the
    RNG state there is: data order and eps follow from (seed, epoch, step)."""
    epoch: int = 0
    batch: int = 0
    step: int = 0
    sums: list = dataclasses.field(default_factory=lambda: [0.0, 0.0, 0.0])


def _data(config: VAEConfig, options: TrainOptions):
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


def _fit(backend, state, config, options, dataset, n_batches, position: Position, progress, log, rank: int = 0,
         world: int = 1) -> dict | None:
    out = Path(options.out)
    model = state.model
    compiled = options.compile if options.compile is not None else options.backend == "jax"
    kwargs = {} if compiled else {"check_inputs": False}  # the dataset was checked when it was loaded
    if world > 1 or options.devices != 1:  # data-parallel: every process takes the same global batch
        dist = importlib.import_module(f"vae_{options.backend}.distributed")
        state = dist.replicate(state, world if options.backend == "torch" else options.devices or None)
        if options.backend == "jax":
            parallel.check_divisible_batch(options.batch_size, state.mesh.devices.size, "devices")
            step_fn = dist.compile_train_step(state, check_inputs=False)
        else:
            step_fn = dist.compile_train_step(state, "default" if compiled else None, check_inputs=False)
        kwargs = {}
    else:
        step_fn = backend.compile_train_step(state, check_inputs=False) if compiled else backend.train_step
    writer = rank == 0  # only rank 0 evaluates, logs and writes; the others wait in the next step's all-reduce
    bar = Progress(options.epochs * n_batches, enabled=progress and writer)
    bar.advance(position.epoch * n_batches + position.batch)
    step, record = position.step, None

    def save(epoch, batch, sums, test_loss=None):
        # the training state first: a crash between the two files leaves them at different steps, which
        # resume detects; each file itself is written atomically
        save_train_state(out / TRAIN_STATE, backend.export_optimizer_state(state),
                         Position(epoch, batch, step, [float(v) for v in sums]))
        backend.save_checkpoint(out / CHECKPOINT, state.model, config, {
            "dataset": options.dataset, "epoch": epoch, "step": step, "backend": options.backend,
            "seed": options.seed, "test_loss": test_loss, "denoise": options.denoise})

    log_file = open(out / "log.jsonl", "a") if writer else None  # noqa: SIM115 (closed below)
    # Ctrl-C's save-and-stop between steps needs every worker to stop at the same step: single process only
    # (a multi-process run stops at once; its checkpoints, written atomically, stay whole)
    with (log_file or contextlib.nullcontext()), (_CtrlC() if world == 1 else _NoCtrlC()) as interrupt:
        for epoch in range(position.epoch, options.epochs):
            start = time.perf_counter()
            first = position.batch if epoch == position.epoch else 0
            sums = np.array(position.sums if epoch == position.epoch else [0.0, 0.0, 0.0])
            order = epoch_order(options.seed, epoch, len(dataset.train_x))
            for b in range(first, n_batches):
                batch = order[b * options.batch_size:(b + 1) * options.batch_size]
                x = dataset.train_x[batch].astype(options.param_dtype)
                eps = seeds.eps_for_step(options.seed, step, options.batch_size, config.latent_dim,
                                         options.param_dtype)
                beta = beta_at(step, config.beta, options.kl_warmup)
                # a denoising VAE encodes the noisy images and reconstructs the clean ones
                inputs = add_noise(x, options.denoise, options.seed, step) if options.denoise else x
                target = backend.as_input(x, model) if options.denoise else None
                lr = learning_rate_at(step, options, options.epochs * n_batches)
                state, losses = step_fn(state, backend.as_input(inputs, model), backend.as_input(eps, model), beta,
                                        target=target, learning_rate=lr, **kwargs)
                values = [float(backend.to_numpy(v)) for v in losses]
                if not all(math.isfinite(v) for v in values):
                    bar.close()
                    checkpoint = out / CHECKPOINT
                    raise TrainingDiverged(
                        f"the loss became {values[0]} at step {step + 1} (epoch {epoch + 1}); stopped. "
                        + (f"The last good checkpoint, {checkpoint}, is intact." if checkpoint.exists()
                           else "No checkpoint was written yet."))
                sums += values
                step += 1
                bar.advance()
                bar.stage(f"epoch {epoch + 1}/{options.epochs} loss {values[0]:.3f}")
                if interrupt.requested:  # Ctrl-C lands between steps, never inside one
                    save(epoch, b + 1, sums)
                    bar.close()
                    raise TrainingInterrupted(f"interrupted at step {step}; the state is saved: continue with "
                                              f"twinvae train --resume {out}")
                if writer and options.checkpoint_every and step % options.checkpoint_every == 0:
                    save(epoch, b + 1, sums)
            if not writer:
                continue
            test = evaluate(backend, state.model, dataset.test_x, options.seed, options.param_dtype)
            record = {"epoch": epoch + 1, "step": step, "seconds": round(time.perf_counter() - start, 3),
                      "beta": beta_at(step - 1, config.beta, options.kl_warmup),
                      "lr": learning_rate_at(step - 1, options, options.epochs * n_batches),
                      "train": dict(zip(("total", "reconstruction", "kl"), (sums / n_batches).tolist())),
                      "test": test}
            if options.denoise:
                record["denoising"] = denoising_figures(backend, state.model, dataset.test_x, options.denoise,
                                                        options.seed)
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            save(epoch + 1, 0, [0.0, 0.0, 0.0], test["total"])
            psnr = record.get("denoising")
            log(f"epoch {epoch + 1}: train {record['train']['total']:.3f}, test {test['total']:.3f} "
                f"nats/image ({record['seconds']:.1f}s)"
                + (f"; PSNR noisy {psnr['psnr_noisy']:.2f} dB, denoised {psnr['psnr_denoised']:.2f} dB"
                   if psnr else ""))
    bar.close()
    if not writer:
        return None
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    write_run_pictures(backend, state.model, dataset, out, records, seed=options.seed, denoise=options.denoise)
    return record


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

    from vae_core.weights import atomic_write_bytes

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
        arrays = load(data)
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
        if header.get("format") != TRAIN_STATE_FORMAT:
            raise ValueError("not a twinvae training state")
        position = Position(**json.loads(header["position"]))
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: unreadable training state ({err})") from None
    return arrays, position


def run_record(config: VAEConfig, options: TrainOptions) -> dict:
    """What the run folder records: config, options, command line, versions, git commit. Call it after the
    backend is imported: the versions are those of the frameworks this process loaded."""
    versions = {name: getattr(sys.modules[name], "__version__", "")
                for name in ("numpy", "torch", "jax", "flax", "optax") if name in sys.modules}
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=here,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {"config": config.to_dict(), "options": dataclasses.asdict(options), "command": sys.argv,
            "twinvae": __version__, "versions": versions, "python": platform.python_version(),
            "git_commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _write_json(path: Path, data: dict) -> None:
    from vae_core.weights import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())
