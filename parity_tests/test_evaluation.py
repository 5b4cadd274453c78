"""`twinvae evaluate`: the IWAE weights against a numpy reference and across twins, the Gaussian in nats,
and the whole report on a small trained model, from either backend."""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

import vae_jax
import vae_torch
from twinvae import evaluation
from twinvae.cli import main as cli_main
from twinvae.evaluation import evaluate_checkpoint, iwae_nll, log_mean_exp, measure
from twinvae.trainer import TrainOptions, train
from twinvae.twin import load_twin
from vae_core.checkpoint import write_checkpoint
from vae_core.config import VAEConfig
from vae_core.layout import init_weights

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4)


def reference_log_weights(config, weights, x, eps, y=None):
    """numpy: log p(x|z) + log p(z) - log q(z|x) (reference_terms), (K, N)."""
    log_px, log_pz, log_qz = reference_terms(config, weights, x, eps, y)
    return log_px + log_pz - log_qz


def reference_terms(config, weights, x, eps, y=None, log_prior=None):
    """numpy: log p(x|z), log p(z) and log q(z|x), each (K, N), with mu, logvar and logits from the torch
    twin (given labels y, each latent decoded with its image's); log p(z) N(0, I)'s, or log_prior(z)."""
    model = vae_torch.import_weights(vae_torch.VAE(config, dtype="float64"), weights)
    labels = None if y is None else vae_torch.as_labels(y, model)
    mu, logvar = (vae_torch.to_numpy(v) for v in model.encode(vae_torch.as_input(x, model), labels=labels))
    z = mu + np.exp(0.5 * logvar) * eps
    labels = None if y is None else vae_torch.as_labels(np.tile(y, len(eps)), model)
    logits = vae_torch.to_numpy(model.decode(vae_torch.as_input(z.reshape(-1, config.latent_dim), model),
                                             labels=labels))
    logits = logits.reshape(len(eps), len(x), -1)
    p = 1 / (1 + np.exp(-logits))
    flat = x.reshape(1, len(x), -1)
    if config.likelihood == "bernoulli":
        log_px = (flat * np.log(p) + (1 - flat) * np.log1p(-p)).sum(-1)
    elif config.likelihood == "continuous_bernoulli":  # C(lambda) = l / tanh(l/2); no logit is near 0 here
        log_px = (flat * np.log(p) + (1 - flat) * np.log1p(-p) + np.log(logits / np.tanh(logits / 2))).sum(-1)
    else:  # N(x; sigmoid(logits), 1/2) per pixel
        log_px = (-((flat - p) ** 2) / (2 * 0.5) - 0.5 * np.log(2 * np.pi * 0.5)).sum(-1)
    log_normal = -0.5 * (np.log(2 * np.pi))
    log_pz = (log_normal - 0.5 * z**2).sum(-1) if log_prior is None else log_prior(z)
    log_qz = (log_normal - 0.5 * logvar - 0.5 * eps**2).sum(-1)
    return log_px, log_pz, log_qz


@pytest.mark.parametrize("likelihood, num_classes",
                         [("bernoulli", 0), ("gaussian", 0), ("continuous_bernoulli", 0), ("bernoulli", 3)],
                         ids=["bernoulli", "gaussian", "continuous_bernoulli", "bernoulli-conditional"])
