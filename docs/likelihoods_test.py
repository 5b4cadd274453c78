"""The results table of docs/training.md holds exactly its runs' figures, and reads the files that
`twinvae evaluate --markdown` writes."""

import pytest

from docs import likelihoods
from twinvae.evaluation import report_markdown

REPORT = {"checkpoint": "runs/a/model.safetensors", "dataset": "fashion-mnist", "binarize": "dynamic",
          "backend": "jax", "images": 10000, "k": 1000, "negative_elbo": 240.4371, "reconstruction": 220.65,
          "kl": 19.787, "iwae_nll": 235.6549, "measure": "nats (a Bernoulli likelihood of binary images)",
          "bits_per_dim_elbo": 0.44241, "bits_per_dim_iwae": 0.43362, "active_units": 20, "latent_dim": 20,
          "num_classes": 0, "denoising": None, "conditional_samples": None}
TRAINING = "Command: `twinvae train`\n\n| epoch | train total |\n|---|---|\n| 1 | 284.7 |\n| 2 | 249.2 |\n"


def test_the_table_matches_its_results_files():
    assert likelihoods.main(["--check"]) == 0, "run python docs/likelihoods.py, then python docs/refresh.py"


def test_a_row_holds_the_figures_evaluate_wrote(tmp_path, monkeypatch):
    (tmp_path / "a-evaluation.md").write_text(report_markdown(REPORT, "twinvae evaluate runs/a/model.safetensors"))
    (tmp_path / "a.md").write_text(TRAINING)
    monkeypatch.setattr(likelihoods, "RESULTS", tmp_path)
    assert likelihoods.row("a", "binarised (dynamic), Bernoulli", "seed") == [
        "binarised (dynamic), Bernoulli", "seed", "jax", "2", "240.437", "235.655", "1000", "0.4336",
        "not measured", "[a](results/a-evaluation.md)"]
    frechet = {"distance": 28.0684, "floor": 0.2251, "samples": 10000, "classifier_test_accuracy": 0.887,
               "classifier_sha256": "b12d5b2ddccdd738" + "0" * 48}
    (tmp_path / "a-evaluation.md").write_text(report_markdown({**REPORT, "frechet": frechet}, "twinvae evaluate"))
    assert likelihoods.row("a", "binarised (dynamic), Bernoulli", "seed")[8] == "28.068 (floor 0.225)"


def test_a_stale_table_or_a_missing_file_is_caught(tmp_path, monkeypatch):
    (tmp_path / "a-evaluation.md").write_text(report_markdown(REPORT, "twinvae evaluate"))
    (tmp_path / "a.md").write_text(TRAINING)
    monkeypatch.setattr(likelihoods, "RESULTS", tmp_path)
    monkeypatch.setattr(likelihoods, "TABLE", tmp_path / "likelihoods.md")
    monkeypatch.setattr(likelihoods, "ROOT", tmp_path)
    monkeypatch.setattr(likelihoods, "RUNS", [("a", "binarised (dynamic), Bernoulli", "seed")])
    assert likelihoods.main(["--check"]) == 1
    assert likelihoods.main([]) == 0 and likelihoods.main(["--check"]) == 0
    (tmp_path / "a-evaluation.md").write_text(report_markdown({**REPORT, "iwae_nll": 236.0}, "twinvae evaluate"))
    assert likelihoods.main(["--check"]) == 1
    (tmp_path / "a.md").unlink()
    with pytest.raises(FileNotFoundError, match="a.md"):
        likelihoods.table()


def test_a_file_that_evaluate_did_not_write_is_refused(tmp_path, monkeypatch):
    (tmp_path / "a-evaluation.md").write_text("| epoch | total |\n|---|---|\n| 1 | 2 |\n")
    monkeypatch.setattr(likelihoods, "RESULTS", tmp_path)
    with pytest.raises(ValueError, match="not a `twinvae evaluate --markdown` file"):
        likelihoods.evaluation("a")
