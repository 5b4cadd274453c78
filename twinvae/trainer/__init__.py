"""`twinvae train`: the trainer, framework-free, one concern a module:

    options.py     TrainOptions, the learning-rate and KL schedules, the command line's flags made options
    runs.py        the entry points: train a new run, resume one
    resumption.py  what a run folder allows a resume to continue from, and the state restored from it
    workers.py     this process among the workers of a data-parallel run, the workers --nproc launches,
                   the run folder's lock
    loop.py        the loop, in named parts around one Run record; saving; divergence and interruption
    record.py      run.json, results.md and the end-of-run pictures

What keeps the run folder whole under crashes, kills and a second writer is twinvae.run_folder's; stopping
on Ctrl-C or SIGTERM is twinvae.stopping's."""

from twinvae.trainer.loop import TrainingDiverged, TrainingInterrupted
from twinvae.trainer.options import TrainOptions, config_from_flags, options_from_flags
from twinvae.trainer.resumption import refuse_changes_on_resume
from twinvae.trainer.runs import resume, train

__all__ = ["TrainOptions", "TrainingDiverged", "TrainingInterrupted", "config_from_flags", "options_from_flags",
           "refuse_changes_on_resume", "resume", "train"]