def test_importance_weights_match_numpy_and_each_other(likelihood, num_classes):
    config = VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4, likelihood=likelihood,
                       num_classes=num_classes)
    weights = init_weights(config, 0, np.float64)
    rng = np.random.default_rng(0)
    x, eps = rng.random((3, 1, 8, 8)), rng.standard_normal((5, 3, 4))
    y = np.array([2, 0, 1]) if num_classes else None
    reference = reference_log_weights(config, weights, x, eps, y)
    torch_model = vae_torch.import_weights(vae_torch.VAE(config, dtype="float64"), weights)
    torch_w = vae_torch.to_numpy(vae_torch.importance_log_weights(
        torch_model, vae_torch.as_input(x, torch_model), vae_torch.as_input(eps, torch_model),
        None if y is None else vae_torch.as_labels(y, torch_model)))
    with jax.enable_x64(True):
        jax_model = vae_jax.import_weights(vae_jax.VAE(config, rngs=vae_jax.model.nnx.Rngs(0), dtype="float64"),
                                           weights)
        jax_w = vae_jax.to_numpy(vae_jax.importance_log_weights(
            jax_model, vae_jax.as_input(x, jax_model), vae_jax.as_input(eps, jax_model),
            None if y is None else vae_jax.as_labels(y, jax_model)))
    assert torch_w.shape == (5, 3)
    np.testing.assert_allclose(torch_w, reference, rtol=1e-10)
    np.testing.assert_allclose(jax_w, reference, rtol=1e-10)


@pytest.mark.parametrize("k", [3, 7])
def test_the_iwae_figures_do_not_depend_on_how_the_decoder_calls_are_cut(monkeypatch, k):
    # eps is drawn per SAMPLES_PER_CHUNK, then decoded LATENTS_PER_CALL at a time (one image's K if more):
    # the cut is for speed and must not move a figure
    config = dataclasses.replace(CONFIG, num_classes=3)
    twin = load_twin("torch")
    model = vae_torch.import_weights(vae_torch.VAE(config, dtype="float64"), init_weights(config, 0, np.float64))
    rng = np.random.default_rng(0)
    images, labels = rng.random((11, 1, 8, 8)), rng.integers(0, 3, 11)
    monkeypatch.setattr(evaluation, "SAMPLES_PER_CHUNK", 5 * k)
    monkeypatch.setattr(evaluation, "LATENTS_PER_CALL", 10**6)
    whole = iwae_nll(twin, model, images, k, seed=0, dtype="float64", labels=labels)
    monkeypatch.setattr(evaluation, "LATENTS_PER_CALL", 2 * k + 1)  # 2 images a call: 5 = 2 + 2 + 1
    cut = iwae_nll(twin, model, images, k, seed=0, dtype="float64", labels=labels)
    monkeypatch.setattr(evaluation, "LATENTS_PER_CALL", 1)  # below K: one image a call
    one_by_one = iwae_nll(twin, model, images, k, seed=0, dtype="float64", labels=labels)
    assert whole.shape == (11,)
    np.testing.assert_allclose(cut, whole, rtol=1e-13)
    np.testing.assert_allclose(one_by_one, whole, rtol=1e-13)
    # and the draws are the chunk's: a different chunk size draws different eps
    monkeypatch.setattr(evaluation, "SAMPLES_PER_CHUNK", 2 * k)
    assert not np.allclose(iwae_nll(twin, model, images, k, seed=0, dtype="float64", labels=labels), whole)


def test_bits_per_dim_only_for_a_mass_on_the_datas_own_values():
    grey, binary = np.array([0.0, 0.5, 1.0]), np.array([0.0, 1.0, 1.0])
    assert measure("bernoulli", binary) == ("nats (a Bernoulli likelihood of binary images)", True)
    assert measure("bernoulli", grey) == ("BCE nats (not a likelihood of grey-level data)", False)
    assert measure("discretized_logistic", grey) == ("nats (a discretized logistic mass on the data's levels)",
                                                     True)
    for likelihood in ("gaussian", "continuous_bernoulli"):
        label, discrete = measure(likelihood, binary)
        assert "continuous density" in label and "not comparable with discrete bits/dim" in label and not discrete
    with pytest.raises(ValueError, match="no measure is known for the likelihood 'poisson'"):
        measure("poisson", binary)


def test_log_mean_exp_is_stable():
    log_w = np.array([[-1000.0, 0.0], [-1000.0, math.log(3.0)]])
    np.testing.assert_allclose(log_mean_exp(log_w), [-1000.0, math.log(2.0)])


