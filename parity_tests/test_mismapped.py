"""The suite must fail loudly on a layout bug: each test mis-maps one thing and expects float64 parity to
report an O(1) error (round-off is ~1e-15, so there is no grey zone)."""

import numpy as np
import pytest

import vae_jax.model
from twinvae.parity import cases, comparisons
from vae_core import layout as core
from vae_core.config import VAEConfig

CASE = cases.Case("conv 3x12x20 (H != W)", VAEConfig(image_shape=(3, 12, 20), conv_channels=(8, 16),
                                                      latent_dim=6), batch_size=4, steps=0)
MLP_CASE = cases.Case("mlp 3x8x12", VAEConfig(arch="mlp", image_shape=(3, 8, 12), mlp_widths=(16,),
                                              latent_dim=4), batch_size=4, steps=0)
# each test patches the twin's code: it must be traced again (conftest.py), not served from an earlier test
pytestmark = pytest.mark.usefixtures("fresh_traces")


def _mismap(monkeypatch, kind, wrong_rule):
    """Replace the layout rule of one layer kind; wrong_rule(layer, weight, bias, right) -> (kernel, bias)."""
    right = core.to_jax_layout

    def mapped(layer, weight, bias):
        return wrong_rule(layer, weight, bias, right) if layer.kind == kind else right(layer, weight, bias)

    monkeypatch.setattr(core, "to_jax_layout", mapped)


def _transpose_only(layer, weight, bias, right):
    return weight.T, bias  # a plain Linear rule, ignoring the NCHW vs NHWC flatten order


def _then(change):
    def rule(layer, weight, bias, right):
        kernel, bias = right(layer, weight, bias)
        return change(kernel), bias

    return rule


def _assert_fails_loudly(case):
    rows = comparisons.compare(case, "float64", forms="each")
    errors = {}  # the worst twin (or transposed-conv form) per quantity: a bug may live in one form only
    for r in rows:
        if r.quantity in ("logits", "grad"):
            errors[r.quantity] = max(errors.get(r.quantity, 0.0), r.error)
    assert set(errors) == {"logits", "grad"} and all(e > 1e-3 for e in errors.values()), errors
    assert not all(r.ok for r in rows)


def test_correct_mapping_passes():
    assert all(r.ok for r in comparisons.compare(CASE, "float64", forms="each"))


def test_unflipped_transposed_conv_kernel_fails(monkeypatch):
    # What you get with Flax ConvTranspose(transpose_kernel=False) and no manual flip.
    _mismap(monkeypatch, "conv_transpose", _then(lambda k: k[::-1, ::-1]))
    _assert_fails_loudly(CASE)


def test_conv_kernel_with_swapped_spatial_axes_fails(monkeypatch):
    _mismap(monkeypatch, "conv", _then(lambda k: np.swapaxes(k, 0, 1)))
    _assert_fails_loudly(CASE)


@pytest.mark.parametrize("case", [CASE, MLP_CASE], ids=["conv", "mlp"])
def test_nchw_flatten_order_into_fc_mu_fails(monkeypatch, case):
    # Plain W.T for fc_mu / the MLP's first layer: NHWC activations read with NCHW weights.
    _mismap(monkeypatch, "linear_from_image", _transpose_only)
    _assert_fails_loudly(case)


def test_nchw_reshape_behind_decoder_fc_fails(monkeypatch):
    _mismap(monkeypatch, "linear_to_image", _transpose_only)
    _assert_fails_loudly(CASE)


def test_shifted_transposed_conv_padding_fails(monkeypatch):
    # Same output size, one pixel off: the uneven 'SAME'-style padding trap (flax#2993).
    monkeypatch.setattr(vae_jax.model, "_DECONV_PADDING", ((1, 3), (1, 3)))
    _assert_fails_loudly(CASE)


@pytest.mark.parametrize("twin", ["vae_torch", "vae_jax"])
def test_wrong_subpixel_taps_fail(monkeypatch, twin):
    # The sub-pixel form with the phases' taps swapped: every output pixel reads the wrong kernel taps.
    import importlib

    monkeypatch.setattr(importlib.import_module(f"{twin}.forms"), "SUBPIXEL_TAPS", np.array([[1, 3], [0, 2]]))
    _assert_fails_loudly(CASE)


CONDITIONAL_CASE = cases.Case("conv 1x8x8 class-conditional", VAEConfig(
    image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4, num_classes=3), batch_size=4, steps=0)


@pytest.mark.parametrize("kind", ["linear_from_image", "linear_to_image"])
def test_label_columns_first_fail(monkeypatch, kind):
    """The one-hot label's columns come last in fc_mu / fc_logvar (after the image's) and in decoder.fc
    (after z): a JAX kernel with them first is caught."""
    _mismap(monkeypatch, kind, _then(lambda kernel: np.roll(kernel, CONDITIONAL_CASE.config.num_classes, axis=0)))
    _assert_fails_loudly(CONDITIONAL_CASE)
