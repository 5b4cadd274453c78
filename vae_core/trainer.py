"""`twinvae train`: the training loop, framework-free. It reaches a twin through a lazy import chosen by
`backend` and uses only that twin's public API, so both backends run the very same loop: the same data
order and eps (from vae_core.seeds), the same KL warm-up, the same evaluation, the same files."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vae_core import __version__, seeds
from vae_core.apps import write_run_pictures
from vae_core.config import VAEConfig
from vae_core.data import load_dataset
from vae_core.progress import Progress

BACKENDS = ("jax", "torch")
EVAL_BATCH = 500


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the message names the step, and the last checkpoint is intact."""


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
    kl_warmup: int = 0  # steps over which beta rises linearly from beta/kl_warmup to beta
    dtype: str = "float32"
    seed: int = 0
    out: str = "runs/train"
    compile: bool | None = None  # None: each backend's fastest here (torch eager, jax jit)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.kl_warmup < 0:
            raise ValueError(f"kl-warmup must be >= 0 steps, got {self.kl_warmup}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")


def beta_at(step: int, beta: float, warmup: int) -> float:
    """KL weight of training step `step` (0-based): linear warm-up over `warmup` steps, then beta."""
    return beta if warmup <= 0 else beta * min(1.0, (step + 1) / warmup)


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
    """Train, evaluate each epoch, write the run folder (log, checkpoint, run record, loss curve,
    reconstructions, prior samples, interpolations); returns the last epoch's record."""
    dataset = load_dataset(options.dataset, options.data_dir, image_size=options.image_size,
                           channels=options.channels, seed=0)
    if dataset.image_shape != config.image_shape:
        raise ValueError(f"the config's image_shape {config.image_shape} does not match the {options.dataset} "
                         f"images {dataset.image_shape}")
    n_batches = len(dataset.train_x) // options.batch_size
    if n_batches < 1:
        raise ValueError(f"batch size {options.batch_size} is larger than the {len(dataset.train_x)} training "
                         "images")
    out = Path(options.out)
    if (out / "log.jsonl").exists() or (out / "model.safetensors").exists():
        raise ValueError(f"{out} already holds a run (log.jsonl / model.safetensors); choose another --out")
    backend = importlib.import_module(f"vae_{options.backend}")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "run.json", run_record(config, options))
    model = backend.init_model(config, options.seed, options.dtype)
    state = backend.create_train_state(model, learning_rate=options.lr)
    compiled = options.compile if options.compile is not None else options.backend == "jax"
    step_fn = backend.compile_train_step(state, check_inputs=False) if compiled else backend.train_step
    kwargs = {} if compiled else {"check_inputs": False}  # the dataset was checked when it was loaded
    checkpoint = out / "model.safetensors"
    bar = Progress(options.epochs * n_batches, enabled=progress)
    step, records = 0, []
    with open(out / "log.jsonl", "a") as log_file:
        for epoch in range(options.epochs):
            start, sums = time.perf_counter(), np.zeros(3)
            order = epoch_order(options.seed, epoch, len(dataset.train_x))
            for b in range(n_batches):
                batch = order[b * options.batch_size:(b + 1) * options.batch_size]
                x = dataset.train_x[batch].astype(options.dtype)
                eps = seeds.eps_for_step(options.seed, step, options.batch_size, config.latent_dim, options.dtype)
                beta = beta_at(step, config.beta, options.kl_warmup)
                state, losses = step_fn(state, backend.as_input(x, model), backend.as_input(eps, model), beta,
                                        **kwargs)
                values = [float(backend.to_numpy(v)) for v in losses]
                if not all(math.isfinite(v) for v in values):
                    bar.close()
                    raise TrainingDiverged(
                        f"the loss became {values[0]} at step {step + 1} (epoch {epoch + 1}); stopped. "
                        + (f"The last good checkpoint, {checkpoint}, is intact." if checkpoint.exists()
                           else "No checkpoint was written yet."))
                sums += values
                step += 1
                bar.advance()
                bar.stage(f"epoch {epoch + 1}/{options.epochs} loss {values[0]:.3f}")
            trained = state.model
            train_losses = dict(zip(("total", "reconstruction", "kl"), (sums / n_batches).tolist()))
            record = {"epoch": epoch + 1, "step": step, "seconds": round(time.perf_counter() - start, 3),
                      "beta": beta, "train": train_losses,
                      "test": evaluate(backend, trained, dataset.test_x, options.seed, options.dtype)}
            records.append(record)
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            backend.save_checkpoint(checkpoint, trained, config, {
                "dataset": options.dataset, "epoch": epoch + 1, "step": step, "backend": options.backend,
                "seed": options.seed, "test_loss": record["test"]["total"]})
            if epoch == options.epochs - 1:
                bar.close()
            log(f"epoch {epoch + 1}: train {record['train']['total']:.3f}, test {record['test']['total']:.3f} "
                f"nats/image ({record['seconds']:.1f}s)")
    write_run_pictures(backend, trained, dataset, out, records, seed=options.seed)
    return record


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
