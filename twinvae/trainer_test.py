"""The trainer and the CLI under bad input and faults that need no killed process (twinvae/faults_test.py
has those): each refusal names the file or the value, comes before the work, and keeps what is saved."""

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from twinvae import run_folder
from twinvae.cli import main
from twinvae.datasets_test import idx_bytes
from twinvae.faults_test import write_image_folder
from twinvae.trainer import TrainingDiverged, TrainOptions, loop, resume, train
from twinvae.twin import load_twin
from vae_core import seeds
from vae_core.checkpoint_test import flip_bit
from vae_core.config import VAEConfig

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4, 8), latent_dim=2)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "images", n=100)


def _options(images, out, **kwargs):
    return TrainOptions(**{"backend": "torch", "dataset": "folder", "data_dir": str(images), "image_size": 8,
                           "epochs": 2, "batch_size": 30, "out": str(out), **kwargs})


def _quiet(*args):
    pass


def test_a_run_that_failed_in_its_first_epoch_can_be_resumed_or_started_again(images, tmp_path, monkeypatch):
    real = seeds.eps_for_step
    monkeypatch.setattr(seeds, "eps_for_step", lambda seed, step, *a, **k: real(seed, step, *a, **k) * np.nan)
    options = _options(images, tmp_path / "run")
    with pytest.raises(TrainingDiverged, match="at step 1 .* No checkpoint was written yet"):
        train(CONFIG, options, progress=False, log=_quiet)
    monkeypatch.setattr(seeds, "eps_for_step", real)
    with pytest.raises(ValueError, match=rf"stopped before its first checkpoint: resume it from its beginning "
                                         rf"with --resume {options.out}, or start it again with --overwrite"):
        train(CONFIG, options, progress=False, log=_quiet)
    said = []
    resume(options.out, progress=False, log=said.append)
    assert "holds no complete checkpoint: training it from its beginning" in said[0]
    reference = _options(images, tmp_path / "reference")
    train(CONFIG, reference, progress=False, log=_quiet)
    assert _records(options.out) == _records(reference.out)
    train(CONFIG, options, progress=False, log=_quiet, overwrite=True)  # --overwrite: the same run again
    assert _records(options.out) == _records(reference.out)


def _records(out):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in run_folder.read_log(Path(out))]


def test_a_state_that_turned_non_finite_is_not_saved_over_the_last_good_one(images, tmp_path, monkeypatch):
    """The loss can be finite at a step whose gradients overflowed Adam's second moment: the save finds it."""
    options = _options(images, tmp_path / "run", checkpoint_every=2)
    export = load_twin("torch").export_optimizer_state

    def overflowing(state):
        arrays = export(state)
        if int(arrays["step"]) >= 4:
            arrays["exp_avg_sq.fc_mu.weight"][:] = np.inf
        return arrays

    monkeypatch.setattr(load_twin("torch"), "export_optimizer_state", overflowing)
    with pytest.raises(TrainingDiverged, match=r"Adam's state 'exp_avg_sq.fc_mu.weight' holds NaN or inf at "
                                               r"step 4: the run diverged; not saved. The last good checkpoint "
                                               rf"\({options.out}, step 3\) is intact"):
        train(CONFIG, options, progress=False, log=_quiet)
    assert run_folder.read_train_state(Path(options.out) / run_folder.TRAIN_STATE).position.step == 3
    monkeypatch.setattr(load_twin("torch"), "export_optimizer_state", export)
    resume(options.out, progress=False, log=_quiet)
    assert [r["epoch"] for r in run_folder.read_log(Path(options.out))] == [1, 2]


