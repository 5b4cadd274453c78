"""Data-parallel training on the frameworks' own engines (JAX mesh, torch DDP, two JAX hosts) through
`twinvae train`, against single-device training on the same global batches and eps, in float64; and the
errors a distributed run must give."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from twinvae.launcher import free_port
from twinvae.parity.measures import worst
from twinvae.run_folder import read_train_state
from twinvae.trainer import TrainOptions
from vae_core.checkpoint import read_checkpoint
from vae_core.layout import init_weights
from vae_core.parallel import check_divisible_batch, worker_slice

pytestmark = pytest.mark.serial  # two worker processes of their own: not beside other tests

ROUNDOFF = 1e-10  # float64: N workers split each sum in N parts, so only rounding may differ


def test_a_batch_that_does_not_divide_is_an_error():
    with pytest.raises(ValueError, match="a global batch of 7 does not divide by 2 processes"):
        worker_slice(np.zeros((7, 4)), 0, 2)
    assert worker_slice(np.arange(8), 1, 2).tolist() == [4, 5, 6, 7]  # rows, not a strided split
    with pytest.raises(ValueError, match="a global batch of 9 does not divide by 4 devices"):
        check_divisible_batch(9, 4, "devices")


def test_a_taken_port_is_a_clear_error():
    from vae_torch import distributed

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"could not start the gloo process group at 127.0.0.1:{port} "
                                               rf"\(rank 0 of 2\).*port in use"):
            distributed.initialize(f"127.0.0.1:{port}", 2, 0, backend="gloo")


# --- `twinvae train` data-parallel: the same run as on one device; only rank 0 writes -------------------

# a changing learning rate and beta (warm-ups); a constant rate after, since a cosine's depends on the
# epochs planned, which resume's --epochs changes. Class-conditional, so each worker's rows of the labels
# go with its rows of the images (an unconditional model takes none).
TRAIN = ["train", "--dataset", "digits", "--batch-size", "64", "--dtype", "float64", "--no-progress",
         "--lr-warmup", "5", "--kl-warmup", "10", "--num-classes", "10"]


def _env(**extra):
    return {**os.environ, "JAX_ENABLE_X64": "1", **extra,
            "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}


def _cli(args, env=None, timeout=300, check=True):
    done = subprocess.run([sys.executable, "-m", "twinvae", *args], env=_env(**(env or {})),
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def _log(folder):
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def _same_run(a, b):
    """Two run folders: the same log figures and the same final weights, to float64 rounding."""
    for ra, rb in zip(_log(a), _log(b), strict=True):
        assert (ra["epoch"], ra["step"]) == (rb["epoch"], rb["step"])
        for split in ("train", "test"):
            for term, value in ra[split].items():
                assert abs(value - rb[split][term]) <= ROUNDOFF * abs(rb[split][term]), (split, term)
    (wa, config, _), (wb, _, _) = (read_checkpoint(folder / "model.safetensors") for folder in (a, b))
    assert worst(wa, wb)[0] <= ROUNDOFF
    assert worst(wa, init_weights(config, 0))[0] > 1e-4  # trained: not two initialisations compared


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    _cli([*TRAIN, "--backend", "torch", "--epochs", "2", "--out", str(out)])
    return out


def test_torch_nproc_trains_as_one_device_and_resumes_exactly(single_run, tmp_path):
    """One data-parallel run of an epoch, then its resume to the second (nproc 2, from the run record): the
    same run as on one device, written by one writer (one record per epoch, from either launch). An epoch
    after another in one launch of torch's workers: the torchrun test below."""
    out = tmp_path / "ddp"
    _cli([*TRAIN, "--backend", "torch", "--nproc", "2", "--epochs", "1", "--out", str(out)])
    _cli(["train", "--resume", str(out), "--epochs", "2", "--no-progress"])
    _same_run(out, single_run)
    assert len(_log(out)) == 2
    assert json.loads((out / "run.json").read_text())["options"]["nproc"] == 2


