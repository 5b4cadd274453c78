"""Every standard case, float64 and float32: forward, losses, gradients, sampling, checkpoints, 50 Adam steps."""

import pytest

from parity_tests import harness


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", harness.CASES, ids=[c.name for c in harness.CASES])
def test_twins_agree(case, dtype):
    rows = harness.compare(case, dtype, harness.device_from_env())
    assert {r.quantity for r in rows} == set(harness.QUANTITY_KIND)  # every quantity was compared
    failed = [r for r in rows if not r.ok]
    assert not failed, "\n" + harness.format_table(failed)