@pytest.fixture(scope="module")
def trained(made_once):
    def make(folder):
        train(CONFIG, TrainOptions(backend="torch", epochs=1, batch_size=128, out=str(folder / "digits")),
              progress=False, log=lambda *a: None)

    return made_once("evaluation-trained", make) / "digits" / "model.safetensors"  # once for both workers


def test_report_on_a_trained_model_agrees_across_backends(trained):
    reports = {b: evaluate_checkpoint(trained, backend=b, k=64) for b in ("torch", "jax")}
    r = reports["torch"]
    assert r["dataset"] == "digits" and r["images"] == 359 and len(r["kl_per_dim"]) == 4
    assert r["iwae_nll"] < r["negative_elbo"]  # K = 64 tightens the bound
    assert r["negative_elbo"] == pytest.approx(r["reconstruction"] + r["kl"])
    # grey-level digits: the BCE is no likelihood of them, so no bits/dim
    assert r["measure"] == "BCE nats (not a likelihood of grey-level data)" and r["bits_per_dim_iwae"] is None
    assert 0 <= r["active_units"] <= 4 and sum(r["kl_per_dim"]) == pytest.approx(r["kl"], rel=0.2)
    for key in ("negative_elbo", "iwae_nll"):
        assert reports["jax"][key] == pytest.approx(r[key], rel=1e-5), key
    assert reports["jax"]["active_units"] == r["active_units"]


def test_cli_evaluate(trained, tmp_path, capsys):
    out = tmp_path / "figures.json"
    table = tmp_path / "results.md"
    assert cli_main(["evaluate", str(trained), "--k", "8", "--backend", "torch", "--json", str(out),
                     "--markdown", str(table), "--no-progress"]) == 0
    assert "IWAE -log p(x)" in capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures["k"] == 8
    assert table.read_text().startswith(f"Command: `twinvae evaluate {trained} --k 8 --backend torch")
    assert f"| {figures['iwae_nll']:.3f} |" in table.read_text().splitlines()[-1]
    assert cli_main(["evaluate", str(trained), "--k", "0", "--no-progress"]) == 2
    assert "k must be at least 1" in capsys.readouterr().err
    levels = tmp_path / "levels.safetensors"  # a discretized logistic of 256 levels, on digits' 17
    wide = VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4, likelihood="discretized_logistic")
    write_checkpoint(levels, init_weights(wide, 0), wide, {"dataset": "digits"})
    assert cli_main(["evaluate", str(levels), "--no-progress"]) == 2
    assert ("a discretized logistic over 256 levels; the digits test images take 17 levels"
            in capsys.readouterr().err)
    bare = tmp_path / "bare.safetensors"
    write_checkpoint(bare, init_weights(CONFIG, 0), CONFIG)  # no dataset in the metadata
    assert cli_main(["evaluate", str(bare), "--no-progress"]) == 2
    assert "names no dataset" in capsys.readouterr().err


def test_conditional_samples_are_judged_by_a_classifier_of_the_real_data(monkeypatch):
    """The classifier of the real training images scores each class's samples against the class they were
    decoded with: samples that are real images of that class score as the real test set does; samples of
    another class score near 0."""
    from twinvae import evaluation
    from twinvae.datasets import load_dataset

    digits = load_dataset("digits")
    model = vae_torch.init_model(VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4,
                                           num_classes=10))
    by_class = {c: digits.test_x[digits.test_y == c] for c in range(10)}
    for shift, low, high in ((0, 0.9, 1.0), (1, 0.0, 0.1)):  # decoded as the class itself, or as the next one
        def decoded(twin, model, z, labels, shift=shift):
            return np.stack([by_class[(c + shift) % 10][i % len(by_class[(c + shift) % 10])]
                             for i, c in enumerate(labels)])

        monkeypatch.setattr(evaluation, "mean_images", decoded)
        result = evaluation.conditional_sample_accuracy(vae_torch, model, digits, per_class=20)
        assert low <= result["sample_accuracy"] <= high, (shift, result)
        assert result["real_test_accuracy"] > 0.9 and result["samples_per_class"] == 20
