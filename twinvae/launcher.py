"""The launcher behind `twinvae train --backend torch --nproc N`: what torchrun does, for one machine."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time


class WorkerFailed(RuntimeError):
    """A worker process of a multi-process run died or failed; the others were stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def launch_workers(target, args: tuple, nproc: int, port: int | None = None, poll: float = 0.2) -> None:
    """Run target(*args) in `nproc` fresh processes on this machine, each with torchrun's environment
    (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT) and OMP_NUM_THREADS = cores / nproc
    unless set; wait for all of them. If one dies or fails, the others are stopped and WorkerFailed names
    it (its own traceback is on stderr)."""
    port = port or free_port()
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked framework state
    processes = []
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    # the cores shared out, as torchrun does (it sets 1): N workers each with every core's worth of
    # threads oversubscribe the machine (docs/distributed.md)
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    try:
        for rank in range(nproc):
            os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                              MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS=threads)
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
        while any(p.is_alive() for p in processes):
            failed = [(rank, p.exitcode) for rank, p in enumerate(processes) if p.exitcode not in (None, 0)]
            if failed:
                break
            time.sleep(poll)
        failed = [(rank, p.exitcode) for rank, p in enumerate(processes) if p.exitcode not in (None, 0)]
        if failed:
            rank, code = failed[0]
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise WorkerFailed(f"worker {rank} of {nproc} {how}; the other workers were stopped")
    finally:
        for p in processes:
            if p.is_alive():
                p.terminate()
        for p in processes:
            p.join()
