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


def test_every_transposed_conv_form_is_compared():
    """Each conv case puts both forms of the transposed conv (native, sub-pixel) of both twins against the
    float64 torch reference; the mlp cases have none."""
    rows = harness.compare(harness.CASES[3], "float64", steps=0)  # conv 1x8x8 (digits)
    assert {r.twin for r in rows if r.quantity == "logits"} == {"jax", "jax/subpixel", "torch/subpixel"}


@pytest.mark.parametrize("twin", ["vae_torch", "vae_jax"])
def test_unknown_transposed_conv_is_an_error(twin):
    import importlib

    module = importlib.import_module(twin)
    with pytest.raises(ValueError, match=r"transposed_conv must be one of \('native', 'subpixel'\), got 'fft'"):
        module.init_model(harness.CASES[3].config, transposed_conv="fft")
