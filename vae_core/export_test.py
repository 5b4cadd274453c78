"""The export contract without a framework: signatures, the input checks an artifact's loader applies, the
sidecar's checks, and the extras named when a format's packages are missing."""

import json

import numpy as np
import pytest

from vae_core import export as spec
from vae_core.config import VAEConfig

CONFIG = VAEConfig(image_shape=(1, 12, 8), conv_channels=(4, 8), latent_dim=3)
CONDITIONAL = VAEConfig(image_shape=(1, 12, 8), conv_channels=(4, 8), latent_dim=3, num_classes=4)


def _shapes(specs):
    return {s.name: s.shape for s in specs}


def test_signatures_follow_the_layout_the_batch_and_the_labels():
    inputs, outputs = spec.signature(CONFIG, "vae", "NHWC", None, "int32")
    assert _shapes(inputs) == {"images": ("batch", 12, 8, 1), "eps": ("batch", 3)}
    assert _shapes(outputs) == {"mu": ("batch", 3), "logvar": ("batch", 3), "logits": ("batch", 12, 8, 1)}
    inputs, outputs = spec.signature(CONDITIONAL, "decoder", "NCHW", 5, "int64")
    assert [(s.name, s.shape, s.dtype) for s in inputs] == [("z", (5, 3), "float32"), ("labels", (5,), "int64")]
    assert _shapes(outputs) == {"logits": (5, 1, 12, 8)}
    logistic = VAEConfig(image_shape=(3, 8, 8), conv_channels=(4,), latent_dim=2,
                         likelihood="discretized_logistic")
    assert _shapes(spec.signature(logistic, "decoder", "NCHW", None, "int64")[1])["logits"] == ("batch", 6, 8, 8)


@pytest.mark.parametrize("call, words", [
    (lambda: spec.check_part("generator"), "unknown part 'generator': choose one of encoder, decoder, vae"),
    (lambda: spec.check_format("tflite"), "unknown export format 'tflite'"),
    (lambda: spec.check_dtype("onnx", "bfloat16"), "onnx artifacts are float32 only"),
    (lambda: spec.check_dtype("stablehlo", "float16"), "not 'float16'"),
    (lambda: spec.check_batch(0), "batch"),
    (lambda: spec.check_platform("onnx", "tpu"), r"onnx artifacts run on cpu or cuda, not 'tpu' \(for a TPU"),
])
def test_bad_choices_are_refused_by_name(call, words):
    with pytest.raises(ValueError, match=words):
        call()
    assert spec.check_dtype("stablehlo", "bfloat16") == "bfloat16" and spec.check_batch(None) is None
    assert spec.check_platform("stablehlo", "tpu") == "tpu"


def _check(config, layout, batch, *arrays):
    inputs, _ = spec.signature(config, "vae", layout, batch, "int64")
    return spec.check_inputs(inputs, list(arrays), config, layout)


def _images(n, layout="NCHW"):
    shape = (n, 1, 12, 8) if layout == "NCHW" else (n, 12, 8, 1)
    return np.full(shape, 0.5, np.float32)


def _eps(n):
    return np.zeros((n, 3), np.float32)


def test_inputs_that_fit_pass_and_labels_take_the_artifacts_dtype():
    fed = _check(CONDITIONAL, "NCHW", None, _images(3), _eps(3), np.array([0, 3, 1], np.int32))
    assert fed[2].dtype == np.int64 and fed[0].shape == (3, 1, 12, 8)
    assert len(_check(CONFIG, "NHWC", 2, _images(2, "NHWC"), _eps(2))) == 2


