import json
import os
import struct

import numpy as np
import pytest

from vae_core import checkpoint as core
from vae_core.config import VAEConfig
from vae_core.layout import WeightsError, init_weights


def _write(path, config=VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2)):
    weights = init_weights(config, 0)
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
    weights = init_weights(config, 0)
    weights["fc_mu.bias"][0] = np.nan
    with pytest.raises(WeightsError, match=r"NaN or inf in \['fc_mu.bias'\]"):
        core.write_checkpoint(tmp_path / "m.safetensors", weights, config)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        core.write_checkpoint(tmp_path / "m.safetensors", init_weights(config, 0), config, {"x": object()})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        core.write_checkpoint(tmp_path / "nope" / "m.safetensors", init_weights(config, 0), config)
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


def _rewrite_header(path, change, reseal: bool = True):
    """Edit a safetensors file's header in place; reseal: recompute its header checksum, as a writer that
    made the edit would (so that the checks behind the checksum are what the test reaches)."""
    from safetensors.numpy import load

    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    change(header)
    metadata = header.get("__metadata__") or {}
    if reseal and core.HEADER_CHECKSUM in metadata:
        metadata[core.HEADER_CHECKSUM] = core.header_checksum(metadata, load(data))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # padded as safetensors pads it; the tensors' offsets are after the header
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


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


def test_format_3_holds_the_objective_and_format_2_loads_as_the_elbo(tmp_path):
    """Version 3 came with `objective` and `train_samples`: it writes them; a version-2 file, whose config
    lacks them, loads as the ELBO of one sample; a version above 3 is refused."""
    path = tmp_path / "m.safetensors"
    iwae = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2, objective="iwae", train_samples=5)
    _write(path, iwae)
    assert core.FORMAT_VERSION == 3 and core.read_checkpoint(path)[1] == iwae
    _write(path)

    def as_version_2(header):
        config = json.loads(header["__metadata__"]["config"])
        del config["objective"], config["train_samples"]
        header["__metadata__"].update(format_version="2", config=json.dumps(config))

    _rewrite_header(path, as_version_2)
    config = core.read_checkpoint(path)[1]
    assert config.objective == "elbo" and config.train_samples == 1
    _rewrite_header(path, lambda h: h["__metadata__"].update(format_version="4"))
    with pytest.raises(core.CheckpointError, match=r"format version 4 is newer than this twinvae reads \(3\)"):
        core.read_checkpoint(path)


def flip_bit(path, tensor: str, bit: int = 30) -> None:
    """Flip one bit of a tensor's first float32 in a safetensors file (bit 30: the exponent's top bit)."""
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    start = 8 + n + json.loads(data[8:8 + n])[tensor]["data_offsets"][0]
    (word,) = struct.unpack("<I", data[start:start + 4])
    data[start:start + 4] = struct.pack("<I", word ^ (1 << bit))
    path.write_bytes(bytes(data))


def test_a_flipped_bit_is_found_and_named(tmp_path):
    path = tmp_path / "m.safetensors"
    _write(path)
    flip_bit(path, "fc_mu.weight")  # a finite value still, ~1e38 times too large: only the checksum sees it
    with pytest.raises(core.CheckpointError, match=rf"checkpoint {path}: tensor 'fc_mu.weight' does not match its "
                                                   "SHA-256 checksum: the file is corrupt"):
        core.read_checkpoint(path)


def test_a_file_without_checksums_loads_with_a_warning(tmp_path):
    path = tmp_path / "m.safetensors"
    weights, _ = _write(path)
    _rewrite_header(path, lambda h: h["__metadata__"].update(sha256="x" * len(h["__metadata__"]["sha256"])))
    with pytest.raises(core.CheckpointError, match="checksum field is not JSON"):
        core.read_checkpoint(path)
    _rewrite_header(path, lambda h: h["__metadata__"].pop("sha256"))
    with pytest.warns(UserWarning, match=f"checkpoint {path} carries no checksums"):
        read, _, _ = core.read_checkpoint(path)
    assert all(np.array_equal(read[k], weights[k]) for k in weights)


def test_the_previous_file_is_kept_and_leftover_temp_files_removed(tmp_path):
    path, previous = tmp_path / "state", tmp_path / "state.previous"
    core.atomic_write_bytes(path, b"one", previous=previous)
    assert path.read_bytes() == b"one" and not previous.exists()
    core.atomic_write_bytes(path, b"two", previous=previous)
    assert (path.read_bytes(), previous.read_bytes()) == (b"two", b"one")
    ours = [tmp_path / ".state.k3x_9qaz.twinvae.tmp", tmp_path / ".state.previous.link.twinvae.tmp",
            tmp_path / ".state.ab12cd34.tmp"]  # the last as earlier versions named them
    theirs = [tmp_path / ".state.abc.tmp", tmp_path / ".notes.ab12cd34.tmp", tmp_path / ".state.my.tmp"]
    for path in ours + theirs:
        path.write_bytes(b"half")
    assert core.remove_temp_files(tmp_path, ["state", "state.previous"]) == sorted(ours)
    kept = sorted(["state", "state.previous", *(p.name for p in theirs)])
    assert sorted(p.name for p in tmp_path.iterdir()) == kept


def test_every_header_byte_is_covered_by_a_checksum(tmp_path):
    """The metadata (config, format, caller's metadata) and each tensor's dtype and shape: an edit of any is
    found; a file written before the header checksum (none) still loads."""
    path = tmp_path / "m.safetensors"
    _write(path)
    edits = [lambda h: h["__metadata__"].update(metadata=h["__metadata__"]["metadata"].replace("3", "4")),
             lambda h: h["__metadata__"].update(config=h["__metadata__"]["config"].replace('"beta": 1.0',
                                                                                           '"beta": 3.0')),
             lambda h: h["fc_mu.weight"].update(shape=h["fc_mu.weight"]["shape"][::-1])]
    for edit in edits:
        _write(path)
        _rewrite_header(path, edit, reseal=False)
        with pytest.raises(core.CheckpointError, match=f"checkpoint {path}: its header .* does not match its "
                                                       "SHA-256 checksum"):
            core.read_checkpoint(path)
    _, config = _write(path)
    _rewrite_header(path, lambda h: h["__metadata__"].pop(core.HEADER_CHECKSUM))
    assert core.read_checkpoint(path)[1] == config
