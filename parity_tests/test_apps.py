"""The applications (sample, interpolate, arithmetic) and the pictures a training run leaves, from
either backend on a checkpoint of the other."""

import numpy as np
import pytest
from PIL import Image

import vae_jax
import vae_torch
from twinvae import apps, images
from twinvae.cli import main as cli_main
from twinvae.data import DataError, Dataset, check_classes
from twinvae.datasets import load_dataset
from twinvae.trainer import TrainOptions, train
from vae_core.config import VAEConfig

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4)


def _trained(made_once, name, config, backend):
    """The run folder of a 2-epoch run on the digits, trained once for the whole run (both xdist workers
    take these tests)."""
    def make(folder):
        train(config, TrainOptions(backend=backend, epochs=2, batch_size=128, out=str(folder / "run")),
              progress=False, log=lambda *a: None)

    return made_once(name, make) / "run"


@pytest.fixture(scope="module")
def run(made_once):
    return _trained(made_once, "apps-run", CONFIG, "jax")


def _assert_a_picture(path):
    """A picture with something drawn in it: wider than 50 pixels, and more than 16 grey levels (a blank
    grid, or a grid of one constant image, has its background's and its padding's: 2)."""
    with Image.open(path) as image:
        levels = len(np.unique(np.asarray(image.convert("L"))))
        assert image.size[0] > 50 and levels > 16, (path.name, image.size, levels)


def test_a_blank_picture_is_told_from_a_drawn_one(tmp_path):
    blank = images.save_png(tmp_path / "blank.png", np.zeros((9, 1, 8, 8)))
    with pytest.raises(AssertionError, match="blank.png"):
        _assert_a_picture(blank)
    _assert_a_picture(images.save_png(tmp_path / "drawn.png", np.random.default_rng(0).random((9, 1, 8, 8))))


def test_a_run_leaves_its_pictures(run):
    for name in ("loss.png", "reconstructions.png", "samples.png", "interpolation-linear.png",
                 "interpolation-spherical.png"):
        _assert_a_picture(run / name)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_cli_applications(run, tmp_path, backend, capsys):
    ckpt = str(run / "model.safetensors")
    assert cli_main(["sample", ckpt, "--backend", backend, "--n", "9", "--out", str(tmp_path)]) == 0
    assert cli_main(["interpolate", ckpt, "--backend", backend, "--pairs", "2", "--steps", "5",
                     "--out", str(tmp_path)]) == 0
    assert cli_main(["arithmetic", ckpt, "--backend", backend, "--a", "1", "--b", "7", "--c", "0",
                     "--out", str(tmp_path)]) == 0
    for name in ("samples.png", "interpolation-linear.png", "interpolation-spherical.png", "arithmetic.png"):
        _assert_a_picture(tmp_path / name)
    assert cli_main(["arithmetic", ckpt, "--a", "cat", "--b", "1", "--c", "2", "--out", str(tmp_path)]) == 2
    assert "unknown class 'cat' for digits" in capsys.readouterr().err


def test_both_backends_draw_the_same_samples(run):
    torch_model, _, _ = vae_torch.load_checkpoint(run / "model.safetensors")
    jax_model, _, _ = vae_jax.load_checkpoint(run / "model.safetensors")
    a = vae_torch.to_numpy(torch_model.sample(6, seed=4))
    b = vae_jax.to_numpy(jax_model.sample(6, seed=4))
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_arithmetic_needs_labels(run, tmp_path):
    digits = load_dataset("digits")
    unlabelled = Dataset("folder:x", digits.train_x, None, digits.test_x, None, None)
    model, _, _ = vae_torch.load_checkpoint(run / "model.safetensors")
    with pytest.raises(DataError, match="has no labels: latent arithmetic on class means needs a labelled"):
        apps.write_arithmetic(vae_torch, model, unlabelled, tmp_path, "1", "2", "3")


# --- a class-conditional model ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conditional_run(made_once):
    config = VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4, num_classes=10)
    return _trained(made_once, "apps-conditional-run", config, "torch")


