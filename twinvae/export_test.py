"""`twinvae export` and `twinvae.export.load`: artifacts and their sidecars from checkpoints of either twin,
a dynamic or fixed batch, named and positional inputs, and the refusals (bad choices, a missing extra, a
corrupt checkpoint, inputs that do not fit, an artifact for another platform). Parity of the artifacts'
outputs: parity_tests/test_export.py."""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

import vae_jax
import vae_torch
from twinvae.cli import main
from twinvae.export import default_path, export, load
from vae_core import export as spec
from vae_core.config import VAEConfig
from vae_core.layout import NATIVE_FORMS

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4, 8), latent_dim=3, num_classes=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A class-conditional checkpoint written by the JAX twin (so every torch-made format crosses twins)."""
    path = tmp_path_factory.mktemp("export") / "model.safetensors"
    vae_jax.save_checkpoint(path, vae_jax.init_model(CONFIG, seed=1), CONFIG, {"backend": "jax"})
    return path


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
    (["--format", "stablehlo", "--part", "decoder", "--out", "{checkpoint}"], "is the checkpoint itself"),
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
