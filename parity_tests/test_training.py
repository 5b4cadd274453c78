"""The training loop (`twinvae train`) on the embedded digits: both backends, same seed, same losses."""

import dataclasses
import json
import signal
from pathlib import Path

import numpy as np
import pytest

import vae_jax
import vae_torch
from twinvae import run_folder
from twinvae.cli import main as cli_main
from twinvae.datasets import load_dataset
from twinvae.evaluation import evaluate_checkpoint
from twinvae.parity.measures import worst
from twinvae.trainer import TrainingDiverged, TrainingInterrupted, TrainOptions, resume, train
from twinvae.trainer.options import beta_at, learning_rate_at
from vae_core import seeds
from vae_core.config import VAEConfig
from vae_core.forms import NATIVE_FORMS

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4, beta=2.0)
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def _run(tmp_path, backend, dtype, config=CONFIG, **kwargs):
    options = TrainOptions(backend=backend, epochs=2, batch_size=256, dtype=dtype, seed=3,
                           out=str(tmp_path / f"{backend}-{dtype}"), kl_warmup=8, free_bits=0.05,
                           lr_schedule="cosine", lr_warmup=3, **kwargs)
    train(config, options, progress=False, log=lambda *a: None)
    with open(tmp_path / f"{backend}-{dtype}" / "log.jsonl") as f:
        return [json.loads(line) for line in f], options.out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_both_backends_train_alike(tmp_path, dtype):
    """float32: a class-conditional model on grey levels, the batches' labels from the dataset; float64 on
    dynamically binarised batches, which both twins must draw alike (and evaluate on the same binarised
    test set as the run)."""
    binarize = "dynamic" if dtype == "float64" else None
    if dtype == "float64":
        import jax

        with jax.enable_x64(True):
            jax_log, jax_out = _run(tmp_path, "jax", dtype, binarize=binarize)
        config = CONFIG
    else:
        config = dataclasses.replace(CONFIG, num_classes=10)
        jax_log, jax_out = _run(tmp_path, "jax", dtype, config)
    torch_log, torch_out = _run(tmp_path, "torch", dtype, config, binarize=binarize)
    assert [r["step"] for r in jax_log] == [5, 10] and [r["beta"] for r in jax_log] == [1.25, 2.0]
    for jax_record, torch_record in zip(jax_log, torch_log):
        for split in ("train", "test"):
            for term in ("total", "reconstruction", "kl"):
                a, b = jax_record[split][term], torch_record[split][term]
                assert abs(a - b) <= TOLERANCE[dtype] * abs(b), (split, term, a, b)
    # the checkpoints each backend wrote load in the other and hold the same weights
    torch_model, _, meta = vae_torch.load_checkpoint(f"{jax_out}/model.safetensors", dtype="float32")
    jax_model, _, _ = vae_jax.load_checkpoint(f"{torch_out}/model.safetensors", dtype="float32")
    a, b = vae_torch.export_weights(torch_model), vae_jax.export_weights(jax_model)
    assert meta["epoch"] == 2 and meta["backend"] == "jax" and meta["binarize"] == binarize
    assert meta.get("classes") == (None if binarize else [str(d) for d in range(10)])
    assert worst(a, b)[0] <= 10 * TOLERANCE[dtype]
    if binarize:
        evaluation = evaluate_checkpoint(f"{torch_out}/model.safetensors", backend="torch", k=2, seed=3)
        assert evaluation["binarize"] == "dynamic" and evaluation["measure"].startswith("nats (a Bernoulli")
        assert evaluation["bits_per_dim_iwae"] == pytest.approx(evaluation["iwae_nll"] / (64 * np.log(2)))
        run_figure = torch_log[-1]["test"]["total"]
        assert abs(evaluation["negative_elbo"] - run_figure) <= 1e-10 * abs(run_figure)


def test_mixed_precision_training_follows_float32(tmp_path):
    """`--dtype bfloat16`: both backends train with float32 parameters and bf16 layers; the losses follow
    the float32 run's closely (bf16's 2^-8 rounding, averaged over the batch), the checkpoint holds float32
    weights, and resume continues in mixed precision."""
    reference, _ = _run(tmp_path, "torch", "float32")
    for backend in ("torch", "jax"):
        log, out = _run(tmp_path, backend, "bfloat16")
        for record, ref in zip(log, reference):
            for split in ("train", "test"):
                a, b = record[split]["total"], ref[split]["total"]
                assert abs(a - b) <= 2e-3 * abs(b), (backend, split, a, b)
        model, _, _ = {"torch": vae_torch, "jax": vae_jax}[backend].load_checkpoint(f"{out}/model.safetensors")
        assert str(model.dtype).removeprefix("torch.") == "float32"
        resumed = resume(out, epochs=3, progress=False, log=lambda *a: None)
        assert resumed["epoch"] == 3 and np.isfinite(resumed["test"]["total"])
    # bf16 really computed: the run is not bitwise float32's
    assert log[0]["train"]["total"] != reference[0]["train"]["total"]


