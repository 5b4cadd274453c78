"""Fault injection: real training processes killed with SIGKILL inside every kind of write the run folder
gets, between writes and in the middle of a step, or stopped by SIGTERM; then resumed to the end. Each
time the final weights must equal an uninterrupted run's bitwise, and log.jsonl must hold exactly one
record per epoch, the uninterrupted run's.

The runs are forked from one driver process (this file, run as a script), which imports torch once and
never computes with it, so each child starts like a fresh process; a child that reaches its fault point
writes where it is to OUT.fault and sends itself SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

from twinvae import run_folder

EPOCHS, BATCH, EVERY = 2, 32, 3  # 270 training images: 8 steps an epoch; saves at 3 6 8 | 9 12 15 16

# name: (the fault while training, the fault while resuming, the expected exit of the faulty child)
SCENARIOS = {
    "run record": ({"replace": "run.json", "nth": 1}, None, -9),
    "first unit": ({"replace": "train_state.safetensors", "nth": 1}, None, -9),
    "previous unit kept": ({"replace": "train_state.previous.safetensors", "nth": 1}, None, -9),
    "third unit": ({"replace": "train_state.safetensors", "nth": 3}, None, -9),
    "model after its unit": ({"replace": "model.safetensors", "nth": 2}, None, -9),
    "torn log line": ({"log": "torn", "nth": 1}, None, -9),
    "log before its unit": ({"log": "after", "nth": 2}, None, -9),
    "mid-step": ({"step": 11}, None, -9),
    "end-of-run pictures": ({"replace": "loss.png", "nth": 1}, None, -9),
    "finished mark": ({"replace": "run.json", "nth": 2}, None, -9),
    "resume's record": ({"step": 5}, {"replace": "run.json", "nth": 1}, -9),
    "SIGTERM": ({"sigterm": 5}, None, 143),
}


# --- the driver (a separate process) ---------------------------------------------------------------------

def _train_argv(data: str, out: str) -> list[str]:
    return ["train", "--backend", "torch", "--dataset", "folder", "--data-dir", data, "--image-size", "8",
            "--latent-dim", "4", "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--checkpoint-every",
            str(EVERY), "--out", out, "--no-progress"]


def _die(out: str, where: str) -> None:
    Path(out + ".fault").write_text(where)
    os.kill(os.getpid(), signal.SIGKILL)


def _inject(fault: dict | None, out: str) -> None:
    """Patch the one place this child is to die (or be stopped) at."""
    if fault is None:
        return
    count = {"n": 0}

    def reached(where: str) -> bool:
        count["n"] += 1
        return count["n"] == fault["nth"]

    if "replace" in fault:  # every atomic write ends in os.replace: die with the temp file written, not renamed
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(dst).name == fault["replace"] and reached(str(dst)):
                _die(out, f"before renaming {Path(src).name} to {Path(dst).name}")
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    elif "log" in fault:
        real_append = run_folder.append_log

        def append_log(folder, record):
            if not reached("log"):
                return real_append(folder, record)
            if fault["log"] == "after":
                real_append(folder, record)
                _die(out, "after a log record, before its unit")
            with open(Path(folder) / run_folder.LOG, "a") as f:
                f.write(json.dumps(record)[:40])
                f.flush()
                os.fsync(f.fileno())
            _die(out, "halfway through a log record")

        run_folder.append_log = append_log
    else:  # inside a step: after the optimizer's update, before the step returns
        import torch

        real_update, steps = torch.optim.Adam.step, {"n": 0}

        def update(optimizer, *args, **kwargs):  # the torch twin's step calls Adam's step once
            done = real_update(optimizer, *args, **kwargs)
            steps["n"] += 1
            if steps["n"] == fault.get("step"):
                _die(out, f"inside step {steps['n']}, after its update")
            if steps["n"] == fault.get("sigterm"):
                os.kill(os.getpid(), signal.SIGTERM)
            return done

        torch.optim.Adam.step = update


def _in_child(function) -> int:
    """function() in a forked child; its exit code, or minus the signal that killed it."""
    sys.stdout.flush()
    sys.stderr.flush()  # else the child's exit would write what this process had buffered a second time
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = function()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 1)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _drive(data: str, root: str) -> dict:
    from twinvae.cli import main

    def attempt(argv, out, fault):
        def run():
            _inject(fault, out)
            return main(argv)
        return _in_child(run)

    results = {"reference": attempt(_train_argv(data, f"{root}/reference"), f"{root}/reference", None)}
    for index, (name, (fault, resume_fault, _)) in enumerate(SCENARIOS.items()):
        out = f"{root}/{index}"
        codes = [attempt(_train_argv(data, out), out, fault)]
        # before its run record exists a folder holds no run yet: the same command starts it
        resume_argv = (["train", "--resume", out, "--no-progress"] if Path(out, run_folder.RECORD).exists()
                       else _train_argv(data, out))
        if resume_fault is not None:
            codes.append(attempt(resume_argv, out, resume_fault))
        codes.append(attempt(resume_argv, out, None))
        results[name] = codes
    return results


if __name__ == "__main__":
    # imported once here, before the forks, so that no child pays for them; nothing is computed here
    import matplotlib.pyplot  # noqa: F401
    import torch._dynamo  # noqa: F401 (torch.optim.Adam imports it: 2.5 s)

    import vae_torch.distributed  # noqa: F401

    print(json.dumps(_drive(sys.argv[1], sys.argv[2])))
    sys.exit(0)


# --- the tests --------------------------------------------------------------------------------------------

def write_image_folder(folder: Path, n: int = 300, size: int = 8) -> Path:
    """n small grey PNGs of smooth random blobs: a dataset that loads without scikit-learn."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1)
    for i in range(n):
        centre, width = rng.uniform(1, size - 1, 2), rng.uniform(1, 3)
        image = np.exp(-((grid - centre) ** 2).sum(-1) / (2 * width**2))
        Image.fromarray((255 * image).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def driven(made_once):
    def drive(root):
        data = write_image_folder(root / "images")
        done = subprocess.run([sys.executable, __file__, str(data), str(root)], capture_output=True, text=True,
                              timeout=600, cwd=Path(__file__).parent.parent)
        assert done.returncode == 0, done.stderr[-3000:]
        (root / "results.json").write_text(done.stdout.splitlines()[-1])
        (root / "output.txt").write_text(done.stdout + done.stderr)

    root = made_once("faults", drive)  # one driver for the run: xdist hands these tests to both workers
    return root, json.loads((root / "results.json").read_text()), (root / "output.txt").read_text()


def _weights(out: Path) -> dict:
    from vae_core.checkpoint import read_checkpoint

    return read_checkpoint(out / run_folder.CHECKPOINT)[0]


def _records(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in run_folder.read_log(out)]


# the fast tier's core case (`pytest -m fast`): kill -9 inside a step, then resume
CORE_SCENARIO = "mid-step"


@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.fast] if name == CORE_SCENARIO else [])
                                  for name in SCENARIOS])
