"""What a run writes of itself: the run record (run.json: written at the start, read back to resume, updated
on each resume), results.md, and the end-of-run pictures."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from twinvae import allocator, run_folder
from twinvae.apps import (
    INTERPOLATION_PAIRS,
    write_interpolations,
    write_loss_curve,
    write_reconstructions,
    write_samples,
)
from twinvae.data import Dataset
from twinvae.denoising import write_denoising
from twinvae.results import machine_record, markdown_table, results_origin
from twinvae.run_folder import RECORD, Position
from twinvae.timings import timings_text
from twinvae.trainer.options import RESUMABLE, TrainOptions
from twinvae.twin import Twin
from vae_core.checkpoint import atomic_write_json
from vae_core.config import VAEConfig


def model_forms(model) -> dict:
    """How a model computes: its layer forms, its memory format and its twin's compiler options (what a
    run records)."""
    return {**model.forms, "memory_format": model.memory_format, "compiler_options": model.compiler_options}


def run_record(config: VAEConfig, options: TrainOptions, model=None) -> dict:
    """What the run folder records: config, options, the model's forms, the command line, the allocator and
    the machine (twinvae.results.machine_record: when, the commit, the CPU, Python, the versions). Call it
    after the twin is imported: the versions are those of the frameworks this process loaded."""
    return {"config": config.to_dict(), "options": dataclasses.asdict(options),
            **({"forms": model_forms(model)} if model is not None else {}), "command": sys.argv,
            "allocator": allocator.setting(), **machine_record()}


def read_run_record(out: Path) -> tuple[VAEConfig, TrainOptions]:
    """The config and options a run folder's run.json records; ValueError names the folder and what is wrong
    (a file given for the folder, no record, a field of the wrong type)."""
    if out.is_file():
        raise ValueError(f"--resume takes a run folder; {out} is a file" + (
            f" (the run folder it is in is {out.parent})" if (out.parent / RECORD).is_file() else ""))
    if not out.is_dir():
        raise ValueError(f"{out} is not a folder")
    run_folder.check_no_links(out)
    try:
        record = json.loads((out / RECORD).read_text())
        return VAEConfig.from_dict(record["config"], complete=True), TrainOptions(**record["options"])
    except FileNotFoundError:
        raise ValueError(f"{out} holds no run to resume (no run.json): start one there with twinvae train "
                         f"--out {out}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{out}/run.json is not a twinvae run record: {err}") from None


def record_resume(out: Path, options: TrainOptions, position: Position, model) -> None:
    """run.json takes the options in force (the ones a resume may change), the forms the model now runs,
    and a line for this resume."""
    record = json.loads((out / RECORD).read_text())
    record["forms"] = model_forms(model)
    changed = {k: getattr(options, k) for k in RESUMABLE if record["options"][k] != getattr(options, k)}
    record["options"].update({k: getattr(options, k) for k in RESUMABLE})
    record.setdefault("resumes", []).append({"date": machine_record()["date"], "command": sys.argv,
                                             "step": position.step, "changed": changed})
    record.pop("finished_step", None)
    record.pop("timings", None)  # the finished process's: this one writes its own at the end
    atomic_write_json(out / RECORD, record)


def write_run_pictures(twin: Twin, model, data: Dataset, out, records: list[dict], seed: int = 0,
                       denoise: float = 0.0) -> list[Path]:
    """What a training run leaves: loss curve, reconstructions, prior samples, interpolations, and for a
    denoising run test images before and after denoising."""
    written = [write_loss_curve(records, Path(out) / "loss.png"),
               write_reconstructions(twin, model, data, out),
               write_samples(twin, model, out, seed=seed),
               *write_interpolations(twin, model, data, out, min(INTERPOLATION_PAIRS, len(data.test_x) // 2),
                                     seed=seed),
               write_denoising(twin, model, data.test_x, out, denoise, seed, labels=data.test_y)
               if denoise else None]
    return [p for p in written if p is not None]


def _forms_text(forms: dict) -> str:
    """A run record's forms as results.md shows them: each form, then any compiler options as name="value"."""
    options = forms.get("compiler_options") or {}
    return ", ".join([*(f"{k} {v}" for k, v in forms.items() if k != "compiler_options"),
                      *([f"compiler options {' '.join(f'{k}={json.dumps(v)}' for k, v in options.items())}"]
                        if options else [])])


def results_markdown(run: dict, records: list[dict]) -> str:
    """A run's results.md: what ran, where, and each epoch's losses (nats per image; test: beta = 1, the
    'eval' stream's eps), the file the docs show through `python docs/refresh.py`."""
    argv = run["command"]
    command = " ".join(["twinvae", *argv[1:]] if argv and argv[0].endswith(("twinvae", "__main__.py")) else argv)
    options = run["options"]
    lines = [results_origin(command, run) + (f"; allocator: {run['allocator']}" if "allocator" in run else "")
             + ".", "",
             f"Backend {options['backend']}, dataset {options['dataset']}, seed {options['seed']}, batch "
             f"{options['batch_size']}, {options['dtype']}; config `{json.dumps(run['config'])}`"
             + (f"; forms {_forms_text(run['forms'])}" if "forms" in run else "") + ".", ""]
    denoising = any("denoising" in r for r in records)
    header = ["epoch", "train total", "train reconstruction", "train KL", "test total", "test reconstruction",
              "test KL", "seconds"] + (["PSNR noisy (dB)", "PSNR denoised (dB)"] if denoising else [])
    lines += [timings_text(run["timings"]), ""] if "timings" in run else []
    rows = [[str(r["epoch"]), *(f"{r[split][term]:.3f}" for split in ("train", "test")
                                for term in ("total", "reconstruction", "kl")), f"{r['seconds']:.1f}",
             *((f"{r['denoising'][k]:.2f}" for k in ("psnr_noisy", "psnr_denoised")) if denoising else ())]
            for r in records]
    lines.append(markdown_table(header, rows))
    return "\n".join(lines) + "\n"