def test_training_lowers_the_test_loss_and_records_the_run(tmp_path):
    log, out = _run(tmp_path, "torch", "float32")
    assert log[1]["test"]["total"] < log[0]["test"]["total"]
    run = json.loads(Path(out, "run.json").read_text())
    assert VAEConfig.from_dict(run["config"]) == CONFIG and run["options"]["seed"] == 3
    assert "torch" in run["versions"] and run["command"]
    results = Path(out, "results.md").read_text().splitlines()  # what the docs show of a run
    rows = [line for line in results if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[4] for row in rows] == [f"{r['test']['total']:.3f}" for r in log]
    assert results[0].startswith("Command: `") and "seed 3" in results[2]


def test_divergence_names_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real = seeds.eps_for_step

    def poisoned(seed, step, *args, **kwargs):
        eps = real(seed, step, *args, **kwargs)
        return eps * np.nan if step >= 7 else eps  # epoch 2 (5 steps per epoch) goes bad at step 8

    monkeypatch.setattr(seeds, "eps_for_step", poisoned)
    out = tmp_path / "run"
    options = TrainOptions(backend="torch", epochs=3, batch_size=256, out=str(out))
    with pytest.raises(TrainingDiverged, match=r"the loss became nan at step 8 \(epoch 2\).*intact"):
        train(CONFIG, options, progress=False, log=lambda *a: None)
    model, _, meta = vae_torch.load_checkpoint(out / "model.safetensors")
    assert meta["epoch"] == 1 and all(np.isfinite(w).all() for w in vae_torch.export_weights(model).values())


def test_learning_rate_schedules():
    options = TrainOptions(lr=2.0, lr_warmup=4, lr_schedule="cosine")
    rates = [learning_rate_at(s, options, total_steps=12) for s in range(13)]
    assert rates[:4] == [0.5, 1.0, 1.5, 2.0]  # warm-up
    assert rates[4] == 2.0 and rates[8] == pytest.approx(1.0) and rates[12] == pytest.approx(0.0)
    assert all(a > b for a, b in zip(rates[4:], rates[5:]))  # the cosine only falls
    constant = dataclasses.replace(options, lr_schedule="constant")
    assert [learning_rate_at(s, constant, 12) for s in (0, 3, 4, 11)] == [0.5, 2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="lr-schedule must be one of"):
        TrainOptions(lr_schedule="step")


def test_kl_warmup_schedule():
    assert [beta_at(s, 2.0, 4) for s in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert beta_at(0, 0.7, 0) == 0.7


@pytest.mark.parametrize("kwargs, words", [
    ({"batch_size": 5000}, "batch size 5000 is larger than the 1438 training images"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"backend": "tensorflow"}, "backend must be one of"),
])
def test_bad_options(tmp_path, kwargs, words):
    with pytest.raises(ValueError, match=words):
        train(CONFIG, TrainOptions(**{"out": str(tmp_path / "x"), **kwargs}), progress=False)


def test_refuses_a_folder_that_holds_a_run_and_a_config_of_other_images(tmp_path):
    _, out = _run(tmp_path, "torch", "float32")
    before = Path(out, "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already holds a run"):
        train(CONFIG, TrainOptions(backend="torch", out=out), progress=False)
    assert Path(out, "model.safetensors").read_bytes() == before
    with pytest.raises(ValueError, match=r"digits train images are \(1, 8, 8\) \(C, H, W\), the model takes"):
        train(VAEConfig(), TrainOptions(out=str(tmp_path / "y")), progress=False)