@pytest.mark.parametrize("config, layout, batch, arrays, words", [
    (CONFIG, "NCHW", None, lambda: (_images(2, "NHWC"), _eps(2)),
     r"images has shape \(2, 12, 8, 1\), expected \(N, 1, 12, 8\) in NCHW layout .*it looks like NHWC"),
    (CONFIG, "NHWC", None, lambda: (_images(2, "NCHW"), _eps(2)), r"expected \(N, 12, 8, 1\) in NHWC"),
    (CONFIG, "NCHW", 4, lambda: (_images(2), _eps(2)), r"expected \(4, 1, 12, 8\): .*fixed batch of 4"),
    (CONFIG, "NCHW", None, lambda: (_images(2), _eps(3)), r"eps has shape \(3, 3\), expected \(2, 3\)"),
    (CONFIG, "NCHW", None, lambda: (_images(2) * np.nan, _eps(2)), "images"),
    (CONFIG, "NCHW", None, lambda: (_images(2) * 3, _eps(2)), r"\[0, 1\]"),
    (CONFIG, "NCHW", None, lambda: (_images(2),), r"takes 2 inputs \(images, eps\), got 1"),
    (CONDITIONAL, "NCHW", None, lambda: (_images(2), _eps(2), np.array([0, 4])), "labels"),
])
def test_inputs_that_do_not_fit_name_what_is_expected(config, layout, batch, arrays, words):
    with pytest.raises(ValueError, match=words):
        _check(config, layout, batch, *arrays())


@pytest.mark.parametrize("arrays, words", [
    (lambda: (_images(2).astype(np.float64), _eps(2), np.array([0, 1])), "images has dtype float64 but"),
    (lambda: (_images(2), _eps(2), np.array([0.0, 1.0])), "labels has dtype float64; class labels are integer"),
])
def test_inputs_of_the_wrong_dtype_are_refused_by_name(arrays, words):
    with pytest.raises(TypeError, match=words):
        _check(CONDITIONAL, "NCHW", None, *arrays())


def _artifact(tmp_path, content=b"an artifact"):
    path = tmp_path / "model-decoder.onnx"
    path.write_bytes(content)
    inputs, outputs = spec.signature(CONFIG, "decoder", "NCHW", None, "int64")
    info = spec.describe(CONFIG, "onnx", "decoder", "NCHW", inputs, outputs, batch=None, dtype="float32",
                         platform="cpu", version="0.0-test")
    spec.write_sidecar(path, info)
    return path


def test_the_sidecar_describes_its_artifact(tmp_path):
    info = spec.read_sidecar(_artifact(tmp_path))
    assert info["artifact"] == "model-decoder.onnx" and info["part"] == "decoder" and info["batch"] == "dynamic"
    assert VAEConfig.from_dict(info["config"]) == CONFIG
    assert [spec.TensorSpec.from_dict(s).shape for s in info["inputs"]] == [("batch", 3)]


def _edit_sidecar(path, **changes):
    sidecar = spec.sidecar_path(path)
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **changes}))


@pytest.mark.parametrize("spoil, words", [
    (lambda p: p.unlink(), "no artifact at"),
    (lambda p: spec.sidecar_path(p).unlink(), "has no sidecar .*model-decoder.onnx.json"),
    (lambda p: spec.sidecar_path(p).write_text("{not json"), "is not valid JSON"),
    (lambda p: spec.sidecar_path(p).write_text("[1, 2]"), "is not a twinvae export sidecar"),
    (lambda p: _edit_sidecar(p, format="something-else"), "is not a twinvae export sidecar"),
    (lambda p: _edit_sidecar(p, version=spec.SIDECAR_VERSION + 1), "upgrade twinvae"),
    (lambda p: p.write_bytes(b"another export's artifact"), "does not match"),
])
def test_a_missing_or_mismatched_sidecar_is_named(tmp_path, spoil, words):
    path = _artifact(tmp_path)
    spoil(path)
    with pytest.raises(spec.ExportError, match=words):
        spec.read_sidecar(path)


def test_a_missing_package_names_the_extra_that_installs_it(monkeypatch):
    def without_onnxruntime(name):  # every other package "imports"
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(spec.importlib, "import_module", without_onnxruntime)
    words = r"running onnx needs onnxruntime.*pip install 'twinvae\[export\]'"
    with pytest.raises(ModuleNotFoundError, match=words):
        spec.require("onnx", "run")
    spec.require("onnx", "export")  # made by torch, onnx and onnxscript
