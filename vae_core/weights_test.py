import json
import os
import struct

import numpy as np
import pytest

from vae_core import weights as core
from vae_core.config import VAEConfig

# The canonical layout, version 1. A rename or reshape here is a format change: bump FORMAT_VERSION,
# update the README's table, and keep reading the old names.
GOLDEN_CONV = {
    "encoder.convs.0.weight": (32, 1, 4, 4), "encoder.convs.0.bias": (32,),
    "encoder.convs.1.weight": (64, 32, 4, 4), "encoder.convs.1.bias": (64,),
    "fc_mu.weight": (20, 3136), "fc_mu.bias": (20,),
    "fc_logvar.weight": (20, 3136), "fc_logvar.bias": (20,),
    "decoder.fc.weight": (3136, 20), "decoder.fc.bias": (3136,),
    "decoder.deconvs.0.weight": (64, 32, 4, 4), "decoder.deconvs.0.bias": (32,),
    "decoder.deconvs.1.weight": (32, 1, 4, 4), "decoder.deconvs.1.bias": (1,),
}
GOLDEN_MLP = {
    "encoder.linears.0.weight": (400, 784), "encoder.linears.0.bias": (400,),
    "fc_mu.weight": (20, 400), "fc_mu.bias": (20,),
    "fc_logvar.weight": (20, 400), "fc_logvar.bias": (20,),
    "decoder.fc.weight": (400, 20), "decoder.fc.bias": (400,),
    "decoder.linears.0.weight": (784, 400), "decoder.linears.0.bias": (784,),
}


def test_golden_key_lists():
    assert list(core.canonical_shapes(VAEConfig()).items()) == list(GOLDEN_CONV.items())
    assert list(core.canonical_shapes(VAEConfig(arch="mlp")).items()) == list(GOLDEN_MLP.items())
    assert core.num_parameters(VAEConfig()) == 258_025


@pytest.mark.parametrize("config", [
    VAEConfig(image_shape=(3, 8, 12), conv_channels=(4, 6), latent_dim=5),
    VAEConfig(arch="mlp", image_shape=(3, 4, 6), mlp_widths=(7, 5), latent_dim=2),
], ids=["conv", "mlp"])
def test_layout_rules_round_trip_exactly(config):
    for layer in core.layer_specs(config):
        rng = np.random.default_rng(0)
        weight = rng.standard_normal(layer.weight_shape)
        bias = rng.standard_normal(layer.out_features)
        kernel, jax_bias = core.to_jax_layout(layer, weight, bias)
        back = core.from_jax_layout(layer, kernel, jax_bias)
        assert np.array_equal(back[0], weight) and np.array_equal(back[1], bias), layer


def test_flatten_rule_matches_an_nhwc_activation():
    # fc_mu applied to an NCHW-flattened map with the torch weight == applied to the NHWC-flattened map
    # with the converted kernel.
    layer = core.LayerSpec("fc_mu", "linear_from_image", 2 * 3 * 5, 4, (2, 3, 5))
    rng = np.random.default_rng(1)
    weight, bias, fmap = rng.standard_normal((4, 30)), rng.standard_normal(4), rng.standard_normal((2, 3, 5))
    kernel, _ = core.to_jax_layout(layer, weight, bias)
    np.testing.assert_allclose(fmap.transpose(1, 2, 0).reshape(-1) @ kernel, weight @ fmap.reshape(-1))


def test_unflatten_rule_matches_an_nhwc_activation():
    # decoder.fc then view(C, H, W) with the torch weight == the converted kernel then reshape(H, W, C).
    layer = core.LayerSpec("decoder.fc", "linear_to_image", 4, 2 * 3 * 5, (2, 3, 5))
    rng = np.random.default_rng(2)
    weight, bias, z = rng.standard_normal((30, 4)), rng.standard_normal(30), rng.standard_normal(4)
    kernel, jax_bias = core.to_jax_layout(layer, weight, bias)
    nchw = (weight @ z + bias).reshape(2, 3, 5)
    np.testing.assert_allclose((z @ kernel + jax_bias).reshape(3, 5, 2), nchw.transpose(1, 2, 0))


