"""The entry points: `train` a new run, `resume` one from its run folder. Each works in this process, or
launches the torch workers of `--nproc` (twinvae.trainer.workers), which call it again; each worker, and
each process under torchrun, joins the others and trains its part (twinvae.trainer.loop), rank 0 alone
writing the run folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from twinvae import run_folder
from twinvae.data import Dataset, binarized, check_for_model
from twinvae.datasets import load_dataset
from twinvae.run_folder import CHECKPOINT, LOG, RECORD, RUN_FILES, Position
from twinvae.trainer.loop import Run, fit
from twinvae.trainer.options import TrainOptions
from twinvae.trainer.record import read_run_record, record_resume, run_record
from twinvae.trainer.resumption import check_resumable, restore
from twinvae.trainer.workers import WorkerTask, among_workers, launch, launches, writer_lock
from twinvae.twin import Twin, load_twin
from vae_core.checkpoint import atomic_write_json
from vae_core.config import VAEConfig, check_bound_terms


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


def _load_data(config: VAEConfig, options: TrainOptions) -> tuple[Dataset, int]:
    """The dataset, checked up front against everything the run will ask of it: the model's image shape
    and classes (twinvae.data.check_for_model), at least one batch, and the test images that evaluation
    and the end-of-run pictures take."""
    dataset = load_dataset(options.dataset, options.data_dir, image_size=options.image_size,
                           channels=options.channels, seed=0)
    if options.binarize:
        dataset = binarized(dataset, options.binarize)
    check_for_model(dataset, config, options.dataset)
    n_batches = len(dataset.train_x) // options.batch_size
    if n_batches < 1:
        raise ValueError(f"batch size {options.batch_size} is larger than the {len(dataset.train_x)} training "
                         "images")
    if len(dataset.test_x) < 2:
        raise ValueError(f"the {options.dataset} dataset has {len(dataset.test_x)} test image(s): evaluation and "
                         "the interpolation pictures need at least 2 (give the folder more images)")
    return dataset, n_batches


def _train_here(twin: Twin, config: VAEConfig, options: TrainOptions, rank: int, world: int, progress: bool,
                log, overwrite: bool) -> dict | None:
    """train's work in this process, one of `world` (the state dies with this frame, before the group)."""
    out = Path(options.out)
    dataset, n_batches = _load_data(config, options)
    if config.likelihood == "discretized_logistic":  # its bins are the data's levels
        if dataset.levels < 2:
            raise ValueError(f"the discretized logistic is a mass on the data's grey levels, and the "
                             f"{options.dataset} images lie on no grid of levels (float or 16-bit images resized "
                             "off it): choose another --likelihood")
        config = dataclasses.replace(config, levels=dataset.levels)
    with writer_lock(out, rank):
        model = twin.init_model(config, options.seed, options.param_dtype, compute_dtype=options.compute_dtype)
        if rank == 0:
            _start_folder(out, overwrite, log or print)
            atomic_write_json(out / RECORD, {**run_record(config, options, model), "files": list(RUN_FILES),
                                             "steps_per_epoch": n_batches})
        state = twin.create_train_state(model, learning_rate=options.lr, free_bits=options.free_bits)
        run = Run(twin, config, options, dataset, n_batches, rank, world)
        return fit(run, state, Position(), progress, log)


def train(config: VAEConfig, options: TrainOptions, progress: bool = True, log=None,
          overwrite: bool = False) -> dict | None:
    """Train, evaluate each epoch, write the run folder (log, checkpoint, training state, run record, loss
    curve, reconstructions, prior samples, interpolations); returns the last epoch's record. Data-parallel
    with options.devices (JAX) or options.nproc / torchrun (torch): only rank 0 evaluates and writes.
    `log` takes each epoch's line (default: stdout, above the progress bar). A folder that holds a run is
    refused unless `overwrite`, which deletes that run's files first."""
    out, say = Path(options.out), log or print
    check_bound_terms(config, free_bits=options.free_bits, kl_warmup=options.kl_warmup)
    # before any work, and before the lock file is made; checked again under the lock
    run_folder.clearable(out) if overwrite else _refuse_existing_run(out)
    if launches(options):
        with writer_lock(out, rank=0):
            _start_folder(out, overwrite, say)
            return launch(options, WorkerTask(train, {"config": config, "options": options, "progress": progress}))
    twin = load_twin(options.backend, float64=options.param_dtype == "float64")
    with among_workers(twin, options) as (rank, world):
        return _train_here(twin, config, options, rank, world, progress, log, overwrite)


def _resume_here(twin: Twin, config: VAEConfig, options: TrainOptions, rank: int, world: int, progress: bool,
                 log) -> dict | None:
    """resume's work in this process, one of `world` (the state dies with this frame, before the group)."""
    out, say = Path(options.out), log or print
    with writer_lock(out, rank):
        unit = check_resumable(out, config, options, say, writer=rank == 0)
        dataset, n_batches = _load_data(config, options)
        run = Run(twin, config, options, dataset, n_batches, rank, world)
        state, position = restore(run, unit)
        if rank == 0:
            record_resume(out, options, position, state.model)
            say(f"resuming {out} at epoch {position.epoch + 1}, step {position.step}, with {options.backend}"
                if unit else f"{out} holds no complete checkpoint: training it from its beginning")
        return fit(run, state, position, progress, log)


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
    if launches(options):
        with writer_lock(out, rank=0):
            check_resumable(out, config, options, say)
            return launch(options, WorkerTask(resume, {
                "run_dir": str(out), "backend": options.backend, "epochs": options.epochs, "progress": progress,
                "devices": options.devices, "nproc": options.nproc}))
    twin = load_twin(options.backend, float64=options.param_dtype == "float64")
    with among_workers(twin, options) as (rank, world):
        return _resume_here(twin, config, options, rank, world, progress, log)
