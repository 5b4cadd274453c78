"""The launcher behind `twinvae train --backend torch --nproc N`: what torchrun does, for one machine."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time

from twinvae.stopping import STOPPED_CODES

LOCK_OWNER = "TWINVAE_LOCK_OWNER"  # the launcher's PID: it holds the run folder's lock for its workers


class WorkerFailed(RuntimeError):
    """A worker process of a multi-process run died or failed; the others were stopped."""


class WorkersStopped(RuntimeError):
    """The workers stopped on a SIGINT or SIGTERM, after saving; `exit_code` is the signal's (130, 143)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def launch_workers(target, args: tuple, nproc: int, port: int | None = None, poll: float = 0.2) -> None:
    """Run target(*args) in `nproc` fresh processes on this machine, each with torchrun's environment
    (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT), OMP_NUM_THREADS = cores / nproc
    unless set, and LOCK_OWNER; wait for all of them. If one dies or fails, the others are stopped and
    WorkerFailed names it (its own traceback is on stderr). A SIGTERM to this process is passed on to the
    workers (a terminal's Ctrl-C reaches them itself), which save and stop at one step: WorkersStopped, once
    they all have."""
    port = port or free_port()
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked framework state
    processes = []
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS", LOCK_OWNER)
    saved = {k: os.environ.get(k) for k in names}
    # the cores shared out, as torchrun does (it sets 1): N workers each with every core's worth of
    # threads oversubscribe the machine (docs/distributed.md)
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    try:
        for rank in range(nproc):
            os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                              MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS=threads,
                              **{LOCK_OWNER: str(os.getpid())})
            process = context.Process(target=target, args=args, name=f"twinvae-worker-{rank}")
            process.start()
            processes.append(process)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        with _ForwardSignals(processes):
            _wait(processes, poll)
    finally:
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join()


def _wait(processes: list, poll: float) -> None:
    """Until every worker has exited; raises at the first failure, or once all stopped on request."""
    nproc = len(processes)
    while True:
        codes = [p.exitcode for p in processes]
        failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0, *STOPPED_CODES)]
        if failed:
            rank, code = failed[0]
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise WorkerFailed(f"worker {rank} of {nproc} {how}; the other workers were stopped")
        if all(code is not None for code in codes):
            stopped = [code for code in codes if code in STOPPED_CODES]
            if stopped:
                raise WorkersStopped(f"the {nproc} workers stopped on request, after saving", stopped[0])
            return
        time.sleep(poll)


class _ForwardSignals:
    """SIGTERM to the launcher goes on to every worker (once): `docker stop` signals only the first
    process. A terminal's Ctrl-C reaches every worker of the process group itself, so a first SIGINT is
    not passed on (a worker would take it as the second, which interrupts at once); a second one stops
    the launcher, and with it the workers."""

    def __init__(self, processes: list):
        self.processes, self.previous, self.seen = processes, {}, set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and signum in self.seen:
            raise KeyboardInterrupt
        if signum == signal.SIGTERM and signum not in self.seen:
            for p in self.processes:
                if p.is_alive() and p.pid:
                    os.kill(p.pid, signum)
        self.seen.add(signum)

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
