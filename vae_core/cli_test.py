import pytest

from vae_core import __version__
from vae_core.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out


def test_bench_hands_its_options_to_the_harness(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--help"])
    assert info.value.code == 0 and "--batch-sizes" in capsys.readouterr().out


def test_inspect_errors_are_messages_not_tracebacks(tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    assert main(["inspect", str(tmp_path / "junk.safetensors")]) == 2
    assert "twinvae inspect: error: checkpoint" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