@pytest.mark.fast  # the CLI end to end
def test_cli_train(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["train", "--backend", "torch", "--epochs", "1", "--batch-size", "512", "--latent-dim", "3",
                     "--out", str(out), "--no-progress"]) == 0
    assert "test negative ELBO" in capsys.readouterr().out
    _, config, _ = vae_torch.load_checkpoint(out / "model.safetensors")
    assert config.latent_dim == 3 and config.image_shape == (1, 8, 8)
    assert cli_main(["train", "--out", str(out), "--no-progress"]) == 2  # a clear error, not a traceback
    assert "already holds a run" in capsys.readouterr().err
    # a preset brings the training options it was tuned with; flags given explicitly win
    preset = tmp_path / "preset"
    assert cli_main(["train", "--backend", "torch", "--preset", "resnet", "--epochs", "1", "--batch-size", "512",
                     "--lr", "5e-4", "--out", str(preset), "--no-progress"]) == 0
    run = json.loads((preset / "run.json").read_text())
    assert run["config"]["res_blocks"] == 1 and run["config"]["conv_channels"] == [64, 128]
    options = run["options"]
    assert (options["lr"], options["lr_schedule"], options["lr_warmup"]) == (5e-4, "cosine", 200)


def _log(out):
    return [json.loads(line) for line in Path(out, "log.jsonl").read_text().splitlines()]


def _without_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_resume_in_the_same_backend_is_bitwise(tmp_path, backend):
    full = TrainOptions(backend=backend, epochs=3, batch_size=256, out=str(tmp_path / "full"), kl_warmup=7,
                        lr_schedule="cosine", lr_warmup=4)
    train(CONFIG, full, progress=False, log=lambda *a: None)
    part = dataclasses.replace(full, epochs=1, out=str(tmp_path / "part"))
    train(CONFIG, part, progress=False, log=lambda *a: None)
    resume(part.out, epochs=3, progress=False, log=lambda *a: None)
    assert _without_time(_log(part.out)) == _without_time(_log(full.out))
    a = vae_torch.export_weights(vae_torch.load_checkpoint(Path(full.out, "model.safetensors"))[0])
    b = vae_torch.export_weights(vae_torch.load_checkpoint(Path(part.out, "model.safetensors"))[0])
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_in_the_other_backend_continues_the_same_optimizer(tmp_path):
    full = TrainOptions(backend="torch", epochs=3, batch_size=256, out=str(tmp_path / "full"))
    train(CONFIG, full, progress=False, log=lambda *a: None)
    part = dataclasses.replace(full, epochs=1, out=str(tmp_path / "part"))
    train(CONFIG, part, progress=False, log=lambda *a: None)
    resume(part.out, backend="jax", epochs=3, progress=False, log=lambda *a: None)
    for a, b in zip(_log(part.out)[1:], _log(full.out)[1:]):
        assert a["test"]["total"] == pytest.approx(b["test"]["total"], rel=1e-4)
        assert a["train"]["total"] == pytest.approx(b["train"]["total"], rel=1e-4)


def test_ctrl_c_saves_mid_epoch_and_resume_matches(tmp_path, monkeypatch):
    full = TrainOptions(backend="torch", epochs=2, batch_size=256, out=str(tmp_path / "full"))
    train(CONFIG, full, progress=False, log=lambda *a: None)
    real = seeds.eps_for_step

    def ctrl_c_at_step_7(seed, step, *args, **kwargs):
        if step == 7:
            signal.raise_signal(signal.SIGINT)  # lands while step 8 is under way
        return real(seed, step, *args, **kwargs)

    monkeypatch.setattr(seeds, "eps_for_step", ctrl_c_at_step_7)
    part = dataclasses.replace(full, out=str(tmp_path / "part"))
    with pytest.raises(TrainingInterrupted, match=r"stopped by Ctrl-C \(SIGINT\) at step 8; the state is saved"):
        train(CONFIG, part, progress=False, log=lambda *a: None)
    monkeypatch.setattr(seeds, "eps_for_step", real)
    position = run_folder.read_train_state(Path(part.out, run_folder.TRAIN_STATE)).position
    assert (position.epoch, position.batch, position.step) == (1, 3, 8)
    resume(part.out, progress=False, log=lambda *a: None)
    assert _without_time(_log(part.out)) == _without_time(_log(full.out))


def test_checkpoint_every_saves_mid_epoch(tmp_path):
    options = TrainOptions(backend="torch", epochs=1, batch_size=256, checkpoint_every=2, out=str(tmp_path / "r"))
    train(CONFIG, options, progress=False, log=lambda *a: None)
    position = run_folder.read_train_state(Path(options.out, run_folder.TRAIN_STATE)).position
    assert (position.epoch, position.batch, position.step) == (1, 0, 5)  # the end-of-epoch save is the last


