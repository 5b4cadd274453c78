"""Resume bookkeeping: what a run folder allows a resume to continue from (its last complete checkpoint
unit, checked against the run record), the folder tidied for it, the state restored from the unit, and the
refusal of flags that would change the run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from twinvae import run_folder
from twinvae.run_folder import CHECKPOINT, LOG, RECORD, Position, Unit
from twinvae.trainer.loop import Run, checkpoint_step, write_model
from twinvae.trainer.options import TrainOptions, changes_on_resume, resumable_flags
from twinvae.trainer.record import read_run_record
from vae_core.config import VAEConfig


def refuse_changes_on_resume(run_dir, flags: Mapping) -> None:
    """With --resume, every flag other than those a resume may change must match the run's
    (options.changes_on_resume): a ValueError naming both values of each, instead of silently keeping the
    stored ones. --overwrite, or another --out, is refused first."""
    if flags.get("overwrite"):
        raise ValueError("--overwrite starts a run again and --resume continues one: give one of them")
    out = flags.get("out")
    if out and Path(out).resolve() != Path(run_dir).resolve():
        raise ValueError(f"--out {out} with --resume {run_dir}: a resumed run stays in its folder")
    differences = changes_on_resume(*read_run_record(Path(run_dir)), flags)
    if differences:
        raise ValueError(f"--resume {run_dir} continues the run as it was; only {resumable_flags()} may change. "
                         f"Given otherwise: {'; '.join(differences)}. Drop them, or start a new run with another "
                         "--out")


def _finished_at(out: Path) -> int | None:
    try:
        return json.loads((out / RECORD).read_text()).get("finished_step")
    except (OSError, ValueError):
        return None


def _run_size(out: Path, options: TrainOptions) -> run_folder.RunSize:
    """The positions the run record allows: the most epochs it was given (or this resume gives), and the
    steps of an epoch where it records them (read_run_record checked the record)."""
    record = json.loads((out / RECORD).read_text())
    steps = record.get("steps_per_epoch")
    return run_folder.RunSize(max(options.epochs, record["options"]["epochs"]),
                              steps if isinstance(steps, int) and not isinstance(steps, bool) else None)


def check_resumable(out: Path, config: VAEConfig, options: TrainOptions, say,
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


def restore(run: Run, unit: Unit | None):
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
            if run.writer and checkpoint_step(run.out / CHECKPOINT) != unit.position.step:
                write_model(run, unit.weights, unit.position)
    state = twin.create_train_state(model, learning_rate=options.lr, free_bits=options.free_bits)
    if unit is None:
        return state, Position()
    return twin.import_optimizer_state(state, unit.optimizer), unit.position
