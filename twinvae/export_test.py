"""`twinvae export` and `twinvae.export.load`: artifacts and their sidecars from checkpoints of either twin,
a dynamic or fixed batch, named and positional inputs, and the refusals (bad choices, a missing extra, a
corrupt checkpoint, inputs that do not fit, an artifact for another platform, a sidecar that disagrees with
its artifact, a damaged or mislabelled artifact, a pinned SHA-256 it lacks, a .pt2 whose pickles would run
code). Parity of the artifacts' outputs: parity_tests/test_export.py."""

import io
import itertools
import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

import vae_jax
import vae_torch
import vae_torch.export
from twinvae.cli import main
from twinvae.export import default_path, export, load
from vae_core import export as spec
from vae_core.config import VAEConfig
from vae_core.forms import NATIVE_FORMS

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4, 8), latent_dim=3, num_classes=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A class-conditional checkpoint written by the JAX twin (so every torch-made format crosses twins)."""
    path = tmp_path_factory.mktemp("export") / "model.safetensors"
    vae_jax.save_checkpoint(path, vae_jax.init_model(CONFIG, seed=1), CONFIG, {"backend": "jax"})
    return path


@pytest.fixture(scope="module")
def decoders(checkpoint):
    """The checkpoint's decoder in each format (dynamic batch), for tests to copy before they spoil one."""
    paths = {format: checkpoint.with_name(f"decoder{suffix}") for format, suffix in spec.SUFFIXES.items()}
    for format, path in paths.items():
        export(checkpoint, format, "decoder", path)
    return paths


def _copy(path, folder):
    """The artifact and its sidecar, copied into folder."""
    shutil.copy(spec.sidecar_path(path), folder)
    return Path(shutil.copy(path, folder))


def _rewrite(path, content: bytes):
    """The artifact rewritten, and its sidecar's SHA-256 with it, as whoever can write one can write both."""
    path.write_bytes(content)
    sidecar = spec.sidecar_path(path)
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "sha256": spec.file_sha256(path)}))


def _inputs(n, layout="NCHW"):
    rng = np.random.default_rng(0)
    images = rng.random((n, 1, 8, 8), dtype=np.float32)
    return {"images": images if layout == "NCHW" else images.transpose(0, 2, 3, 1),
            "eps": rng.standard_normal((n, 3), dtype=np.float32), "labels": np.arange(n) % 2}