def test_resume_errors(tmp_path):
    with pytest.raises(ValueError, match="holds no run to resume"):
        resume(tmp_path, progress=False)
    _, out = _run(tmp_path, "torch", "float32")
    with pytest.raises(ValueError, match="already finished 2 epochs"):
        resume(out, progress=False)
    with pytest.raises(ValueError, match="epochs must be at least 1, got 0"):
        resume(out, epochs=0, progress=False)
    Path(out, run_folder.TRAIN_STATE).write_bytes(b"garbage")
    Path(out, run_folder.PREVIOUS_STATE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no readable checkpoint to resume from: training state .* too short"):
        resume(out, epochs=3, progress=False)


def test_train_step_scores_the_reconstruction_against_the_target():
    """The denoising step in float64: target=x is the plain step; a different target changes it, the same
    way in both twins."""
    import jax

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(6, 1, 8, 8))
    target = np.clip(x + 0.3 * rng.standard_normal(x.shape), 0, 1)
    eps = rng.standard_normal((6, CONFIG.latent_dim))
    results = {}
    with jax.enable_x64(True):
        for twin in (vae_torch, vae_jax):
            losses = []
            for kwargs in ({}, {"target": x}, {"target": target}):
                model = twin.init_model(CONFIG, seed=0, dtype="float64")
                state = twin.create_train_state(model)
                extra = {k: twin.as_input(v, model) for k, v in kwargs.items()}
                # JAX's step as it runs, compiled (eagerly, each of its operations compiles on its own: 40 s)
                step = vae_jax.compile_train_step(state) if twin is vae_jax else twin.train_step
                state, loss = step(state, twin.as_input(x, model), twin.as_input(eps, model), **extra)
                weights = twin.export_weights(state.model)
                losses.append((float(twin.to_numpy(loss.reconstruction)), weights))
            results[twin.__name__] = losses
            plain, same, other = losses
            assert plain[0] == same[0] and abs(other[0] - plain[0]) > 0.01
        jax_model = vae_jax.init_model(CONFIG, dtype="float64")
        with pytest.raises(ValueError, match=r"target has shape \(5, 8, 8, 1\) but x has \(6, 8, 8, 1\)"):
            vae_jax.train_step(vae_jax.create_train_state(jax_model), vae_jax.as_input(x, jax_model), eps,
                               target=vae_jax.as_input(target[:5], jax_model))
    for a, b in zip(results["vae_torch"], results["vae_jax"]):
        assert abs(a[0] - b[0]) <= 1e-10 * abs(a[0])
        assert max(np.max(np.abs(a[1][k] - b[1][k])) for k in a[1]) <= 1e-10
    torch_model = vae_torch.init_model(CONFIG)
    with pytest.raises(ValueError, match=r"target has values in .*expected them in \[0, 1\]"):
        vae_torch.train_step(vae_torch.create_train_state(torch_model), vae_torch.as_input(x, torch_model),
                             vae_torch.as_input(eps, torch_model),
                             target=vae_torch.as_input(np.clip(2 * x - 1, -1, 1), torch_model))


