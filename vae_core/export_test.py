"""The export contract without a framework: signatures, the input checks an artifact's loader applies, the
sidecar's checks (its fields, a pinned SHA-256), the sidecar against an artifact's declared signature, the
globals read from a pickle's opcodes, and the extras named when a format's packages are missing."""

import collections
import json
import pickle

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


def _drop_field(path, field):
    sidecar = spec.sidecar_path(path)
    sidecar.write_text(json.dumps({k: v for k, v in json.loads(sidecar.read_text()).items() if k != field}))


@pytest.mark.parametrize("spoil, words", [
    (lambda p: p.unlink(), "no artifact at"),
    (lambda p: spec.sidecar_path(p).unlink(), "has no sidecar .*model-decoder.onnx.json"),
    (lambda p: spec.sidecar_path(p).write_text("{not json"), "is not valid JSON"),
    (lambda p: spec.sidecar_path(p).write_text("[1, 2]"), "is not a twinvae export sidecar"),
    (lambda p: _edit_sidecar(p, format="something-else"), "is not a twinvae export sidecar"),
    (lambda p: _edit_sidecar(p, version=spec.SIDECAR_VERSION + 1), "upgrade twinvae"),
    (lambda p: p.write_bytes(b"another export's artifact"), "does not match"),
    (lambda p: _edit_sidecar(p, version="1"), r"model-decoder.onnx.json: field 'version' is '1', not an export"),
    (lambda p: _drop_field(p, "config"), r"model-decoder.onnx.json: field 'config' is missing"),
    (lambda p: _edit_sidecar(p, config={"latent_dim": "three"}), r"field 'config' is malformed"),
    (lambda p: _edit_sidecar(p, config=[1, 2]), r"field 'config' is malformed: VAEConfig: expected a JSON object"),
    (lambda p: _drop_field(p, "inputs"), r"field 'inputs' is missing"),
    (lambda p: _edit_sidecar(p, outputs=[]), r"field 'outputs' is malformed"),
    (lambda p: _edit_sidecar(p, inputs=[{"name": "z", "shape": "batch x 3", "dtype": "float32"}]),
     r"field 'inputs' is malformed: expected a name, a shape of sizes"),
    (lambda p: _edit_sidecar(p, outputs=["logits"]), r"field 'outputs' is malformed: expected an object"),
    (lambda p: _edit_sidecar(p, artifact_format="torch.export"),
     r"'artifact_format' is 'torch.export', whose files end in .pt2, but the artifact is model-decoder.onnx"),
    (lambda p: _edit_sidecar(p, artifact_format="tflite"), r"field 'artifact_format' is 'tflite', not one of"),
    (lambda p: _edit_sidecar(p, layout="CHW"), r"field 'layout' is 'CHW', not one of NCHW, NHWC"),
    (lambda p: _edit_sidecar(p, platform="tpu"), r"field 'platform' is 'tpu', not one of cpu, cuda \(for onnx\)"),
])
def test_a_missing_or_mismatched_sidecar_is_named(tmp_path, spoil, words):
    path = _artifact(tmp_path)
    spoil(path)
    with pytest.raises(spec.ExportError, match=words):
        spec.read_sidecar(path)


def test_a_pinned_sha256_is_the_artifacts_or_it_is_refused_naming_both(tmp_path):
    path = _artifact(tmp_path)
    actual = spec.file_sha256(path)
    assert spec.read_sidecar(path, sha256=actual.upper())["sha256"] == actual
    path.write_bytes(b"a rewritten artifact")
    _edit_sidecar(path, sha256=spec.file_sha256(path))  # whoever rewrote it rewrote the sidecar too
    spec.read_sidecar(path)  # the sidecar's hash cannot tell
    with pytest.raises(spec.ExportError, match=f"has SHA-256 {spec.file_sha256(path)}, not the {actual} it was"):
        spec.read_sidecar(path, sha256=actual)


def _loaded(inputs=((None, ("s0", 3), "float32"), (None, ("s0",), "int64")), outputs=(("logits", ("s0", 1, 12, 8),
            "float32"),), platforms=("cpu",)):
    return spec.Loaded(lambda *arrays: arrays, tuple(spec.TensorSpec(*t) for t in inputs),
                       tuple(spec.TensorSpec(*t) for t in outputs), platforms)


def _conditional_sidecar(tmp_path, batch=None):
    path = tmp_path / "model-decoder.onnx"
    path.write_bytes(b"an artifact")
    inputs, outputs = spec.signature(CONDITIONAL, "decoder", "NCHW", batch, "int64")
    spec.write_sidecar(path, spec.describe(CONDITIONAL, "onnx", "decoder", "NCHW", inputs, outputs, batch=batch,
                                           dtype="float32", platform="cpu", version="0.0-test"))
    return path, spec.read_sidecar(path)


