"""The security half of the reliability table (docs/training.md): no command writes, deletes or truncates a
file outside its run folder or its named outputs, none follows a link in a run folder, none replaces one of
its own inputs, every byte of a training state's header is checked, and each unclear failure a hostile or
careless user found is a message naming what is wrong. The export artifacts' half (code in a .pt2, a
sidecar that lies): twinvae/export_test.py."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from twinvae import cli, run_folder
from twinvae.cli import main
from twinvae.faults_test import write_image_folder
from twinvae.run_folder import Position
from vae_core import checkpoint
from vae_core.config import VAEConfig

TRAIN = ["--backend", "torch", "--dataset", "folder", "--image-size", "8", "--latent-dim", "2", "--batch-size",
         "30", "--no-progress"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "images", n=100)


def _train(capsys, images, out, *extra) -> tuple[int, str]:
    return _cli(capsys, "train", *TRAIN, "--data-dir", str(images), "--epochs", "1", "--out", str(out), *extra)


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _digest(paths) -> dict:
    """Each path's bytes (a link: where it points and the bytes there), to compare before and after."""
    return {str(p): (os.readlink(p) if p.is_symlink() else None,
                     hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None) for p in paths}


# --- a run touches only its own files ----------------------------------------------------------------------

def test_a_new_run_removes_only_its_own_temp_files_and_names_them(images, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    ours = [out / ".model.safetensors.ab12cd34.tmp", out / ".log.jsonl.x9_k2m3q.twinvae.tmp"]  # old, new
    theirs = [out / ".notes.txt.ab12cd34.tmp", out / ".model.safetensors.draft.tmp", out / ".cache.tmp"]
    for path in ours + theirs:
        path.write_bytes(b"half a file")
    before = _digest(theirs)
    code, said = _train(capsys, images, out)
    assert code == 0, said
    assert _digest(theirs) == before and not any(p.exists() for p in ours)
    for path in ours:
        assert f"removed {path}, left by an interrupted write" in said


def test_files_of_a_runs_names_without_a_run_record_are_not_called_a_run(images, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    mine = {"model.safetensors": b"my own weights", "results.md": b"# my results", "notes.txt": b"keep"}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    before = _digest(out.iterdir())
    code, said = _train(capsys, images, out)
    assert code == 2 and "already holds a run" not in said
    assert "holds model.safetensors, results.md but no run record (run.json)" in said
    code, said = _train(capsys, images, out, "--overwrite")
    assert code == 2 and "files that are not a run's: notes.txt" in said and "deletes only a run's own" in said
    assert _digest(out.iterdir()) == before


def test_overwrite_deletes_only_the_files_its_run_record_lists(images, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(capsys, images, out)[0] == 0
    planted = {out / "notes.txt": b"mine", out / ".notes.txt.ab12cd34.tmp": b"mine too",
               out / "extra.png": b"not the run's"}
    for path, data in planted.items():
        path.write_bytes(data)
    record = json.loads((out / run_folder.RECORD).read_text())
    assert record["files"] == list(run_folder.RUN_FILES)
    record["files"] = [*record["files"], "notes.txt", "../outside.txt"]  # an edited record claims more
    (out / run_folder.RECORD).write_text(json.dumps(record))
    (tmp_path / "outside.txt").write_bytes(b"outside")
    before = _digest([*planted, tmp_path / "outside.txt"])
    code, said = _train(capsys, images, out, "--overwrite")
    assert code == 0, said
    assert "--overwrite: deleted run.json, log.jsonl, model.safetensors" in said
    assert _digest([*planted, tmp_path / "outside.txt"]) == before


@pytest.mark.parametrize("name", [run_folder.LOCK, run_folder.LOG, run_folder.TRAIN_STATE, run_folder.RECORD])
def test_a_symlink_in_a_run_folder_is_refused_and_its_target_untouched(images, tmp_path, capsys, name):
    out = tmp_path / "run"
    assert _train(capsys, images, out)[0] == 0
    target = tmp_path / "outside.txt"
    target.write_bytes(b"a file of the user's, outside the run")
    saved = out / f"{name}.saved"
    if (out / name).exists():
        os.replace(out / name, saved)
    (out / name).symlink_to(target)
    before = _digest([target])
    code, said = _cli(capsys, "train", "--resume", out, "--epochs", "2", "--no-progress")
    assert code == 2 and (f"{name} -> {target}" in said or f"{out / name} is a symbolic link" in said), said
    assert _digest([target]) == before
    code, said = _train(capsys, images, out, "--overwrite")
    assert code == 2 and _digest([target]) == before


def test_a_lock_file_that_is_not_a_pid_is_not_overwritten(tmp_path):
    (tmp_path / run_folder.LOCK).write_bytes(b"the user's own run.lock, of another tool\n")
    with pytest.raises(run_folder.RunFolderError, match="is not a twinvae run lock"):
        run_folder.RunLock(tmp_path).__enter__()
    assert (tmp_path / run_folder.LOCK).read_bytes() == b"the user's own run.lock, of another tool\n"


@pytest.fixture(scope="module")
def finished(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *TRAIN, "--data-dir", str(images), "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("flag", ["--json", "--markdown"])
def test_evaluate_never_writes_over_the_checkpoint_it_reads(finished, tmp_path, capsys, flag):
    checkpoint_path = tmp_path / "model.safetensors"
    checkpoint_path.write_bytes((finished / "model.safetensors").read_bytes())
    before = _digest([checkpoint_path])
    code, said = _cli(capsys, "evaluate", checkpoint_path, flag, checkpoint_path, "--backend", "torch")
    assert code == 2 and f"{checkpoint_path} is {checkpoint_path}, an input of this command" in said
    assert _digest([checkpoint_path]) == before
    other = tmp_path / "link.json"
    other.hardlink_to(checkpoint_path)  # another name of the same file
    code, said = _cli(capsys, "evaluate", checkpoint_path, flag, other, "--backend", "torch")
    assert code == 2 and "an input of this command" in said and _digest([checkpoint_path]) == before


def test_no_output_replaces_an_input_whatever_names_it(finished, tmp_path, capsys):
    """A checkpoint named as a picture sample would write, and an image that denoise would write over."""
    named = tmp_path / "samples.png"
    named.write_bytes((finished / "model.safetensors").read_bytes())
    before = _digest([named])
    code, said = _cli(capsys, "sample", named, "--backend", "torch")
    assert code == 2 and f"{named} is {named}, an input of this command" in said and _digest([named]) == before
    noisy = tmp_path / "denoised"
    noisy.mkdir()
    write_image_folder(noisy, n=2)
    before = _digest(noisy.iterdir())
    code, said = _cli(capsys, "denoise", finished / "model.safetensors", "--backend", "torch", "--out", tmp_path,
                      noisy / "000.png")
    assert code == 2 and "an input of this command" in said and _digest(noisy.iterdir()) == before


def test_sample_out_naming_a_file_is_refused(finished, tmp_path, capsys):
    (tmp_path / "picture.png").write_bytes(b"mine")
    code, said = _cli(capsys, "sample", finished / "model.safetensors", "--backend", "torch", "--out",
                      tmp_path / "picture.png")
    assert code == 2 and f"--out {tmp_path / 'picture.png'} is a file; it names the folder the PNGs go to" in said
    assert (tmp_path / "picture.png").read_bytes() == b"mine"


def test_nothing_around_a_run_is_touched_by_any_command(images, tmp_path, capsys):
    """Files and links planted beside a run folder, inside it and beside a named output stay byte for byte
    through train, resume, overwrite, evaluate, sample and export."""
    out, outputs = tmp_path / "run", tmp_path / "outputs"
    out.mkdir()
    outputs.mkdir()
    outside = tmp_path / "outside.txt"
    planted = [outside, tmp_path / ".outside.txt.ab12cd34.tmp", out / "notes.txt", out / ".notes.ab12cd34.tmp",
               out / ".model.safetensors.draft.tmp", outputs / "notes.txt", outputs / ".eval.json.ab12cd34.tmp"]
    for path in planted:
        path.write_bytes(f"planted {path.name}".encode())
    links = [out / "link-to-outside", outputs / "link-to-outside"]
    for link in links:
        link.symlink_to(outside)
    before = _digest(planted + links)
    model = out / "model.safetensors"
    commands = [["train", *TRAIN, "--data-dir", images, "--epochs", "1", "--out", out, "--checkpoint-every", "1"],
                ["train", "--resume", out, "--epochs", "2", "--no-progress"],
                ["train", *TRAIN, "--data-dir", images, "--epochs", "1", "--out", out, "--overwrite"],
                ["evaluate", model, "--backend", "torch", "--k", "2", "--data-dir", images, "--json",
                 outputs / "eval.json", "--markdown", outputs / "eval.md", "--no-progress"],
                ["sample", model, "--backend", "torch", "--out", outputs],
                ["export", model, "--format", "torch.export", "--part", "decoder", "--out", outputs / "d.pt2"]]
    for argv in commands:
        code, said = _cli(capsys, *argv)
        assert code == 0, (argv, said)
        assert _digest(planted + links) == before, argv
    written = {p.name for p in outputs.iterdir()} - {p.name for p in planted + links}
    assert written == {"eval.json", "eval.md", "samples.png", "d.pt2", "d.pt2.json"}


# --- every header byte checked -----------------------------------------------------------------------------

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2)
SIZE = run_folder.RunSize(epochs=4, steps_per_epoch=5)


def _save(folder: Path, position: Position) -> None:
    from vae_core.layout import init_weights

    weights = init_weights(CONFIG, 0)
    optimizer = {"step": np.asarray(position.step, np.int64),
                 **{f"{m}.{k}": np.zeros_like(v) for k, v in weights.items() for m in ("exp_avg", "exp_avg_sq")}}
    run_folder.save_unit(folder, weights, optimizer, position, CONFIG)


def test_a_flipped_bit_in_a_units_position_falls_back_to_the_unit_before(tmp_path):
    _save(tmp_path, Position(1, 0, 5))
    _save(tmp_path, Position(2, 0, 10))
    path = tmp_path / run_folder.TRAIN_STATE
    data = bytearray(path.read_bytes())
    at = data.index(b'epoch\\": 2') + len(b'epoch\\": ')
    data[at] ^= 0x01  # "2" -> "3": a position the file never held (the header checksum finds it first)
    path.write_bytes(bytes(data))
    said = []
    unit = run_folder.read_unit(tmp_path, CONFIG, said.append, SIZE)
    assert unit.position == Position(1, 0, 5)
    assert "its header" in said[0] and "resuming from the unit before" in said[0]


@pytest.mark.parametrize("position, words", [
    (Position(-1, 0, 0), "its counts are not ints >= 0"),
    (Position(0, 10**6, 10**6), "the run's epochs have 5 steps each"),
    (Position(1, 0, 7), "the run's epochs have 5 steps each"),
    (Position(9, 0, 45), "the run has 4 epochs"),
    (Position(1, 0, 5, [0.0, float("nan"), 0.0]), "its loss sums are not three finite numbers"),
])
def test_a_position_that_cannot_be_the_runs_falls_back_even_with_a_valid_checksum(tmp_path, position, words):
    """An edited header whose checksum was rewritten too (an editor, or a bug): the range check."""
    _save(tmp_path, Position(1, 0, 5))
    _save(tmp_path, position)
    said = []
    assert run_folder.read_unit(tmp_path, CONFIG, said.append, SIZE).position == Position(1, 0, 5)
    assert words in said[0], said


def test_a_unit_written_before_the_header_checksum_resumes_range_checked_with_a_warning(tmp_path):
    from safetensors.numpy import load, save

    _save(tmp_path, Position(1, 0, 5))
    path = tmp_path / run_folder.TRAIN_STATE
    arrays, header = checkpoint.read_safetensors(path, "training state")
    header.pop(checkpoint.HEADER_CHECKSUM)
    path.write_bytes(save(load(path.read_bytes()), metadata=header))
    said = []
    assert run_folder.read_unit(tmp_path, CONFIG, said.append, SIZE).position == Position(1, 0, 5)
    assert "has no header checksum (written before twinvae kept one): its position is range-checked" in said[0]
    header["position"] = json.dumps({"epoch": 1, "batch": 0, "step": 6, "sums": [0, 0, 0]})
    path.write_bytes(save(load(path.read_bytes()), metadata=header))
    with pytest.raises(ValueError, match="Adam's state counts 5 steps"):
        run_folder.read_unit(tmp_path, CONFIG, said.append, SIZE)


# --- unclear messages, made clear ---------------------------------------------------------------------------

def test_a_full_disk_names_the_file_and_how_to_go_on(images, tmp_path, capsys, monkeypatch):
    import errno

    out = tmp_path / "run"
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 6:  # past the run record and the first units: the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    code, said = _train(capsys, images, out, "--checkpoint-every", "1")
    assert code == 2
    assert "cannot write" in said and "the disk is full" in said and f"--resume {out}" in said, said
    monkeypatch.setattr(checkpoint.os, "fsync", real_fsync)
    code, said = _cli(capsys, "train", "--resume", out, "--no-progress")
    assert code == 0, said


def test_resume_of_a_file_and_a_run_record_of_wrong_types_are_named(finished, tmp_path, capsys):
    code, said = _cli(capsys, "train", "--resume", finished / "model.safetensors")
    assert code == 2 and f"--resume takes a run folder; {finished / 'model.safetensors'} is a file (the run " \
        f"folder it is in is {finished})" in said
    copy = tmp_path / "run"
    copy.mkdir()
    for name in run_folder.RUN_FILES:
        if (finished / name).exists():
            (copy / name).write_bytes((finished / name).read_bytes())
    record = json.loads((copy / run_folder.RECORD).read_text())
    record["options"]["epochs"] = "3"
    (copy / run_folder.RECORD).write_text(json.dumps(record))
    code, said = _cli(capsys, "train", "--resume", copy)
    assert code == 2 and "option epochs must be int, got '3'" in said


def test_a_lost_log_is_said_on_resume(images, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(capsys, images, out)[0] == 0
    (out / run_folder.LOG).unlink()
    code, said = _cli(capsys, "train", "--resume", out, "--epochs", "2", "--no-progress")
    assert code == 0 and f"warning: {out / run_folder.LOG} is missing: the records of epochs 1 to 1 are" in said


def test_image_size_zero_and_ctrl_c_at_start_up(images, tmp_path, capsys, monkeypatch):
    code, said = _cli(capsys, "train", "--dataset", "folder", "--data-dir", images, "--image-size", "0")
    assert code == 2 and "--image-size must be a positive number of pixels, got 0" in said

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("twinvae.trainer.runs.load_dataset", interrupted)
    code, said = _train(capsys, images, tmp_path / "run")
    assert code == 130 and "interrupted (Ctrl-C) before training started" in said and "Traceback" not in said


def test_a_float64_checkpoint_runs_on_the_default_jax_backend(finished, tmp_path):
    """A fresh process (64-bit JAX is process-wide): the command turns it on, as a user cannot."""
    from vae_core.checkpoint import read_checkpoint, write_checkpoint

    weights, config, metadata = read_checkpoint(finished / "model.safetensors")
    path = tmp_path / "model64.safetensors"
    write_checkpoint(path, {k: v.astype(np.float64) for k, v in weights.items()}, config, metadata)
    done = subprocess.run([sys.executable, "-m", "twinvae", "sample", str(path), "--n", "4"], capture_output=True,
                          text=True, cwd=Path(cli.__file__).parent.parent, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "samples.png").is_file()


def test_float_images_are_trained_on_by_their_values_and_no_discrete_likelihood_claims_them(tmp_path, capsys):
    """A float TIFF in [0, 1] was read as all zeros and trained on (exit 0); now by its values, and a
    discretized logistic, a mass on grey levels that float images do not take, is refused."""
    from PIL import Image

    from twinvae.data import load_folder

    folder = tmp_path / "floats"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.random((8, 8), dtype=np.float32)).save(folder / f"{i}.tif")
    data = load_folder(folder, 8)
    assert data.train_x.max() > 0.9 and data.levels == 0
    code, said = _cli(capsys, "train", *TRAIN, "--data-dir", folder, "--likelihood", "discretized_logistic",
                      "--out", tmp_path / "run")
    assert code == 2 and "lie on no grid of levels" in said and not (tmp_path / "run" / "run.json").exists()


def test_parity_never_writes_its_table_over_the_config_it_checks(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"image_shape": [1, 8, 8], "conv_channels": [4], "latent_dim": 2}))
    before = _digest([config])
    for flag in ("--markdown", "--brief"):
        with pytest.raises(SystemExit) as info:
            main(["parity", "--config", str(config), flag, str(config)])
        assert info.value.code == 2 and "an input of this command" in capsys.readouterr().err
    assert _digest([config]) == before


def test_a_run_json_that_is_no_run_record_claims_nothing(images, tmp_path, capsys):
    """A user's own run.json beside their model.safetensors and results.md: not a run, so neither a plain
    start ("already holds a run") nor --overwrite (which would delete them) treats it as one."""
    out = tmp_path / "mine"
    out.mkdir()
    for name, data in {"run.json": b'{"experiment": "mine"}', "model.safetensors": b"weights",
                       "results.md": b"# mine"}.items():
        (out / name).write_bytes(data)
    before = _digest(out.iterdir())
    code, said = _train(capsys, images, out)
    assert code == 2 and "already holds a run" not in said and "but no run record" in said
    code, said = _train(capsys, images, out, "--overwrite")
    assert code == 2 and "its run.json is not a twinvae run record" in said
    assert _digest(out.iterdir()) == before


@pytest.mark.parametrize("name", [run_folder.LOG, run_folder.LOCK])
def test_a_hard_link_in_a_run_folder_is_not_written_through(images, tmp_path, capsys, name):
    out = tmp_path / "run"
    assert _train(capsys, images, out)[0] == 0
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"" if name == run_folder.LOCK else b"the user's own log\n")  # a lock looks like one
    (out / name).unlink()
    (out / name).hardlink_to(outside)
    before = _digest([outside])
    code, said = _cli(capsys, "train", "--resume", out, "--epochs", "2", "--no-progress")
    assert code == 2 and "hard link" in said and _digest([outside]) == before