def test_jax_devices_train_as_one_device(single_run, tmp_path):
    out = tmp_path / "mesh"
    _cli([*TRAIN, "--backend", "jax", "--devices", "all", "--epochs", "2", "--out", str(out)],
         env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    _same_run(out, single_run)
    assert len(_log(out)) == 2  # one writer: one record per epoch
    assert json.loads((out / "run.json").read_text())["options"]["devices"] == 0


def test_torchrun_module_trains_as_one_device(single_run, tmp_path):
    """`torchrun --nproc-per-node 2 -m twinvae train --backend torch ...`: torch's own launcher."""
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "twinvae", *TRAIN,
                           "--backend", "torch", "--epochs", "2", "--out", str(tmp_path / "torchrun")],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_run(tmp_path / "torchrun", single_run)


def test_jax_on_two_hosts_trains_as_one_device(single_run, tmp_path):
    """Multi-host JAX, two processes on this machine (one CPU device each, gloo collectives), joined
    through the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment."""
    port = free_port()
    runs_ = [subprocess.Popen(
        [sys.executable, "-m", "twinvae", *TRAIN, "--backend", "jax", "--devices", "all", "--epochs", "2",
         "--out", str(tmp_path / "hosts")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**_env(), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
             "JAX_PROCESS_ID": str(i)}) for i in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs_]
    assert all(run.returncode == 0 for run in runs_), [err[-2000:] for _, err in outputs]
    _same_run(tmp_path / "hosts", single_run)


def test_the_iwae_bound_of_two_levels_trains_data_parallel_as_on_one_device(tmp_path):
    """eps of K = 3 samples of both levels split on its batch axis (each worker's images, every sample of
    them, labels repeated over K): torch's processes and JAX's devices train the IWAE bound of a two-level
    conditional model as one torch process does."""
    iwae = ["train", "--dataset", "digits", "--batch-size", "64", "--dtype", "float64", "--no-progress",
            "--lr-warmup", "5", "--num-classes", "10", "--objective", "iwae", "--train-samples", "3",
            "--hierarchy", "2", "--prior-width", "16", "--epochs", "1"]
    _cli([*iwae, "--backend", "torch", "--out", str(tmp_path / "one")])
    _cli([*iwae, "--backend", "torch", "--nproc", "2", "--out", str(tmp_path / "ddp")])
    _cli([*iwae, "--backend", "jax", "--devices", "all", "--out", str(tmp_path / "mesh")],
         env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    _same_run(tmp_path / "ddp", tmp_path / "one")
    _same_run(tmp_path / "mesh", tmp_path / "one")


def test_a_dead_worker_stops_the_run_and_leaves_whole_files(tmp_path):
    """Kill one of two torch workers mid-run: the run stops with an error naming it, and the checkpoint
    and training state on disk load (each is written atomically, by rank 0 only)."""
    out = tmp_path / "run"
    env = _env(TWINVAE_DIST_TIMEOUT="30")
    run = subprocess.Popen([sys.executable, "-m", "twinvae", *TRAIN, "--backend", "torch", "--nproc", "2",
                            "--epochs", "200", "--checkpoint-every", "3", "--out", str(out)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "train_state.safetensors").exists():
            assert run.poll() is None and time.time() < deadline, "the run never saved"
            time.sleep(0.2)
        workers = subprocess.run(["pgrep", "-P", str(run.pid)], capture_output=True, text=True).stdout.split()
        # the workers (not the launcher's resource tracker); kill the last started
        ranked = sorted(int(pid) for pid in workers if "spawn_main" in _cmdline(pid))
        assert len(ranked) == 2, [_cmdline(pid) for pid in workers]
        os.kill(ranked[-1], signal.SIGKILL)
        _, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert re.search(r"worker \d of 2 was killed by signal 9; the other workers were stopped", stderr), \
        stderr[-2000:]
    read_checkpoint(out / "model.safetensors")
    read_train_state(out / "train_state.safetensors")


def _cmdline(pid) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
    except OSError:
        return ""


def test_bad_data_parallel_options():
    with pytest.raises(ValueError, match="a global batch of 7 does not divide by 2 processes"):
        TrainOptions(backend="torch", nproc=2, batch_size=7)
    with pytest.raises(ValueError, match="devices is JAX's data parallelism"):
        TrainOptions(backend="torch", devices=2)
    with pytest.raises(ValueError, match="nproc is torch's data parallelism"):
        TrainOptions(backend="jax", nproc=2)
    with pytest.raises(ValueError, match="free bits clamp the KL's mean over the global batch"):
        TrainOptions(backend="torch", nproc=2, free_bits=0.1)
