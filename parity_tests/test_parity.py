"""Every standard case, float64 and float32: forward, losses, gradients, sampling, checkpoints, Adam steps;
bf16 mixed precision on three cases."""

import dataclasses
import importlib
from pathlib import Path

import jax
import numpy as np
import pytest

import vae_jax
import vae_torch
from twinvae.parity import cases, comparisons, report, tolerances, twins

# The fast tier's two configs (`pytest -m fast`): one conv, one MLP, in float64, every form, every quantity.
# the seed's conv, an MLP, and the VAE family's variants in two small MLPs: one level (the VampPrior with the
# IWAE bound, Gaussian), and two levels (the VampPrior on z2, the IWAE bound)
FAST_CASES = ("conv 1x8x8 (digits)", "mlp 1x8x8 discretized logistic, 17 levels",
              "mlp 1x8x12 vampprior, 5 pseudo-inputs, iwae K=2, gaussian",
              "mlp 1x10x8 two levels, vampprior, 4 pseudo-inputs, iwae K=2")


@pytest.mark.parametrize("case, dtype", [
    pytest.param(case, dtype, id=f"{case.name}-{dtype}",
                 marks=[pytest.mark.fast] if case.name in FAST_CASES and dtype == "float64" else [])
    for case in cases.CASES for dtype in ("float64", "float32")])
def test_twins_agree(case, dtype):
    # The whole 50-step Adam trajectory in both dtypes. Every form once in float64, where a form's error
    # would show; float32, which only rounds, in each twin's default forms on the device; `python -m
    # parity_tests` runs every combination in every dtype.
    rows = comparisons.compare(case, dtype, twins.device_from_env(),
                               forms="each" if dtype == "float64" else "default")
    assert {r.quantity for r in rows} == tolerances.compared_quantities(case.config)  # every one compared
    failed = [r for r in rows if not r.ok]
    assert not failed, "\n" + report.format_table(failed)


def test_every_form_is_compared():
    """Each conv case puts every form of the resampling convs (native, space-to-depth encoder, sub-pixel
    decoder, col2im output layer) of both twins against the float64 torch reference, in every combination
    a device of either twin's table runs by default (CPU, GPU, TPU); the mlp cases have none."""
    rows = comparisons.compare(cases.CASES[3], "float64", steps=0)  # conv 1x8x8 (digits)
    assert {r.twin for r in rows if r.quantity == "logits"} == {
        "jax", "jax/space_to_depth+subpixel+col2im", "jax/subpixel+col2im", "torch/space_to_depth+subpixel+col2im",
        "torch/col2im"}
    defaults = {tuple(vae_jax.default_forms(device).values()) for device in ("cpu", "gpu", "tpu")}
    assert defaults == {("space_to_depth", "subpixel", "col2im"), ("native", "subpixel", "col2im"),
                        ("native", "native", "native")}
    assert tuple(vae_torch.default_forms("cpu").values()) == ("native", "native", "col2im")


FORMAT_1 = Path(__file__).parents[1] / "vae_core" / "testdata" / "format1-conv"


@pytest.mark.parametrize("twin", ["vae_torch", "vae_jax"])
def test_a_format_1_checkpoint_decodes_as_it_did(twin):
    """A checkpoint written before decoder_fc_relu existed (format 1, trained without the ReLU) loads
    with it off, in each twin, and decodes the logits the twinvae of its day computed (the .npz beside it,
    from torch then); a new model has the ReLU, so the same weights decode otherwise."""
    module = importlib.import_module(twin)
    with jax.enable_x64(True):  # float64 weights
        model, config, _ = module.load_checkpoint(f"{FORMAT_1}.safetensors")
        assert config.decoder_fc_relu is False
        golden = np.load(f"{FORMAT_1}-decoded.npz")
        logits = module.to_numpy(model.decode(module.as_input(golden["z"], model)))
        np.testing.assert_allclose(logits, golden["logits"], rtol=0, atol=1e-12)  # canonical NCHW both
        relu_on = module.init_model(dataclasses.replace(config, decoder_fc_relu=True), dtype=model.dtype)
        relu_on = module.import_weights(relu_on, module.export_weights(model))
        relu_logits = module.to_numpy(relu_on.decode(module.as_input(golden["z"], relu_on)))
    assert np.abs(relu_logits - logits).max() > 1e-3


@pytest.mark.parametrize("twin", ["vae_torch", "vae_jax"])
def test_unknown_form_is_an_error(twin):
    module = importlib.import_module(twin)
    with pytest.raises(ValueError, match=r"transposed_conv must be one of \('native', 'subpixel'\), got 'fft'"):
        module.init_model(cases.CASES[3].config, transposed_conv="fft")
    with pytest.raises(ValueError, match=r"strided_conv must be one of \('native', 'space_to_depth'\), got 'fft'"):
        module.init_model(cases.CASES[3].config, strided_conv="fft")
    with pytest.raises(ValueError,
                       match=r"output_transposed_conv must be one of \('native', 'col2im'\), got 'subpixel'"):
        module.init_model(cases.CASES[3].config, output_transposed_conv="subpixel")
    model = module.init_model(cases.CASES[3].config, strided_conv="space_to_depth", transposed_conv="native",
                              output_transposed_conv="col2im")
    assert model.forms == {"strided_conv": "space_to_depth", "transposed_conv": "native",
                           "output_transposed_conv": "col2im"}


MIXED_PRECISION_CASES = [c for c in cases.CASES if c.name in (
    "conv 1x28x28 residual blocks", "mlp 1x28x28 bernoulli (pytorch/examples)",
    "conv 1x8x8 iwae K=3, class-conditional, 3 classes",
    "conv 1x12x8 two levels (hvae), class-conditional, 3 classes")]


@pytest.mark.parametrize("case", MIXED_PRECISION_CASES, ids=[c.name for c in MIXED_PRECISION_CASES])
def test_mixed_precision_twins_agree(case):
    """compute_dtype="bfloat16" (float32 parameters) in both twins, each in its default forms, against
    the float64 reference at the tolerance derived in tolerances.py, over the whole 50-step Adam trajectory
    (its tolerance is float32's argument). The other cases: `python -m parity_tests --dtype bfloat16`."""
    rows = comparisons.compare(case, "bfloat16", twins.device_from_env(), forms="default")
    assert {r.quantity for r in rows} == tolerances.compared_quantities(case.config) - {"checkpoint"}
    failed = [r for r in rows if not r.ok]
    assert not failed, "\n" + report.format_table(failed)
    # and bf16 is really in play: the logits carry its rounding, far above float32's ~1e-7
    logits = [r for r in rows if r.quantity == "logits"]
    assert logits and all(r.error > tolerances.BF16_UNIT_ROUNDOFF / 8 for r in logits), report.format_table(logits)


@pytest.mark.parametrize("twin", ["vae_torch", "vae_jax"])
def test_compute_dtype_is_checked(twin):
    import importlib

    import jax

    module = importlib.import_module(twin)
    config = cases.CASES[3].config
    with pytest.raises(ValueError, match=r"compute_dtype='bfloat16' needs float32 parameters, got float64"), \
            jax.enable_x64(True):
        module.init_model(config, dtype="float64", compute_dtype="bfloat16")
    with pytest.raises(ValueError, match=r"compute_dtype must be None, the parameters' dtype or one of "
                                         r"\('bfloat16',\), got 'float16'"):
        module.init_model(config, compute_dtype="float16")
    assert module.init_model(config, compute_dtype="float32").compute_dtype is None
