"""The in-domain Frechet distance: against the closed form of two Gaussians, its refusals, its classifier's
determinism and accuracy, the chunks of prior samples, and `twinvae evaluate --fid` end to end."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from parity_tests.test_evaluation import trained  # noqa: F401  (the digits checkpoint, trained once a run)
from twinvae import frechet
from twinvae.cli import main
from twinvae.datasets import load_dataset


def _gaussian(seed, mean, sigma, n=200_000):
    return np.random.default_rng(seed).standard_normal((n, len(mean))) * sigma + mean


def test_the_distance_of_two_gaussians_is_the_closed_form():
    mean_a, sigma_a = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 0.5, 2.0, 1.5])
    mean_b, sigma_b = np.array([1.0, 1.0, 0.0, 0.5]), np.array([2.0, 0.5, 1.0, 0.5])
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((sigma_a - sigma_b) ** 2)  # 5 + 3
    a, b = _gaussian(0, mean_a, sigma_a), _gaussian(1, mean_b, sigma_b)
    assert frechet.frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    assert abs(frechet.frechet_distance(a, a)) < 1e-6
    shift = np.array([0.5, -1.0, 2.0, 0.0])
    assert frechet.frechet_distance(a, a + shift) == pytest.approx(np.sum(shift**2), abs=1e-6)


@pytest.mark.parametrize("a, b, words", [
    (np.full((5, 3), np.nan), np.ones((5, 3)), "a holds 15 non-finite values"),
    (np.eye(4), np.ones((1, 4)), r"b must be a 2-d array of at least 2 feature rows, got shape \(1, 4\)"),
    (np.eye(4), np.eye(3), "a's rows are 4 wide, b's 3"),
], ids=["nan", "one-row", "widths"])
def test_bad_features_are_refused_by_name(a, b, words):
    with pytest.raises(ValueError, match=words):
        frechet.frechet_distance(a, b)


def test_the_classifier_is_its_seed_and_tells_the_digits_apart():
    digits = load_dataset("digits")
    first, again, other = (frechet.train_classifier(digits.train_x, digits.train_y, 10, seed=seed, epochs=3)
                           for seed in (0, 0, 1))
    assert first.sha256 == again.sha256 != other.sha256
    assert first.features(digits.test_x).shape == (len(digits.test_x), frechet.HIDDEN[-1])
    assert first.accuracy(digits.test_x, digits.test_y) > 0.8  # chance: 0.1


def test_prior_samples_come_in_chunks_of_their_own_seeds_and_classes_in_turn():
    calls = []

    def sample(n, seed, labels=None):
        calls.append((n, seed, labels))
        return np.full((n, 1, 2, 2), float(len(calls)))

    model = SimpleNamespace(sample=sample, config=SimpleNamespace(num_classes=3))
    twin = SimpleNamespace(as_labels=lambda y, model: y, to_numpy=np.asarray)
    images = frechet.prior_samples(twin, model, 7, seed=0, batch=3)
    assert images.shape == (7, 1, 2, 2) and [n for n, _, _ in calls] == [3, 3, 1]
    assert len({seed for _, seed, _ in calls}) == 3  # each chunk draws latents of its own
    assert np.bincount(np.concatenate([labels for _, _, labels in calls])).tolist() == [3, 2, 2]
    again = []
    frechet.prior_samples(twin, SimpleNamespace(sample=lambda n, seed, labels=None: again.append(seed) or
                                                np.zeros((n, 1, 2, 2)), config=model.config), 7, 0, 3)
    assert again == [seed for _, seed, _ in calls]  # the same seed, the same draws


def test_cli_evaluate_fid(trained, tmp_path, capsys):  # noqa: F811
    figures, table = tmp_path / "figures.json", tmp_path / "results.md"
    assert main(["evaluate", str(trained), "--fid", "--fid-samples", "200", "--k", "2", "--backend", "torch",
                 "--json", str(figures), "--markdown", str(table), "--no-progress"]) == 0
    report = capsys.readouterr().out
    fid = json.loads(figures.read_text())["frechet"]
    assert set(fid) == {"distance", "floor", "samples", "test_images", "classifier_test_accuracy",
                        "classifier_sha256", "classifier_seed", "classifier_epochs", "classifier_seconds", "note"}
    assert fid["samples"] == 200 and fid["test_images"] == 359 and fid["classifier_seed"] == 0
    assert 0 <= fid["floor"] < fid["distance"]  # real images sit nearer the test set than a 1-epoch model's
    assert fid["classifier_test_accuracy"] > 0.8 and len(fid["classifier_sha256"]) == 64
    assert f"Frechet distance   {fid['distance']:9.3f} of 200 prior samples" in report
    assert f"(floor {fid['floor']:.3f}: as many training images)" in report
    assert "comparable only with itself" in report and fid["classifier_sha256"][:16] in report
    assert "comparable only with itself" in table.read_text() and f"| {fid['distance']:.3f} |" in table.read_text()
    with pytest.raises(SystemExit) as usage:
        main(["evaluate", str(trained), "--fid", "--fid-samples", "0"])
    assert usage.value.code == 2
    assert "argument --fid-samples: expected a number of prior samples >= 2" in capsys.readouterr().err
    assert main(["evaluate", str(trained), "--fid-samples", "200"]) == 2
    assert "--fid-samples 200 sizes the Frechet distance of --fid: give --fid too" in capsys.readouterr().err