def test_the_cli_writes_an_onnx_artifact_its_sidecar_and_the_metadata_copy(checkpoint, capsys):
    assert main(["export", str(checkpoint), "--format", "onnx", "--part", "vae"]) == 0
    path = default_path(checkpoint, "onnx", "vae")
    assert path.name == "model-vae.onnx" and f"wrote {path}" in capsys.readouterr().out
    info = json.loads(spec.sidecar_path(path).read_text())
    assert (info["opset"], info["layout"], info["batch"], info["written_by"]) == (20, "NCHW", "dynamic", "jax")
    assert info["checkpoint_sha256"] == spec.file_sha256(checkpoint) and info["sha256"] == spec.file_sha256(path)
    assert [s["name"] for s in info["inputs"]] == ["images", "eps", "labels"]
    graph = onnx.load(path)
    copy = json.loads({p.key: p.value for p in graph.metadata_props}["twinvae"])
    assert copy == {k: v for k, v in info.items() if k not in ("artifact", "sha256")}
    # one file for every runtime: the native forms, whatever the torch twin runs on this CPU
    assert info["forms"] == dict(NATIVE_FORMS) != vae_torch.default_forms("cpu")
    ops = {node.op_type for node in graph.graph.node} | {node.op_type for f in graph.functions for node in f.node}
    assert "ConvTranspose" in ops and "Col2Im" not in ops
    model, _, _ = vae_torch.load_checkpoint(checkpoint)
    artifact = load(path)
    for n in (1, 5):  # the batch dimension is dynamic
        given = _inputs(n)
        mu, logvar, logits = artifact(**given)
        expected = model(*(vae_torch.as_input(given[k], model) for k in ("images", "eps")),
                         labels=vae_torch.as_labels(given["labels"], model))
        assert logits.shape == (n, 1, 8, 8)
        np.testing.assert_allclose(mu, expected.mu.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_fixed_batch_stablehlo_artifact_names_the_shape_it_takes(checkpoint, tmp_path):
    path = tmp_path / "enc.stablehlo"
    info = export(checkpoint, "stablehlo", "encoder", path, batch=4)
    assert info["batch"] == 4 and info["layout"] == "NHWC" and info["forms"] == vae_jax.default_forms("cpu")
    artifact = load(path)
    given = _inputs(4, "NHWC")
    mu, logvar = artifact(given["images"], given["labels"])
    model, _, _ = vae_jax.load_checkpoint(checkpoint)
    np.testing.assert_allclose(mu, np.asarray(model.encode(given["images"], labels=given["labels"])[0]),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"images has shape \(3, 8, 8, 1\), expected \(4, 8, 8, 1\).*fixed batch"):
        artifact(_inputs(3, "NHWC")["images"], np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"expected \(N, 8, 8, 1\) in NHWC layout .*it looks like NCHW"):
        artifact(_inputs(4)["images"], np.zeros(4, np.int64))


def test_a_torch_export_program_takes_inputs_by_name_and_says_what_is_missing(checkpoint, tmp_path):
    path = tmp_path / "decoder.pt2"
    export(checkpoint, "torch.export", "decoder", path)
    artifact = load(path)
    z, labels = np.zeros((2, 3), np.float32), np.array([1, 0])
    np.testing.assert_array_equal(artifact(z=z, labels=labels), artifact(z, labels))
    with pytest.raises(ValueError, match=r"takes z, labels; .*\(the model is class-conditional\)"):
        artifact(z)
    with pytest.raises(ValueError, match="has no input 'images'; its inputs are z, labels"):
        artifact(z, labels, images=z)
    with pytest.raises(ValueError, match="labels"):
        artifact(z, np.array([1, 2]))  # class 2 of a 2-class model


def test_a_stablehlo_artifact_for_a_tpu_is_lowered_here_and_refused_here(checkpoint, tmp_path):
    path = tmp_path / "decoder-tpu.stablehlo"
    info = export(checkpoint, "stablehlo", "decoder", path, platform="tpu")
    assert info["platform"] == "tpu" and info["forms"] == vae_jax.default_forms("tpu")
    with pytest.raises(ValueError, match="lowered for tpu; this JAX runs on cpu: export it with --platform cpu"):
        load(path)


@pytest.mark.parametrize("args, words", [
    (["--format", "onnx", "--part", "vae", "--dtype", "bfloat16"], "onnx artifacts are float32 only"),
    (["--format", "torch.export", "--part", "decoder", "--platform", "tpu"], "for a TPU: --format stablehlo"),
    (["--format", "stablehlo", "--part", "decoder", "--out", "{checkpoint}"], "an input of this command"),
])
def test_the_cli_refuses_what_it_cannot_export(checkpoint, args, words, capsys):
    args = [a.format(checkpoint=checkpoint) for a in args]
    before = checkpoint.read_bytes()
    assert main(["export", str(checkpoint), *args]) == 2
    assert words in capsys.readouterr().err and checkpoint.read_bytes() == before


def test_an_unknown_part_or_batch_is_a_usage_error(checkpoint, capsys):
    for args, words in ((["--part", "generator"], "invalid choice: 'generator'"),
                        (["--part", "vae", "--batch", "0"], "expected 'dynamic' or a batch size >= 1")):
        with pytest.raises(SystemExit):
            main(["export", str(checkpoint), "--format", "onnx", *args])
        assert words in capsys.readouterr().err


def test_a_corrupt_checkpoint_or_a_missing_extra_is_named(checkpoint, tmp_path, monkeypatch, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    assert main(["export", str(junk), "--format", "stablehlo", "--part", "decoder"]) == 2
    assert "junk.safetensors" in capsys.readouterr().err
    assert not default_path(junk, "stablehlo", "decoder").exists()

    def without_onnxscript(name):
        if name == "onnxscript":
            raise ImportError("No module named 'onnxscript'")

    monkeypatch.setattr(spec.importlib, "import_module", without_onnxscript)
    out = tmp_path / "m.onnx"
    assert main(["export", str(checkpoint), "--format", "onnx", "--part", "decoder", "--out", str(out)]) == 2
    assert "exporting onnx needs onnxscript" in capsys.readouterr().err and not out.exists()


def test_a_failed_export_leaves_the_file_there_as_it_was(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "decoder.pt2"
    export(checkpoint, "torch.export", "decoder", out)
    before, sidecar = out.read_bytes(), spec.sidecar_path(out).read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("the exporter failed")

    monkeypatch.setattr(vae_torch.export.torch.export, "export", broken)
    with pytest.raises(RuntimeError, match="the exporter failed"):
        export(checkpoint, "torch.export", "encoder", out)
    assert out.read_bytes() == before and spec.sidecar_path(out).read_bytes() == sidecar
    load(out)  # still the decoder, and still its sidecar's


def test_the_docs_examples_run(tmp_path, monkeypatch):
    """docs/export.md's examples, as written: its `twinvae export` lines, then each Python block, on a
    checkpoint at the path they name (written here, not trained: the training line is the docs' only)."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "export.md").read_text()
    blocks = re.findall(r"```(bash|python)\n(.*?)```", page, re.S)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "digits").mkdir(parents=True)
    config = VAEConfig(image_shape=(1, 8, 8), conv_channels=(16, 32), latent_dim=8)
    vae_torch.save_checkpoint("runs/digits/model.safetensors", vae_torch.init_model(config), config)
    commands = [line.split()[1:] for kind, text in blocks if kind == "bash" for line in text.splitlines()
                if line.startswith("twinvae export")]
    assert len(commands) == 3
    for command in commands:
        assert main(command) == 0
    snippets = [text for kind, text in blocks if kind == "python"]
    assert len(snippets) == 4
    for snippet in snippets:
        exec(compile(snippet, "docs/export.md", "exec"), {})


def _edit_sidecar(path, **changes):
    sidecar = spec.sidecar_path(path)
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **changes}))


def _wrong_inputs(path):
    info = json.loads(spec.sidecar_path(path).read_text())
    _edit_sidecar(path, inputs=[{**info["inputs"][0], "shape": [4, 3]}, info["inputs"][1]])


@pytest.mark.parametrize("format, spoil, words", [
    ("onnx", _wrong_inputs, r"its inputs are z \(4, 3\) float32, labels \(batch\) int64; the artifact's are "
                            r"z \(batch, 3\) float32, labels \(batch\) int64"),
    ("torch.export", _wrong_inputs, r"its inputs are z \(4, 3\) float32, .*; the artifact's are \(s\d+, 3\)"),
    ("stablehlo", _wrong_inputs, r"its inputs are z \(4, 3\) float32, labels \(batch\) int32; the artifact's "
                                 r"are \(batch, 3\) float32, \(batch\) int32"),
    ("torch.export", lambda p: _edit_sidecar(p, outputs=[{"name": "logits", "shape": ["batch", 1, 8, 8],
                                                          "dtype": "float64"}]),
     r"its outputs are logits \(batch, 1, 8, 8\) float64; the artifact's are \(s\d+, 1, 8, 8\) float32"),
    ("stablehlo", lambda p: _edit_sidecar(p, platform="cuda"), "its platform is cuda; the artifact's is cpu"),
])
def test_a_sidecar_that_disagrees_with_its_artifact_is_refused_naming_both(decoders, tmp_path, format, spoil,
                                                                            words):
    path = _copy(decoders[format], tmp_path)
    spoil(path)
    with pytest.raises(spec.ExportError, match=f"sidecar .*{path.name}.json does not match .*{words}"):
        load(path)


@pytest.mark.parametrize("format", list(spec.FORMATS))
@pytest.mark.parametrize("spoil", ["truncated", "garbage", "another format's file"])
def test_a_damaged_or_mislabelled_artifact_is_an_export_error_naming_it(decoders, tmp_path, format, spoil):
    path = _copy(decoders[format], tmp_path)
    other = decoders[{"onnx": "stablehlo", "stablehlo": "torch.export", "torch.export": "onnx"}[format]]
    content = {"truncated": path.read_bytes()[:len(path.read_bytes()) // 2], "garbage": b"\x07garbage\x00" * 99,
               "another format's file": other.read_bytes()}[spoil]
    _rewrite(path, content)
    with pytest.raises(spec.ExportError, match=re.escape(str(path))):
        load(path)


def test_a_pinned_sha256_loads_its_artifact_and_refuses_another(decoders, tmp_path):
    path = decoders["stablehlo"]
    trusted = spec.file_sha256(path)
    assert load(path, sha256=trusted).info["sha256"] == trusted
    copy = _copy(path, tmp_path)
    _rewrite(copy, decoders["stablehlo"].read_bytes() + b"\0")  # a sidecar rewritten with it: its hash cannot tell
    with pytest.raises(spec.ExportError, match=f"has SHA-256 {spec.file_sha256(copy)}, not the {trusted} it was"):
        load(copy, sha256=trusted)


class _RunsCode:
    """Unpickled, it runs a shell command that leaves a marker file: what a hostile pickle could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def _with_records(data: bytes, records: dict) -> bytes:
    """The zip archive in data with records replaced or added (name -> bytes; None drops it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w") as target:
        for name in source.namelist():
            if name not in records:
                target.writestr(name, source.read(name))
        for name, content in records.items():
            if content is not None:
                target.writestr(name, content)
    return buffer.getvalue()


SAMPLE_INPUTS = "archive/data/sample_inputs/model.pt"


def _hostile_sample_inputs(data: bytes, marker: Path, way: str) -> bytes:
    """The .pt2 in data with its sample inputs made to run code: replaced by a bare pickle, or with the
    pickle of their torch.save archive replaced (protocol 2: GLOBAL; protocol 4: STACK_GLOBAL)."""
    if way == "bare pickle":
        return _with_records(data, {SAMPLE_INPUTS: pickle.dumps(_RunsCode(marker), protocol=2)})
    inner = zipfile.ZipFile(io.BytesIO(data)).read(SAMPLE_INPUTS)
    pickled = pickle.dumps(((_RunsCode(marker),), {}), protocol=int(way[-1]))
    return _with_records(data, {SAMPLE_INPUTS: _with_records(inner, {"archive/data.pkl": pickled})})


@pytest.mark.parametrize("way, words", [
    ("bare pickle", f"member {SAMPLE_INPUTS}: it is not a torch.save archive"),
    ("data.pkl, protocol 2", f"member {SAMPLE_INPUTS} \\(its archive/data.pkl\\) imports (posix|nt|os).system"),
    ("data.pkl, protocol 4", f"member {SAMPLE_INPUTS} \\(its archive/data.pkl\\) imports (posix|nt|os).system"),
])
def test_a_pt2_whose_pickle_would_run_code_is_refused_before_torch_reads_it(decoders, tmp_path, way, words):
    path, marker = _copy(decoders["torch.export"], tmp_path), tmp_path / "ran"
    _rewrite(path, _hostile_sample_inputs(path.read_bytes(), marker, way))
    with pytest.raises(spec.ExportError, match=f"refused {re.escape(str(path))}.*{words}"):
        load(path)
    assert not marker.exists()


PROGRAM = "archive/models/model.json"


def _hostile_program(data: bytes, marker: Path, where: str) -> bytes:
    """The .pt2 in data with Python in a string that torch.export.load evaluates: a symbolic size (sympify)
    or a guard (compiled into the module's input check)."""
    program = json.loads(zipfile.ZipFile(io.BytesIO(data)).read(PROGRAM))
    code = f"__import__('os').system('touch {marker}')"
    if where == "size":
        text = json.dumps(program)
        size = re.search(r'"expr_str": "(Symbol[^"]*)"', text).group(1)
        text = text.replace(f'"expr_str": "{size}"', f'"expr_str": "({code} and 0) + {size}"', 1)
        program = json.loads(text)
    else:
        program["guards_code"] = [*(program.get("guards_code") or []), f"{code} == 0"]
    return _with_records(data, {PROGRAM: json.dumps(program).encode()})


@pytest.mark.parametrize("where", ["size", "guard"])
def test_a_pt2_whose_program_holds_python_is_refused_before_torch_reads_it(decoders, tmp_path, where):
    """torch.export.load sympifies each symbolic size and compiles each guard: a string there is code."""
    path, marker = _copy(decoders["torch.export"], tmp_path), tmp_path / "ran"
    _rewrite(path, _hostile_program(path.read_bytes(), marker, where))
    words = f"its archive member {PROGRAM} holds .*__import__.*which torch.export.load would run as Python"
    with pytest.raises(spec.ExportError, match=f"refused {re.escape(str(path))}: {words}"):
        load(path)
    assert not marker.exists()


WEIGHTS_CONFIG = "archive/data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "archive/data/constants/model_constants_config.json"


def _use_pickle(data: bytes) -> bytes:
    """The .pt2 in data with its first weight marked for torch.load(weights_only=False)."""
    config = json.loads(zipfile.ZipFile(io.BytesIO(data)).read(WEIGHTS_CONFIG))
    next(iter(config["config"].values()))["use_pickle"] = True
    return _with_records(data, {WEIGHTS_CONFIG: json.dumps(config).encode()})


def _opaque_constant(data: bytes) -> bytes:
    """The .pt2 in data with a constant that torch would pickle.loads, by the prefix of its record's name."""
    config = {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False,
                               "tensor_meta": None}}}
    return _with_records(data, {CONSTANTS_CONFIG: json.dumps(config).encode()})


@pytest.mark.parametrize("spoil, words", [
    (_use_pickle, r"model_weights_config.json has .* unpickled or read from 'weight_\d+', not raw tensor bytes"),
    (_opaque_constant, r"model_constants_config.json has c unpickled or read from 'opaque_obj_0'"),
    (lambda data: _with_records(data, {"archive/data/aotinductor/model/model.so": b"\x7fELF"}),
     r"not a torch.export archive of this twin's: it holds 'archive/data/aotinductor/model/model.so'"),
    (lambda data: _with_records(data, {"serialized_state_dict.pt": b"\x80\x02."}),
     r"it holds 'serialized_state_dict.pt'"),  # the legacy layout torch.export.load falls back to
])
def test_a_pt2_holding_what_torch_would_unpickle_or_run_is_refused(decoders, tmp_path, spoil, words):
    path = _copy(decoders["torch.export"], tmp_path)
    _rewrite(path, spoil(path.read_bytes()))
    with pytest.raises(spec.ExportError, match=f"refused {re.escape(str(path))}.*{words}"):
        load(path)


@pytest.fixture(scope="module")
def torch_programs(tmp_path_factory):
    """A torch.export program of every part, dtype and batch mode, of an unconditional and a conditional model,
    exported on the CPU: all this twin's programs the allowlist of the archive check is derived from."""
    folder = tmp_path_factory.mktemp("programs")
    paths = []
    for classes in (0, 2):
        config = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4, 8), latent_dim=3, num_classes=classes)
        checkpoint = folder / f"classes-{classes}.safetensors"
        vae_torch.save_checkpoint(checkpoint, vae_torch.init_model(config, seed=classes), config)
        for part, dtype, batch in itertools.product(spec.PARTS, spec.DTYPES, (None, 3)):
            paths.append(folder / f"{classes}-{part}-{dtype}-{batch}.pt2")
            export(checkpoint, "torch.export", part, paths[-1], batch=batch, dtype=dtype)
    return paths


def test_every_torch_export_program_passes_the_archive_check_whose_allowlist_it_needs_whole(torch_programs,
                                                                                           monkeypatch):
    imported, real = set(), spec.pickle_globals

    def recording(data):
        found = real(data)
        imported.update(found)
        return found

    monkeypatch.setattr(spec, "pickle_globals", recording)
    for path in torch_programs:
        artifact = load(path)
        assert artifact.info["artifact_format"] == "torch.export"
    assert imported == vae_torch.export.PICKLE_GLOBALS  # as narrow as these programs need
