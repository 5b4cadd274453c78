"""Every standard case, float64 and float32: forward, losses, gradients, sampling, checkpoints, 50 Adam steps."""

import pytest

from parity_tests import harness


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", harness.CASES, ids=[c.name for c in harness.CASES])
def test_twins_agree(case, dtype):
    rows = harness.compare(case, dtype, harness.device_from_env())
    quantities = {r.quantity for r in rows}
    assert {"mu", "logvar", "z", "logits", "loss.total", "loss.reconstruction", "loss.kl", "grad", "sample",
            "decode", "checkpoint", "adam.loss", "adam.step1", "adam.params"} <= quantities
    failed = [r for r in rows if not r.ok]
    assert not failed, "\n" + harness.format_table(failed)