def test_denoising_runs_agree_across_backends_and_report_psnr(tmp_path, capsys):
    """--denoise: the same noisy inputs in both backends (float32 tolerance), PSNR in the log, the
    evaluation and the run's pictures, and `twinvae denoise` on image files."""
    logs = {}
    for backend in ("torch", "jax"):
        out = tmp_path / backend
        train(CONFIG, TrainOptions(backend=backend, epochs=2, batch_size=128, denoise=0.3, out=str(out)),
              progress=False, log=lambda *a: None)
        logs[backend] = _log(out)
    for a, b in zip(logs["torch"], logs["jax"]):
        assert abs(a["train"]["total"] - b["train"]["total"]) <= 1e-4 * abs(b["train"]["total"])
        for key in ("psnr_noisy", "psnr_denoised"):
            assert abs(a["denoising"][key] - b["denoising"][key]) <= 1e-3
    plain = tmp_path / "plain"
    train(CONFIG, TrainOptions(backend="torch", epochs=2, batch_size=128, out=str(plain)), progress=False,
          log=lambda *a: None)
    noisy, clean = (vae_torch.export_weights(vae_torch.load_checkpoint(run / "model.safetensors")[0])
                    for run in (tmp_path / "torch", plain))
    assert max(np.max(np.abs(noisy[k] - clean[k])) for k in clean) > 1e-3  # the noise was added
    assert (tmp_path / "torch" / "denoising.png").stat().st_size > 100
    assert not (plain / "denoising.png").exists()

    from twinvae.evaluation import evaluate_checkpoint
    ckpt = tmp_path / "jax" / "model.safetensors"
    report = evaluate_checkpoint(ckpt, backend="torch", k=2)
    assert report["denoising"]["sigma"] == 0.3  # from the checkpoint's metadata
    assert report["denoising"]["psnr_noisy"] == pytest.approx(logs["jax"][-1]["denoising"]["psnr_noisy"])
    assert evaluate_checkpoint(plain / "model.safetensors", k=2)["denoising"] is None
    assert evaluate_checkpoint(plain / "model.safetensors", k=2, noise=0.5)["denoising"]["sigma"] == 0.5

    from PIL import Image
    files = tmp_path / "files"
    files.mkdir()
    digits = load_dataset("digits").test_x[:3]
    for i, image in enumerate(digits):
        Image.fromarray((image[0] * 255).astype(np.uint8)).save(files / f"d{i}.png")
    assert cli_main(["denoise", str(ckpt), str(files), "--out", str(tmp_path / "dn"), "--backend", "torch"]) == 0
    assert "3 image(s), noise sigma 0.3: PSNR noisy" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "dn" / "denoised").iterdir()) == ["d0.png", "d1.png", "d2.png"]
    with Image.open(tmp_path / "dn" / "denoised" / "d0.png") as image:
        assert image.size == (8, 8)
    assert cli_main(["denoise", str(ckpt), str(files / "missing.png"), "--out", str(tmp_path / "dn")]) == 2
    assert "missing.png does not exist" in capsys.readouterr().err
    assert cli_main(["denoise", str(ckpt), str(files), "--noise", "-1", "--out", str(tmp_path / "dn")]) == 2
    assert "sigma" in capsys.readouterr().err


def test_a_log_file_gets_one_line_per_epoch_and_the_summary(tmp_path):
    """`twinvae train > log.txt 2>&1`: no progress bar off a terminal, no carriage returns, nothing else."""
    import subprocess
    import sys

    with open(tmp_path / "log.txt", "w") as log:
        subprocess.run([sys.executable, "-m", "twinvae", "train", "--backend", "torch", "--epochs", "3",
                        "--batch-size", "256", "--out", str(tmp_path / "run")], stdout=log,
                       stderr=subprocess.STDOUT, timeout=300, check=True)
    text = (tmp_path / "log.txt").read_text()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 4, lines
    assert [line.split(":")[0] for line in lines[:3]] == ["epoch 1", "epoch 2", "epoch 3"]
    assert lines[3].startswith("test negative ELBO") and lines[3].endswith(f"run folder {tmp_path / 'run'}")


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_the_trainers_fastest_forms_train_as_the_plain_ones(tmp_path, backend, monkeypatch):
    """The trainer runs each twin's defaults on the device (torch: channels_last and the col2im output
    layer; JAX on the CPU: the space-to-depth encoder and sub-pixel decoder, its output layer col2im,
    compiled without YNNPACK) and records them; the plain
    forms (contiguous NCHW; every layer native, XLA's default options) give the same losses to float32
    rounding."""
    fast, _ = _run(tmp_path / "fast", backend, "float32")
    forms = json.loads(Path(tmp_path / "fast", f"{backend}-float32", "run.json").read_text())["forms"]
    twin = {"torch": vae_torch, "jax": vae_jax}[backend]
    if backend == "torch":
        assert forms == {"strided_conv": "native", "transposed_conv": "native", "output_transposed_conv": "col2im",
                         "memory_format": "channels_last", "compiler_options": {}}
        monkeypatch.setattr(twin.model, "DEFAULT_MEMORY_FORMAT", "contiguous")
    else:
        assert forms == {"strided_conv": "space_to_depth", "transposed_conv": "subpixel",
                         "output_transposed_conv": "col2im", "memory_format": "channels_last",
                         "compiler_options": twin.forms.COMPILER_OPTIONS["cpu"]}
        monkeypatch.setattr(twin.forms, "COMPILER_OPTIONS", {})
    monkeypatch.setitem(twin.forms.DEFAULT_FORMS, "cpu", dict(NATIVE_FORMS))
    plain, _ = _run(tmp_path / "plain", backend, "float32")
    assert json.loads(Path(tmp_path / "plain", f"{backend}-float32", "run.json").read_text())["forms"] != forms
    for a, b in zip(fast, plain):
        for split in ("train", "test"):
            assert a[split]["total"] == pytest.approx(b[split]["total"], rel=TOLERANCE["float32"])
