"""The processes of a run: this process's place among the workers of a data-parallel run (torch under
torchrun or twinvae's own launcher, JAX on several hosts), the workers that `--nproc` starts here, and the
run folder's lock, which one writer holds."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

from twinvae import launcher, run_folder
from twinvae.run_folder import RunLock
from twinvae.trainer.loop import TrainingInterrupted, interrupted
from twinvae.trainer.options import TrainOptions
from twinvae.twin import Twin
from vae_core import parallel


@dataclasses.dataclass(frozen=True)
class WorkerTask:
    """What each worker process of a multi-process run does: an entry point (train or resume) called with
    its arguments by name, pickled to each spawned process (a function of a module, picklable values)."""
    entry: Callable[..., dict | None]
    arguments: dict

    def __call__(self) -> None:
        """Run it in this worker; a stop on request exits with the signal's code, which the launcher reads."""
        try:
            self.entry(**self.arguments)
        except TrainingInterrupted as err:
            sys.exit(err.exit_code)


@contextlib.contextmanager
def writer_lock(out: Path, rank: int):
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


def launches(options: TrainOptions) -> bool:
    """Whether this process starts options.nproc torch workers (not one of them, nor under torchrun)."""
    return options.backend == "torch" and options.nproc > 1 and "WORLD_SIZE" not in os.environ


def _last_record(out: Path) -> dict | None:
    records = run_folder.read_log(out)
    return records[-1] if records else None


def launch(options: TrainOptions, task: WorkerTask) -> dict | None:
    """Run `task` in options.nproc torch workers; returns the run's last epoch record. Their interruption
    becomes this process's."""
    try:
        launcher.launch_workers(task, (), options.nproc)
    except launcher.WorkersStopped as err:
        raise interrupted(Path(options.out), err.exit_code) from None
    return _last_record(Path(options.out))


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


@contextlib.contextmanager
def among_workers(twin: Twin, options: TrainOptions):
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