def test_a_small_test_set_gets_fewer_interpolation_pairs_and_too_few_is_refused_up_front(tmp_path):
    small = write_image_folder(tmp_path / "twenty", n=20)  # 2 test images: one interpolation pair
    options = TrainOptions(backend="torch", dataset="folder", data_dir=str(small), image_size=8, epochs=1,
                           batch_size=9, out=str(tmp_path / "run"))
    train(CONFIG, options, progress=False, log=_quiet)
    assert (tmp_path / "run" / "interpolation-linear.png").is_file()
    tiny = write_image_folder(tmp_path / "five", n=5)  # 0 test images (10%)
    with pytest.raises(ValueError, match="dataset has 0 test image.*need at least 2"):
        train(CONFIG, TrainOptions(backend="torch", dataset="folder", data_dir=str(tiny), image_size=8, epochs=1,
                                   batch_size=2, out=str(tmp_path / "tiny")), progress=False)
    assert not (tmp_path / "tiny").exists()  # refused before anything was written


def test_test_images_of_another_size_are_refused_before_training(tmp_path):
    rng = np.random.default_rng(0)
    shapes = {"train_x": (40, 28, 28), "train_y": (40,), "test_x": (8, 10, 10), "test_y": (8,)}
    from twinvae.datasets import IDX_FILES

    for key, filename in IDX_FILES.items():
        array = rng.integers(0, 255, shapes[key], np.uint8)
        (tmp_path / f"{filename}.gz").write_bytes(gzip.compress(idx_bytes(array)))
    config = VAEConfig(image_shape=(1, 28, 28), conv_channels=(4,), latent_dim=2)
    with pytest.raises(ValueError, match=r"the mnist test images are \(1, 10, 10\) \(C, H, W\), the model takes "
                                         r"\(1, 28, 28\)"):
        train(config, TrainOptions(backend="torch", dataset="mnist", data_dir=str(tmp_path), epochs=1,
                                   batch_size=8, out=str(tmp_path / "run")), progress=False)


# --- the command line ------------------------------------------------------------------------------------------

