"""docs/curves.py's table holds what the runs' records give, and each fit recovers a curve of its shape."""

import numpy as np
import pytest

from docs import curves


def test_the_table_matches_its_training_records():
    assert curves.main(["--check"]) == 0, "run python -m docs.curves, then python docs/refresh.py"


@pytest.mark.parametrize("kind, shape, basis", [("exponential", 12.5, lambda e: np.exp(-e / 12.5)),
                                               ("power law", 0.8, lambda e: e ** -0.8)])
def test_each_fit_recovers_a_curve_of_its_shape(kind, shape, basis):
    epochs = np.arange(1, 41, dtype=np.float64)
    a, b, fitted, error = curves.fit(226.5 + 30.0 * basis(epochs), kind)
    assert a == pytest.approx(226.5, abs=1e-6) and b == pytest.approx(30.0, rel=1e-6) and fitted == shape
    assert error < 1e-9


def test_a_record_s_test_column_is_read(tmp_path, monkeypatch):
    (tmp_path / "a.md").write_text("Command: `twinvae train`\n\n| epoch | train total | test total | seconds |\n"
                                   "|---|---|---|---|\n| 1 | 280.1 | 250.5 | 10 |\n| 2 | 245.0 | 244.25 | 10 |\n")
    monkeypatch.setattr(curves, "RESULTS", tmp_path)
    assert curves.test_curve("a").tolist() == [250.5, 244.25]
