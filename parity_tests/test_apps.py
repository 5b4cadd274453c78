"""The applications (sample, interpolate, arithmetic) and the pictures a training run leaves, from
either backend on a checkpoint of the other."""

import numpy as np
import pytest
from PIL import Image

import vae_jax
import vae_torch
from twinvae import apps
from twinvae.cli import main as cli_main
from twinvae.data import DataError, Dataset, load_dataset
from twinvae.trainer import TrainOptions, train
from vae_core.config import VAEConfig

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("apps") / "run"
    train(CONFIG, TrainOptions(backend="jax", epochs=2, batch_size=128, out=str(out)), progress=False,
          log=lambda *a: None)
    return out


def test_a_run_leaves_its_pictures(run):
    for name in ("loss.png", "reconstructions.png", "samples.png", "interpolation-linear.png",
                 "interpolation-spherical.png"):
        with Image.open(run / name) as image:
            assert image.size[0] > 50, name


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_cli_applications(run, tmp_path, backend, capsys):
    ckpt = str(run / "model.safetensors")
    assert cli_main(["sample", ckpt, "--backend", backend, "--n", "9", "--out", str(tmp_path)]) == 0
    assert cli_main(["interpolate", ckpt, "--backend", backend, "--pairs", "2", "--steps", "5",
                     "--out", str(tmp_path)]) == 0
    assert cli_main(["arithmetic", ckpt, "--backend", backend, "--a", "1", "--b", "7", "--c", "0",
                     "--out", str(tmp_path)]) == 0
    for name in ("samples.png", "interpolation-linear.png", "interpolation-spherical.png", "arithmetic.png"):
        assert (tmp_path / name).stat().st_size > 100
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