def _cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def finished(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    train(CONFIG, _options(images, out), progress=False, log=_quiet)
    return out


def test_resume_refuses_options_it_would_ignore(finished, capsys):
    code, said = _cli(capsys, "train", "--resume", str(finished), "--epochs", "3", "--batch-size", "64", "--lr",
                      "0.5", "--preset", "mlp", "--no-progress")
    assert code == 2
    assert "only --epochs, --backend, --devices and --nproc may change" in said
    for words in ("--batch-size 64 (the run has 30); --lr 0.5 (the run has 0.001)",
                  "the model's arch 'mlp' (the run has 'conv')"):
        assert words in said
    code, said = _cli(capsys, "train", "--resume", str(finished), "--image-size", "16")
    assert code == 2 and "--image-size 16 (the run has 8)" in said
    assert _cli(capsys, "train", "--resume", str(finished), "--overwrite")[0] == 2
    code, said = _cli(capsys, "train", "--resume", str(finished), "--epochs", "0")
    assert code == 2 and "epochs must be at least 1, got 0" in said


def test_resume_applies_and_records_what_may_change(images, tmp_path, capsys):
    out = tmp_path / "run"
    train(CONFIG, _options(images, out, epochs=1), progress=False, log=_quiet)
    code, said = _cli(capsys, "train", "--resume", str(out), "--epochs", "2", "--batch-size", "30",
                      "--no-progress")
    assert code == 0, said  # an option given at its stored value is no change
    record = json.loads((out / run_folder.RECORD).read_text())
    assert record["options"]["epochs"] == 2 and record["resumes"][0]["changed"] == {"epochs": 2}
    assert record["finished_step"] == 2 * 3


@pytest.mark.parametrize("argv, words", [
    (["train", "--epochs", "0"], "epochs must be at least 1, got 0"),
    (["train", "--image-size", "16"], "--image-size applies to the folder dataset only; digits images are (1,"),
    (["train", "--channels", "3"], "--channels applies to the folder dataset only"),
    (["train", "--backend", "torch", "--nproc", "0"], "nproc must be at least 1 (processes), got 0"),
    (["train", "--objective", "iwae", "--train-samples", "3", "--kl-warmup", "10"],
     "a KL warm-up (kl_warmup) = 10 conflicts with objective='iwae' and train_samples=3"),
    (["train", "--objective", "iwae", "--train-samples", "3", "--free-bits", "0.5"],
     "free bits = 0.5 conflicts with objective='iwae'"),
    (["train", "--objective", "iwae", "--train-samples", "3", "--beta", "2"], "beta = 2.0 conflicts"),
    (["train", "--train-samples", "3"], "train_samples = 3 needs objective 'iwae'"),
    (["train", "--prior", "vamp", "--free-bits", "0.5"], "free bits = 0.5 conflicts with prior='vamp'"),
    (["train", "--prior", "vamp", "--num-classes", "10"], "prior 'vamp' with num_classes = 10 is not a model"),
    (["train", "--prior", "vamp", "--pseudo-inputs", "0"], "pseudo_inputs must be an int >= 1"),
])
def test_bad_training_flags_are_named(argv, words, capsys):
    code, said = _cli(capsys, *argv)
    assert code == 2 and words in said


def test_one_importance_sample_trains_as_the_elbo_and_k_samples_train_the_bound(images, tmp_path, capsys):
    """objective iwae with train_samples 1 is the ELBO, bitwise: the same eps, the same steps, the same log.
    With K = 3 (the flags of `twinvae train`) the steps take eps of 3 samples, the training loss is the
    bound's (at most the K samples' reconstruction + KL), the test figure stays the negative ELBO, and the
    checkpoint holds the objective (`twinvae inspect` shows it)."""
    train(CONFIG, _options(images, tmp_path / "elbo", epochs=1), progress=False, log=_quiet)
    one = dataclasses.replace(CONFIG, objective="iwae")
    train(one, _options(images, tmp_path / "one", epochs=1), progress=False, log=_quiet)
    assert _records(tmp_path / "one") == _records(tmp_path / "elbo")
    (tmp_path / "c.json").write_text(json.dumps(CONFIG.to_dict()))
    code, said = _cli(capsys, "train", "--config", str(tmp_path / "c.json"), "--dataset", "folder", "--data-dir",
                      str(images), "--image-size", "8", "--epochs", "1", "--batch-size", "30", "--backend",
                      "torch", "--objective", "iwae", "--train-samples", "3", "--out", str(tmp_path / "iwae"),
                      "--no-progress")
    assert code == 0, said
    (iwae,), (elbo,) = _records(tmp_path / "iwae"), _records(tmp_path / "elbo")
    assert iwae["train"]["total"] <= iwae["train"]["reconstruction"] + iwae["train"]["kl"]
    assert iwae["train"] != elbo["train"]
    test = iwae["test"]  # the negative ELBO, beta 1
    assert test["total"] == pytest.approx(test["reconstruction"] + test["kl"], rel=1e-6) and test["kl"] > 0
    code, said = _cli(capsys, "inspect", str(tmp_path / "iwae" / "model.safetensors"))
    assert code == 0 and '"objective": "iwae"' in said and '"train_samples": 3' in said


def _evaluated_in_both_twins(capsys, checkpoint, images, tmp_path, words) -> dict:
    """`twinvae evaluate` of the checkpoint in each twin, each report saying `words`: their figures (JSON),
    held equal."""
    figures = {}
    for backend in ("jax", "torch"):
        code, said = _cli(capsys, "evaluate", checkpoint, "--backend", backend, "--k", "5", "--dataset", "folder",
                          "--data-dir", str(images), "--json", str(tmp_path / f"{backend}.json"), "--no-progress")
        assert code == 0 and words in said, said
        figures[backend] = json.loads((tmp_path / f"{backend}.json").read_text())
    for name in ("negative_elbo", "iwae_nll", "kl"):
        assert figures["jax"][name] == pytest.approx(figures["torch"][name], rel=1e-5), name
    return figures


def test_a_vampprior_model_trains_evaluates_and_samples_in_either_twin(images, tmp_path, capsys):
    """`twinvae train --prior vamp --pseudo-inputs 10` (JAX); its checkpoint holds the prior and its
    pseudo-inputs, evaluates in both twins to the same figures (the KL per dimension has no meaning for the
    mixture: none is printed), and samples from its mixture."""
    (tmp_path / "c.json").write_text(json.dumps(CONFIG.to_dict()))
    code, said = _cli(capsys, "train", "--config", str(tmp_path / "c.json"), "--dataset", "folder", "--data-dir",
                      str(images), "--image-size", "8", "--epochs", "1", "--batch-size", "30", "--backend", "jax",
                      "--prior", "vamp", "--pseudo-inputs", "10", "--out", str(tmp_path / "vamp"), "--no-progress")
    assert code == 0, said
    checkpoint = str(tmp_path / "vamp" / "model.safetensors")
    code, said = _cli(capsys, "inspect", checkpoint)
    assert code == 0 and '"prior": "vamp"' in said and '"pseudo_inputs": 10' in said and "pseudo_inputs" in said
    figures = _evaluated_in_both_twins(capsys, checkpoint, images, tmp_path,
                                       "none: the VampPrior's KL does not split by latent dimension")
    assert figures["torch"]["iwae_nll"] <= figures["torch"]["negative_elbo"] + 1.0
    code, said = _cli(capsys, "sample", checkpoint, "--backend", "torch", "--out", str(tmp_path / "samples"))
    assert code == 0 and (tmp_path / "samples" / "samples.png").stat().st_size > 0


def test_a_two_level_model_trains_evaluates_samples_interpolates_denoises_and_exports(images, tmp_path, capsys):
    """`twinvae train --hierarchy 2 --prior-width 8 --denoise 0.2` (torch); its checkpoint holds the
    hierarchy; it evaluates in both twins to the same figures, its denoising's PSNR among them (its active
    units and KL per dimension named z2's), samples, interpolates in z2, denoises, and exports its decoder
    (the path from z2 to the logits) and its whole VAE (eps of both levels' noise) as the torch twin computes
    them."""
    (tmp_path / "c.json").write_text(json.dumps(CONFIG.to_dict()))
    code, said = _cli(capsys, "train", "--config", str(tmp_path / "c.json"), "--dataset", "folder", "--data-dir",
                      str(images), "--image-size", "8", "--epochs", "1", "--batch-size", "30", "--backend",
                      "torch", "--hierarchy", "2", "--prior-width", "8", "--denoise", "0.2", "--out",
                      str(tmp_path / "hvae"), "--no-progress")
    assert code == 0, said
    checkpoint = str(tmp_path / "hvae" / "model.safetensors")
    code, said = _cli(capsys, "inspect", checkpoint)
    assert code == 0 and '"hierarchy": 2' in said and "prior_lower.hidden" in said, said
    figures = _evaluated_in_both_twins(capsys, checkpoint, images, tmp_path,
                                       "KL per latent dim  z2, the top latent's: ")
    assert figures["jax"]["denoising"] == pytest.approx(figures["torch"]["denoising"], rel=1e-5)
    for command in (["sample"], ["interpolate", "--data-dir", str(images), "--pairs", "3"]):
        code, said = _cli(capsys, *command[:1], checkpoint, "--backend", "jax", *command[1:], "--out",
                          str(tmp_path / command[0]))
        assert code == 0 and any((tmp_path / command[0]).glob("*.png")), said
    code, said = _cli(capsys, "denoise", checkpoint, "--backend", "jax", "--out", str(tmp_path / "denoised"),
                      str(images))
    assert code == 0 and any((tmp_path / "denoised").rglob("*.png")), said
    for part in ("decoder", "vae"):
        code, said = _cli(capsys, "export", checkpoint, "--format", "onnx", "--part", part, "--out",
                          str(tmp_path / f"{part}.onnx"))
        assert code == 0, said
    from twinvae.export import load  # onnxruntime: the export extra, as export_test.py's
    twin = load_twin("torch")
    model, config, _ = twin.load_checkpoint(checkpoint)
    rng = np.random.default_rng(0)
    z, eps = (rng.standard_normal((3, width)).astype(np.float32)
              for width in (config.latent_dim, config.noise_dim))
    x = rng.random((3, *config.image_shape)).astype(np.float32)
    expected = twin.to_numpy(model.decode(twin.as_input(z, model)))
    assert np.allclose(load(str(tmp_path / "decoder.onnx"))(z), expected, rtol=1e-4, atol=1e-5)
    out = model(twin.as_input(x, model), twin.as_input(eps, model))
    for given, wanted in zip(load(str(tmp_path / "vae.onnx"))(x, eps), (out.mu, out.logvar, out.logits)):
        assert np.allclose(given, twin.to_numpy(wanted), rtol=1e-4, atol=1e-5)


def test_a_broken_config_file_is_named(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('{"latent_dim": 3,')
    code, said = _cli(capsys, "train", "--config", str(broken), "--out", str(tmp_path / "run"))
    assert code == 2 and f"--config {broken} is not valid JSON: Expecting property name" in said
    broken.write_text('{"latent_dim": -3}')
    code, said = _cli(capsys, "train", "--config", str(broken), "--out", str(tmp_path / "run"))
    assert code == 2 and f"--config {broken}: " in said and "latent_dim" in said
    assert not (tmp_path / "run").exists()


def test_inspect_names_folders_and_training_states(finished, capsys):
    code, said = _cli(capsys, "inspect", str(finished))
    assert code == 2 and f"is a folder, not a file; the model checkpoint in it is {finished}/model.safetensors" \
        in said
    code, said = _cli(capsys, "inspect", str(finished / run_folder.TRAIN_STATE))
    assert code == 2 and "a twinvae training state (the optimizer and position of a run), not a model" in said


def test_evaluate_refuses_a_corrupt_file_and_an_unwritable_output_before_the_work(finished, tmp_path, capsys,
                                                                                   monkeypatch):
    import twinvae.checkpoint_commands

    def evaluate_checkpoint(path, *, k=1000, seed=0, **options):  # the parser reads k's and seed's defaults
        pytest.fail("evaluated")

    monkeypatch.setattr(twinvae.checkpoint_commands, "evaluate_checkpoint", evaluate_checkpoint)
    code, said = _cli(capsys, "evaluate", str(finished / "model.safetensors"), "--json",
                      str(tmp_path / "no" / "such" / "folder.json"))
    assert code == 2 and "cannot write" in said and "does not exist" in said
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes((finished / "model.safetensors").read_bytes())
    flip_bit(damaged, "fc_mu.weight")
    code, said = _cli(capsys, "evaluate", str(damaged))
    assert code == 2 and "tensor 'fc_mu.weight' does not match its SHA-256 checksum" in said


def test_evaluation_refuses_a_non_finite_figure(finished, images, tmp_path, capsys):
    from vae_core.checkpoint import read_checkpoint, write_checkpoint

    weights, config, metadata = read_checkpoint(finished / "model.safetensors")
    weights["fc_logvar.bias"][:] = 1e3  # finite weights whose variance overflows: exp(1000)
    overflowing = tmp_path / "overflowing.safetensors"
    write_checkpoint(overflowing, weights, config, metadata)
    code, said = _cli(capsys, "evaluate", str(overflowing), "--backend", "torch", "--k", "2", "--data-dir",
                      str(images), "--no-progress")
    assert code == 2 and f"checkpoint {overflowing}: its negative ELBO on the folder test set is nan, not a " \
        "figure to report" in said


def test_interpolate_checks_its_counts(finished, images, capsys):
    checkpoint = str(finished / "model.safetensors")
    for flags, words in ((["--pairs", "0"], "--pairs must be a positive int, got 0"),
                         (["--steps", "0"], "--steps must be at least 2 (the two ends of each path), got 0"),
                         (["--pairs", "500"], "500 pairs need 1000 distinct test images")):
        code, said = _cli(capsys, "interpolate", checkpoint, "--backend", "torch", "--data-dir", str(images),
                          *flags)
        assert code == 2 and words in said, said


def test_an_image_too_large_to_open_is_named(tmp_path, monkeypatch):
    from PIL import Image

    from twinvae.data import DataError, read_images

    Image.new("L", (100, 100)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10^4 pixels: past twice the limit, as 20000^2 is
    with pytest.raises(DataError, match=f"{tmp_path / 'huge.png'} is larger than images are read here"):
        read_images([tmp_path / "huge.png"], (1, 8, 8))


def test_a_run_saved_before_units_and_checksums_resumes_alike(images, tmp_path):
    """A version-1 training state (Adam's arrays only, its model in model.safetensors, no checksums)."""
    from safetensors.numpy import save

    reference, old = _options(images, tmp_path / "reference"), _options(images, tmp_path / "old", epochs=1)
    train(CONFIG, reference, progress=False, log=_quiet)
    train(CONFIG, old, progress=False, log=_quiet)
    out = Path(old.out)
    unit = run_folder.read_train_state(out / run_folder.TRAIN_STATE)
    header = {"format": "twinvae-train-state", "format_version": "1",
              "position": json.dumps(dataclasses.asdict(unit.position))}
    (out / run_folder.TRAIN_STATE).write_bytes(save(unit.optimizer, metadata=header))
    (out / run_folder.PREVIOUS_STATE).unlink(missing_ok=True)
    with pytest.warns(UserWarning, match="carries no checksums"):
        resume(old.out, epochs=2, progress=False, log=_quiet)
    assert _records(old.out) == _records(reference.out)


def test_a_run_records_where_its_time_went(images, tmp_path, monkeypatch):
    """run.json and results.md hold this process's seconds in each part (twinvae.timings); a part made slow
    shows in its own figure."""
    import time

    real = loop.negative_elbo

    def slow_evaluation(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "negative_elbo", slow_evaluation)
    options = _options(images, tmp_path / "run")
    train(CONFIG, options, progress=False, log=_quiet)
    timings = json.loads((Path(options.out) / run_folder.RECORD).read_text())["timings"]
    parts = ("input", "step", "readback", "evaluation", "saving", "pictures", "other")
    assert timings["steps"] == 2 * 3 and all(timings[p] >= 0 for p in parts)
    assert timings["evaluation"] >= 0.6 and timings["step"] > 0 and timings["saving"] > 0
    assert sum(timings[p] for p in parts) == pytest.approx(timings["total"], abs=0.01)
    assert f"Time of this process (6 steps, {timings['total']:.1f} s): input" in \
        (Path(options.out) / run_folder.RESULTS).read_text()


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_losses_read_back_in_groups_give_the_records_of_a_read_back_every_step(images, tmp_path, monkeypatch,
                                                                                backend):
    reads = []
    real_read_back = loop.read_back
    monkeypatch.setattr(loop, "read_back", lambda run, pending, *a: reads.append(len(pending)) or
                        real_read_back(run, pending, *a))
    options = _options(images, tmp_path / "grouped", backend=backend, batch_size=10, epochs=2)  # 9 steps an epoch
    monkeypatch.setattr(loop, "READBACK_EVERY", 4)
    train(CONFIG, options, progress=False, log=_quiet)
    assert reads == [4, 4, 1, 4, 4, 1]  # groups of 4, and each epoch's end
    monkeypatch.setattr(loop, "READBACK_EVERY", 1)
    every = dataclasses.replace(options, out=str(tmp_path / "every"))
    train(CONFIG, every, progress=False, log=_quiet)
    assert _records(options.out) == _records(every.out)  # the train sums bitwise the same


def test_a_non_finite_loss_inside_a_group_stops_before_the_save_that_follows_it(images, tmp_path, monkeypatch):
    """Step 4 goes bad inside a group of 32 read-backs; the save due at step 6 reads the group back first, so
    the run stops naming step 4, with the checkpoint of step 3 left as it was."""
    real = seeds.eps_for_step

    def poisoned(seed, step, *args, **kwargs):
        return real(seed, step, *args, **kwargs) * (np.nan if step == 3 else 1.0)

    monkeypatch.setattr(seeds, "eps_for_step", poisoned)
    options = _options(images, tmp_path / "run", batch_size=10, checkpoint_every=3)
    with pytest.raises(TrainingDiverged, match=r"the loss became nan at step 4 \(epoch 1\).*step 3\) is intact"):
        train(CONFIG, options, progress=False, log=_quiet)
    position = run_folder.read_train_state(Path(options.out, run_folder.TRAIN_STATE)).position
    assert (position.epoch, position.batch, position.step) == (0, 3, 3)