def test_a_fault_then_resume_ends_as_an_uninterrupted_run(driven, name):
    root, results, output = driven
    out, reference = root / str(list(SCENARIOS).index(name)), root / "reference"
    assert results["reference"] == 0, output
    *faulty, last = results[name]
    assert faulty == [SCENARIOS[name][2]] * len(faulty) and last == 0, (results[name], output[-3000:])
    if SCENARIOS[name][2] == -9:
        assert Path(f"{out}.fault").is_file()  # it died where it was meant to
    expected, got = _weights(reference), _weights(out)
    assert all(np.array_equal(expected[k], got[k]) for k in expected)
    assert _records(out) == _records(reference) and [r["epoch"] for r in _records(out)] == [1, 2]
    assert not list(out.glob(".*.tmp"))
    for picture in ("loss.png", "samples.png", "interpolation-linear.png"):
        assert (out / picture).is_file()
    assert json.loads((out / run_folder.RECORD).read_text())["finished_step"] == 16


def test_the_faults_were_reported(driven):
    _, _, output = driven
    assert "its last line is torn (a crash while it was written); dropped" in output
    assert "removed" in output and "left by an interrupted write" in output
    assert "holds no complete checkpoint: training it from its beginning" in output
    assert "stopped by SIGTERM at step 5; the state is saved" in output


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_not(tmp_path):
    from twinvae.trainer import TrainOptions, resume, train
    from vae_core.config import VAEConfig

    config = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2)
    data = write_image_folder(tmp_path / "images", n=40)
    options = TrainOptions(backend="torch", dataset="folder", data_dir=str(data), image_size=8, epochs=1,
                           batch_size=32, out=str(tmp_path / "run"))
    train(config, options, progress=False, log=lambda *a: None)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from twinvae.run_folder import RunLock; "
                               "RunLock(sys.argv[1]).__enter__(); print('held', flush=True); time.sleep(60)",
                               options.out], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(run_folder.RunInUse, match=rf"{options.out} is in use by another twinvae process "
                                                      rf"\(PID {holder.pid}\)"):
            resume(options.out, epochs=2, progress=False, log=lambda *a: None)
        with pytest.raises(run_folder.RunInUse):
            train(config, options, progress=False, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    resume(options.out, epochs=2, progress=False, log=lambda *a: None)  # the dead holder's lock is gone
    assert [r["epoch"] for r in run_folder.read_log(Path(options.out))] == [1, 2]


@pytest.mark.serial
def test_sigterm_stops_every_data_parallel_worker_at_one_step(tmp_path):
    """`docker stop` signals the launcher; both workers save at the same step and the run exits 143."""
    data = write_image_folder(tmp_path / "images", n=300)
    out = tmp_path / "ddp"
    argv = [*_train_argv(str(data), str(out)), "--nproc", "2", "--epochs", "50"]
    run = subprocess.Popen([sys.executable, "-m", "twinvae", *argv], stderr=subprocess.PIPE, text=True,
                           cwd=Path(__file__).parent.parent)
    deadline = time.monotonic() + 120
    while not (out / run_folder.LOG).exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 143, stderr
    unit = run_folder.read_train_state(out / run_folder.TRAIN_STATE)
    assert f"stopped by SIGTERM at step {unit.position.step}; the state is saved" in stderr
    assert unit.position.step > 8 and unit.position.epoch < 50  # after the first epoch, before the end
