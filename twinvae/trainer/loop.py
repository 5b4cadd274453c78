"""The training loop, framework-free, in named parts around one Run record: `_build_step` (eager, compiled
or data-parallel), `_train_epoch` (the batches of one epoch, their losses read back in groups: read_back),
`_end_epoch` (evaluate, log, save), `_finish` (the end-of-run files); `fit` runs them for every epoch left.
It reaches the twin only through the Twin interface, so both backends run the very same loop: the same data
order and eps (from vae_core.seeds), the same KL warm-up, the same evaluation, the same files. Stopping on
Ctrl-C or SIGTERM is twinvae.stopping's; keeping the run folder whole is twinvae.run_folder's."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import math
import time
from pathlib import Path

import numpy as np

from twinvae import run_folder
from twinvae.data import Dataset
from twinvae.denoising import denoising_figures
from twinvae.evaluation import negative_elbo
from twinvae.input_pipeline import epoch_batches
from twinvae.progress import Progress
from twinvae.results import write_results
from twinvae.run_folder import CHECKPOINT, RECORD, RESULTS, Position
from twinvae.stopping import StopRequests, signal_name
from twinvae.timings import Timings
from twinvae.trainer.options import TrainOptions, beta_at, learning_rate_at
from twinvae.trainer.record import results_markdown, run_record, write_run_pictures
from twinvae.twin import Twin
from vae_core import parallel
from vae_core.checkpoint import (
    WriteError,
    atomic_write_json,
    read_safetensors_header,
    write_checkpoint,
)
from vae_core.config import VAEConfig

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


def checkpoint_step(path: Path) -> int | None:
    """The step in a checkpoint's header, or None where it has none (or no readable header)."""
    try:
        info = read_safetensors_header(path, path.read_bytes()).get("__metadata__") or {}
        return json.loads(info.get("metadata", "{}")).get("step")
    except (OSError, ValueError, AttributeError):
        return None


def _last_good(run: Run) -> str:
    step = checkpoint_step(run.out / CHECKPOINT) if run.writer else None
    return (f"The last good checkpoint ({run.out}, step {step}) is intact: --resume {run.out} continues from "
            "it." if step is not None else "No checkpoint was written yet.")


def interrupted(out: Path, exit_code: int, step: int | None = None) -> TrainingInterrupted:
    """The error of a run stopped by a signal (its exit code) at `step` (by default the checkpoint's), saying
    how to continue it."""
    step = checkpoint_step(out / CHECKPOINT) if step is None else step
    return TrainingInterrupted(f"stopped by {signal_name(exit_code)} at step {step}; the state is saved: "
                               f"continue with twinvae train --resume {out}", exit_code)


def _class_names(run: Run) -> dict:
    """A conditional model's class names, in the checkpoint's metadata for `twinvae sample --label NAME`."""
    return {"classes": list(run.dataset.classes)} if run.config.num_classes and run.dataset.classes else {}


def write_model(run: Run, weights: dict, position: Position, test_loss: float | None = None) -> None:
    """model.safetensors from the weights, with what the run knows of them: dataset, position, backend, seed,
    test loss, noise, binarisation, class names."""
    options = run.options
    write_checkpoint(run.out / CHECKPOINT, weights, run.config, {
        "dataset": options.dataset, "epoch": position.epoch, "step": position.step, "backend": options.backend,
        "seed": options.seed, "test_loss": test_loss, "denoise": options.denoise,
        "binarize": options.binarize, **_class_names(run)})


def _save(run: Run, state, position: Position, test_loss: float | None = None) -> None:
    """The checkpoint unit (run_folder.save_unit: one atomic file), then model.safetensors from the same
    weights. Non-finite values are never saved: TrainingDiverged, the last good unit left as it was."""
    with run.timings.measure("saving"):
        weights = run.twin.export_weights(state.model)
        try:
            run_folder.save_unit(run.out, weights, run.twin.export_optimizer_state(state), position, run.config)
        except ValueError as err:
            raise TrainingDiverged(f"{err}: the run diverged; not saved. {_last_good(run)}") from None
        write_model(run, weights, position, test_loss)


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


def read_back(run: Run, pending: list, sums: np.ndarray, epoch: int) -> None:
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
    at a time, and before any save (`read_back`): a non-finite loss stops the run with TrainingDiverged at
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
            read_back(run, pending, sums, epoch)
            bar.stage(f"epoch {epoch + 1}/{options.epochs} loss {sums[0] / (b + 1):.3f}")
        here = Position(epoch, b + 1, step, sums.tolist())
        if stopping:
            if run.writer:
                _save(run, state, here)
            raise interrupted(run.out, stop.exit_code, step)
        if saving:
            _save(run, state, here)
    return state, Position(epoch, run.n_batches, step, sums.tolist())


def _epoch_line(record: dict) -> str:
    psnr = record.get("denoising")
    line = (f"epoch {record['epoch']}: train {record['train']['total']:.3f}, test {record['test']['total']:.3f} "
            f"nats/image ({record['seconds']:.1f}s)")
    return line + (f"; PSNR noisy {psnr['psnr_noisy']:.2f} dB, denoised {psnr['psnr_denoised']:.2f} dB"
                   if psnr else "")


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
    write_results(run.out / RESULTS, markdown)
    record = json.loads((run.out / RECORD).read_text())
    atomic_write_json(run.out / RECORD, {**record, "finished_step": position.step,  # what resume reads
                                         "timings": timings})
    return records[-1]


def fit(run: Run, state, position: Position, progress: bool, log) -> dict | None:
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