def test_init_is_seeded_and_torch_like():
    config = VAEConfig()
    a, b = core.init_weights(config, 0), core.init_weights(config, 0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc_mu.weight"], core.init_weights(config, 1)["fc_mu.weight"])
    assert np.abs(a["fc_mu.weight"]).max() <= 1 / np.sqrt(3136)
    assert np.abs(a["decoder.deconvs.0.weight"]).max() <= 1 / np.sqrt(32 * 16)  # torch: fan_in from dim 1


def _write(path, config=VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2)):
    weights = core.init_weights(config, 0)
    core.write_checkpoint(path, weights, config, {"epoch": 3})
    return weights, config


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "m.safetensors"
    weights, config = _write(path)
    read, read_config, metadata = core.read_checkpoint(path)
    assert read_config == config and metadata == {"epoch": 3}
    assert all(np.array_equal(read[k], weights[k]) for k in weights)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    _write(path)
    before = path.read_bytes()

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _write(path, VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=3))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_refuses_to_save_bad_weights_or_metadata(tmp_path):
    config = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2)
    weights = core.init_weights(config, 0)
    weights["fc_mu.bias"][0] = np.nan
    with pytest.raises(core.WeightsError, match=r"NaN or inf in \['fc_mu.bias'\]"):
        core.write_checkpoint(tmp_path / "m.safetensors", weights, config)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        core.write_checkpoint(tmp_path / "m.safetensors", core.init_weights(config, 0), config, {"x": object()})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        core.write_checkpoint(tmp_path / "nope" / "m.safetensors", core.init_weights(config, 0), config)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cut", [0, 5, 100, -1])
def test_truncated_file(tmp_path, cut):
    path = tmp_path / "m.safetensors"
    _write(path)
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:-10])
    with pytest.raises(core.CheckpointError, match=f"checkpoint {path}: .*truncated"):
        core.read_checkpoint(path)


def test_foreign_and_garbage_files(tmp_path):
    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign))
    with pytest.raises(core.CheckpointError, match="not written by twinvae"):
        core.read_checkpoint(foreign)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{}" + b"x" * 20)
    with pytest.raises(core.CheckpointError, match="header is not JSON"):
        core.read_checkpoint(garbage)


def _rewrite_header(path, change):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    change(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (n - len(text)) if len(text) <= n else b""
    assert len(text) == n, "test rewrite must keep the header length"
    path.write_bytes(data[:8] + text + data[8 + n:])


def test_checkpoint_gets_a_plain_file_mode(tmp_path):
    path = tmp_path / "m.safetensors"
    _write(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o640)
    _write(path)  # overwriting keeps the file's mode
    assert path.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("change, words", [
    (lambda h: h.update(__metadata__=["x"]), "not written by twinvae"),
    (lambda h: h["__metadata__"].update(format_version="0"), "bad format_version '0'"),
    (lambda h: h["__metadata__"].update(format_version=None), "bad format_version None"),
    (lambda h: h["__metadata__"].update(config='{"latent_dim": 2}'), "missing field(s)"),
    (lambda h: h["fc_mu.bias"].update(data_offsets=None), "'fc_mu.bias' has no valid data_offsets"),
    (lambda h: h["fc_mu.bias"].update(data_offsets=[0]), "'fc_mu.bias' has no valid data_offsets"),
])
def test_corrupt_headers_name_the_path_and_problem(tmp_path, change, words):
    path = tmp_path / "m.safetensors"
    _write(path)
    _rewrite_header(path, change)
    with pytest.raises(core.CheckpointError) as info:
        core.read_checkpoint(path)
    assert str(info.value).startswith(f"checkpoint {path}") and words in str(info.value)


def test_newer_format_and_mismatched_config(tmp_path):
    path = tmp_path / "m.safetensors"
    _write(path)
    _rewrite_header(path, lambda h: h["__metadata__"].update(format_version="9"))
    with pytest.raises(core.CheckpointError, match="format version 9 is newer"):
        core.read_checkpoint(path)
    _write(path)
    # A config that does not match the stored tensors (latent 2 -> 3): named key by key.
    _rewrite_header(path, lambda h: h["__metadata__"].update(
        config=h["__metadata__"]["config"].replace('"latent_dim": 2', '"latent_dim": 3')))
    with pytest.raises(core.CheckpointError, match=r"fc_mu.weight' has shape \(2, 64\), expected \(3, 64\)"):
        core.read_checkpoint(path)