def test_a_sidecar_that_says_what_the_artifact_declares_passes(tmp_path):
    path, info = _conditional_sidecar(tmp_path)
    spec.check_signature(path, info, _loaded())  # any symbol for a dynamic batch, unnamed tensors
    spec.check_signature(path, info, _loaded(platforms=None))  # an artifact for any platform
    path, info = _conditional_sidecar(tmp_path, batch=5)
    spec.check_signature(path, info, _loaded(inputs=((None, (5, 3), "float32"), ("labels", (5,), "int64")),
                                             outputs=((None, (5, 1, 12, 8), "float32"),)))


@pytest.mark.parametrize("loaded, batch, words", [
    (_loaded(inputs=((None, ("s0", 4), "float32"), (None, ("s0",), "int64"))), None,
     r"its inputs are z \(batch, 3\) float32, labels \(batch\) int64; the artifact's are \(s0, 4\) float32"),
    (_loaded(inputs=((None, ("s0", 3), "float32"), (None, ("s0",), "int32"))), None, r"\(s0\) int32"),
    (_loaded(inputs=((None, ("s0", 3), "float32"),)), None, r"; the artifact's are \(s0, 3\) float32$"),
    (_loaded(), 5, r"its inputs are z \(5, 3\) float32, labels \(5\) int64; the artifact's are \(s0, 3\)"),
    (_loaded(inputs=((None, (5, 3), "float32"), (None, (5,), "int64"))), None, r"the artifact's are \(5, 3\)"),
    (_loaded(outputs=(("mu", ("s0", 1, 12, 8), "float32"),)), None,
     r"its outputs are logits \(batch, 1, 12, 8\) float32; the artifact's are mu \(s0, 1, 12, 8\) float32"),
    (_loaded(outputs=((None, ("s0", 12, 8, 1), "float32"),)), None, r"the artifact's are \(s0, 12, 8, 1\)"),
    (_loaded(platforms=("tpu",)), None, r"its platform is cpu; the artifact's is tpu"),
])
def test_a_sidecar_that_disagrees_with_the_artifacts_signature_is_refused_naming_both(tmp_path, loaded, batch,
                                                                                       words):
    path, info = _conditional_sidecar(tmp_path, batch)
    with pytest.raises(spec.ExportError, match=r"sidecar .*model-decoder.onnx.json does not match .*" + words):
        spec.check_signature(path, info, loaded)


def test_pickle_globals_reads_every_global_from_the_opcodes_without_loading_them():
    for protocol in range(6):  # GLOBAL (0-3), STACK_GLOBAL (4-5)
        data = pickle.dumps(collections.OrderedDict([("a", collections.Counter)]), protocol=protocol)
        assert spec.pickle_globals(data) == {("collections", "OrderedDict"), ("collections", "Counter")}, protocol
    assert spec.pickle_globals(pickle.dumps(print, protocol=2)) == {("__builtin__", "print")}  # as written
    # STACK_GLOBAL's module from the memo (BINGET), as the pickler writes a module named twice
    data = pickle.dumps([collections.OrderedDict, collections.Counter], protocol=4)
    assert spec.pickle_globals(data) == {("collections", "OrderedDict"), ("collections", "Counter")}
    # a frame between the two strings changes nothing on the stack; INST names its global inline
    framed = b"\x80\x04\x8c\x02os\x94\x95\x08\x00\x00\x00\x00\x00\x00\x00\x8c\x06system\x94\x93."
    assert spec.pickle_globals(framed) == {("os", "system")}
    assert spec.pickle_globals(b"(ios\nsystem\nS'true'\n.") == {("os", "system")}


@pytest.mark.parametrize("data, words", [
    (b"\x80\x04N\x8c\x06system\x93.", "STACK_GLOBAL at byte 11 of a module and name not pushed as strings"),
    (b"\x80\x04\x8c\x02os\x8c\x06system0\x8c\x06system\x93.", "STACK_GLOBAL"),  # POP: the top is unknown
    (b"\x80\x04]\x94h\x00\x8c\x06system\x93.", "STACK_GLOBAL"),  # a memo slot that holds no string
    (b"\x80\x02\x82\x01.", "EXT1 at byte 2: a global from copyreg's extension registry"),
    (b"\x80\x02cos\nsys", "no newline found"),  # truncated
])
def test_pickle_globals_refuses_a_global_it_cannot_name(data, words):
    with pytest.raises(ValueError, match=words):
        spec.pickle_globals(data)


def test_a_missing_package_names_the_extra_that_installs_it(monkeypatch):
    def without_onnxruntime(name):  # every other package "imports"
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(spec.importlib, "import_module", without_onnxruntime)
    words = r"running onnx needs onnxruntime.*pip install 'twinvae\[export\]'"
    with pytest.raises(ModuleNotFoundError, match=words):
        spec.require("onnx", "run")
    spec.require("onnx", "export")  # made by torch, onnx and onnxscript