def _grids(monkeypatch):
    """What apps.save_png is given, by file name: (images, ncol)."""
    written = {}

    def record(path, images, ncol=None, **kwargs):
        written[path.name] = (np.asarray(images), ncol)
        return path

    monkeypatch.setattr(apps, "save_png", record)
    return written


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_conditional_model_samples_one_row_per_class_or_one_class(conditional_run, backend, monkeypatch):
    """Without a label: a row per class, the same z down each column; with one: that class's samples,
    model.sample's with those labels. The other backend draws the same grid."""
    twin = {"torch": vae_torch, "jax": vae_jax}[backend]
    model, _, metadata = twin.load_checkpoint(conditional_run / "model.safetensors")
    assert metadata["classes"] == [str(d) for d in range(10)]
    written = _grids(monkeypatch)
    apps.write_samples(twin, model, "out", n=30, seed=2)
    grid, ncol = written["samples.png"]
    assert grid.shape == (30, 1, 8, 8) and ncol == 3
    by_class = grid.reshape(10, 3, -1)
    assert not np.allclose(by_class[0], by_class[1], atol=1e-3)  # the label changes the image
    apps.write_samples(twin, model, "out", n=3, seed=2, label=4)
    one, _ = written["samples-class-4.png"]
    expected = twin.to_numpy(model.sample(3, 2, labels=twin.as_labels(np.full(3, 4), model)))
    np.testing.assert_allclose(one, expected, atol=1e-6)
    other = vae_jax if twin is vae_torch else vae_torch
    other_model, _, _ = other.load_checkpoint(conditional_run / "model.safetensors")
    apps.write_samples(other, other_model, "out", n=30, seed=2)
    np.testing.assert_allclose(written["samples.png"][0], grid, atol=1e-5)


def test_a_conditional_models_interpolation_pairs_share_a_class(conditional_run, monkeypatch):
    digits = load_dataset("digits")
    picks = apps.interpolation_pairs(digits, 6, seed=0, conditional=True)
    assert len(set(picks.tolist())) == 12
    assert np.array_equal(digits.test_y[picks[0::2]], digits.test_y[picks[1::2]])
    assert not np.array_equal(picks, apps.interpolation_pairs(digits, 6, seed=0, conditional=False))


def test_cli_applications_of_a_conditional_model(conditional_run, run, tmp_path, capsys):
    ckpt = str(conditional_run / "model.safetensors")
    for args in (["sample", ckpt, "--label", "7", "--n", "4"], ["sample", ckpt],
                 ["interpolate", ckpt, "--pairs", "2", "--steps", "4"],
                 ["arithmetic", ckpt, "--a", "1", "--b", "7", "--c", "0"]):
        assert cli_main([*args, "--backend", "jax", "--out", str(tmp_path)]) == 0, args
    for name in ("samples-class-7.png", "samples.png", "interpolation-linear.png", "arithmetic.png"):
        _assert_a_picture(tmp_path / name)
    assert cli_main(["sample", ckpt, "--label", "cat", "--out", str(tmp_path)]) == 2
    assert "--label 'cat' is not a class of" in capsys.readouterr().err
    assert cli_main(["sample", str(run / "model.safetensors"), "--label", "1", "--out", str(tmp_path)]) == 2
    assert "--label needs a class-conditional model" in capsys.readouterr().err
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    assert cli_main(["denoise", ckpt, str(image), "--noise", "0.1", "--out", str(tmp_path)]) == 2
    assert "image files have no labels: give the files' class with --label" in capsys.readouterr().err
    assert cli_main(["denoise", ckpt, str(image), "--noise", "0.1", "--label", "3", "--out", str(tmp_path)]) == 0


def test_a_conditional_model_needs_labelled_data(conditional_run, tmp_path):
    digits = load_dataset("digits")
    unlabelled = Dataset("folder:x", digits.train_x, None, digits.test_x, None, None)
    model, _, _ = vae_torch.load_checkpoint(conditional_run / "model.safetensors")
    with pytest.raises(ValueError, match=r"class-conditional \(num_classes=10\) and the folder:x images have no"):
        apps.write_reconstructions(vae_torch, model, unlabelled, tmp_path)
    with pytest.raises(ValueError, match=r"a class-conditional model \(num_classes=10\) needs labelled data; the "
                                         "folder dataset has no labels"):
        check_classes(unlabelled, 10, "folder")
    config = VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4, num_classes=5)
    with pytest.raises(ValueError, match="the digits labels run from 0 to 9: a conditional model of them needs "
                                         r"num_classes 10 \(--num-classes 10\), not 5"):
        train(config, TrainOptions(backend="torch", epochs=1, out=str(tmp_path / "five")), progress=False)


def test_denoise_and_samples_check_the_label_against_the_model(conditional_run, run, tmp_path):
    from twinvae.denoising import denoise_files

    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    unconditional, _, _ = vae_torch.load_checkpoint(run / "model.safetensors")
    conditional, _, _ = vae_torch.load_checkpoint(conditional_run / "model.safetensors")
    for write in (lambda model, label: denoise_files(vae_torch, model, [image], tmp_path, 0.1, label=label),
                  lambda model, label: apps.write_samples(vae_torch, model, tmp_path, n=2, label=label)):
        with pytest.raises(ValueError, match=r"--label needs a class-conditional model; this model is uncond"):
            write(unconditional, 0)
        for label in (10, -1):
            with pytest.raises(ValueError, match=rf"--label {label} is not a class of this model \(0 to 9\)"):
                write(conditional, label)
    assert not list(tmp_path.glob("samples*.png")) and not (tmp_path / "denoised").exists()