def test_a_run_folder_inside_the_data_folder_resumes_and_overwrites(tmp_path, capsys):
    """The data files are kept from being written over; the run's own files under --data-dir are not data."""
    from twinvae.datasets import IDX_FILES
    from twinvae.datasets_test import idx_bytes

    rng = np.random.default_rng(0)
    shapes = {"train_x": (64, 28, 28), "train_y": (64,), "test_x": (8, 28, 28), "test_y": (8,)}
    for key, filename in IDX_FILES.items():
        (tmp_path / filename).write_bytes(idx_bytes(rng.integers(0, 10 if key.endswith("_y") else 256, shapes[key],
                                                                 dtype=np.uint8)))
    before = _digest(tmp_path / f for f in IDX_FILES.values())
    out = tmp_path / "runs" / "a"
    argv = ["train", "--backend", "torch", "--dataset", "mnist", "--data-dir", tmp_path, "--latent-dim", "2",
            "--batch-size", "32", "--epochs", "1", "--out", out, "--no-progress"]
    assert _cli(capsys, *argv)[0] == 0
    code, said = _cli(capsys, "train", "--resume", out, "--epochs", "2", "--no-progress")
    assert code == 0, said
    for _ in range(3):  # each --overwrite deletes the run, whose files' inodes the next one may reuse
        code, said = _cli(capsys, *argv, "--overwrite")
        assert code == 0, said
    assert _digest(tmp_path / f for f in IDX_FILES.values()) == before
    code, said = _cli(capsys, "evaluate", out / "model.safetensors", "--backend", "torch", "--k", "2",
                      "--data-dir", tmp_path, "--json", tmp_path / IDX_FILES["test_x"], "--no-progress")
    assert code == 2 and "an input of this command" in said and _digest(tmp_path / f for f in IDX_FILES.values()) \
        == before
