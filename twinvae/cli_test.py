import pytest

from twinvae import __version__
from twinvae.cli import main


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


def test_parity_hands_its_options_to_the_harness(capsys):
    with pytest.raises(SystemExit) as info:
        main(["parity", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "--quick" in out and "--preset" in out and "--brief" in out


@pytest.mark.parametrize("args, words", [
    (["--config", "missing.json"], "missing.json"),
    (["--preset", "seed", "--case", "digits"], "--case picks standard cases"),
    (["--case", "no such case"], "no case matches"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--export", "--dtype", "float64"], "--export checks artifacts, which compute in float32 or bfloat16"),
    (["--export", "tflite"], "invalid choice: 'tflite'"),
])
def test_parity_refuses_bad_options_with_a_message(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["parity", *args])
    assert info.value.code == 2 and words in capsys.readouterr().err


def test_parity_export_checks_the_users_model_in_the_formats_asked(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text('{"image_shape": [1, 8, 8], "conv_channels": [4], "latent_dim": 2, "num_classes": 3}')
    assert main(["parity", "--config", str(path), "--export", "stablehlo", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "| export." in line]
    assert len(rows) == 6 and all("stablehlo" in row and "| pass |" in row for row in rows)
    assert "6 passed, 0 failed" in out


def test_parity_on_a_machine_without_cuda_says_so(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as info:
        main(["parity", "--device", "cuda", "--quick"])
    assert info.value.code == 2 and "torch sees no CUDA device" in capsys.readouterr().err
