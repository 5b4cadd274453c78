"""`twinvae parity [--config FILE.json | --preset P] [--device cpu|cuda] [--dtype D] [--quick] ...`: the
parity table for the user's own model on their own device (default: every standard case); exits non-zero
on any failure. `--export [FORMAT ...]` checks the model's exported artifacts instead of the twins. TPU is
not a choice: the float64 torch reference cannot run there."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from twinvae.environment import cpu_name, versions
from twinvae.presets import PRESETS
from vae_core import export as export_spec
from vae_core.checkpoint import atomic_write_bytes, inputs_kept, refuse_input
from vae_core.checks import PRECISIONS
from vae_core.config import VAEConfig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twinvae parity", description=__doc__)
    model = p.add_mutually_exclusive_group()
    model.add_argument("--config", metavar="FILE.json", help="a VAEConfig JSON file: check this model")
    model.add_argument("--preset", choices=list(PRESETS), help="check a named model (at 1x28x28)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="cpu or cuda (default: $TWINVAE_DEVICE or cpu)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 for float32 matmuls/convs (GPU)")
    p.add_argument("--dtype", choices=list(PRECISIONS), action="append",
                   help="repeatable; default float64 and float32 (bfloat16: mixed precision)")
    p.add_argument("--quick", action="store_true",
                   help="each twin's default forms only, and only the seed model unless a model is given "
                        "(the whole 50-step trajectory; about a minute on 2 CPU cores)")
    p.add_argument("--steps", type=int, default=None, help="Adam steps per case (default 50)")
    p.add_argument("--case", action="append", help="substring of a standard case's name to run (repeatable)")
    p.add_argument("--batch-size", type=int, default=8, help="images per compared batch (default 8)")
    p.add_argument("--export", nargs="*", choices=list(export_spec.FORMATS), metavar="FORMAT",
                   help="check the exported artifacts instead (every part, in these formats: "
                        f"{', '.join(export_spec.FORMATS)}; default all), run in their runtimes, against the "
                        "float64 reference; dtypes float32 and bfloat16 (ONNX: float32 only)")
    p.add_argument("--summary", action="store_true",
                   help="print only the largest error of each quantity over all cases")
    p.add_argument("--markdown", metavar="FILE", help="also write the table printed to this file")
    p.add_argument("--brief", metavar="FILE",
                   help="also write the largest error of each group of quantities (the README's table) here")
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    _check_outputs(p, args)
    from twinvae.parity import harness  # imports torch and jax: after --help and bad options

    cases = _cases(p, args, harness)
    device = _device(p, args, harness)
    harness.set_tf32(args.tf32)
    steps = args.steps
    rows = []
    for case in cases:
        for dtype in _dtypes(p, args):
            start = time.perf_counter()
            if args.export is not None:
                rows += harness.compare_exports(case, dtype, device, formats=_formats(p, args))
            else:
                rows += harness.compare(case, dtype, device, steps=steps, forms="default" if args.quick else "all")
            print(f"  {case.name} {dtype}: {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
    table = harness.format_summary(rows) if args.summary else harness.format_table(rows)
    print(f"device: {device}, TF32 {'on' if args.tf32 else 'off'}")
    print(table)
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    origin = _origin(sys.argv[1:] if argv is None else argv, device)
    for path, text in ((args.markdown, table), (args.brief, harness.format_groups(rows))):
        if path:
            atomic_write_bytes(path, f"{origin}\n\n{text}\n".encode())
    return 1 if failed else 0


def _check_outputs(p: argparse.ArgumentParser, args) -> None:
    """--markdown and --brief: two files, neither of them the --config file read (before the minutes of work)."""
    outputs = [(flag, path) for flag, path in (("--markdown", args.markdown), ("--brief", args.brief)) if path]
    if len(outputs) == 2 and os.path.abspath(args.markdown) == os.path.abspath(args.brief):
        p.error(f"--markdown and --brief are one file, {args.markdown}: name two")
    with inputs_kept([args.config] if args.config else []):
        for flag, path in outputs:
            try:
                refuse_input(path)
            except ValueError as err:
                p.error(f"{flag} {err}")


def _dtypes(p: argparse.ArgumentParser, args) -> list[str]:
    if args.export is None:
        return args.dtype or ["float64", "float32"]
    if "float64" in (args.dtype or []):
        p.error(f"--export checks artifacts, which compute in {' or '.join(export_spec.DTYPES)}, not float64")
    return args.dtype or ["float32", "bfloat16"]


def _formats(p: argparse.ArgumentParser, args) -> list[str]:
    """The formats --export checks, each made and run by packages installed here."""
    formats = args.export or list(export_spec.FORMATS)
    try:
        for format in formats:
            export_spec.require(format, "export")
            export_spec.require(format, "run")
    except ModuleNotFoundError as err:
        p.error(str(err))
    return formats


def _origin(argv: list[str], device: str) -> str:
    """The line a results file starts with: the command, the machine, the versions, the date."""
    where = cpu_name() if device == "cpu" else device
    return (f"Command: `twinvae parity {' '.join(argv)}` ({time.strftime('%Y-%m-%d')}; {where}; "
            + ", ".join(f"{k} {v}" for k, v in versions().items()) + ").")


def _device(p: argparse.ArgumentParser, args, harness) -> str:
    """The device both twins run on: it must exist for torch and for JAX."""
    try:
        device = harness.device_from_env(args.device)
        if device == "cuda" and not harness.torch.cuda.is_available():
            raise ValueError("torch sees no CUDA device here")
        harness.jax.devices(device)
    except (ValueError, RuntimeError) as err:
        p.error(f"device {args.device or '$TWINVAE_DEVICE'}: {err}")
    return device


def _cases(p: argparse.ArgumentParser, args, harness) -> list:
    if args.batch_size < 1 or (args.steps is not None and args.steps < 0):
        p.error("--batch-size must be at least 1 and --steps at least 0")
    if args.config or args.preset:
        if args.case:
            p.error("--case picks standard cases; it does not go with --config or --preset")
        try:
            config = _read_config(args.config) if args.config else PRESETS[args.preset].config()
        except (OSError, ValueError) as err:
            p.error(str(err))
        return [harness.Case(args.config or f"preset {args.preset}", config, args.batch_size)]
    standard = harness.CASES[:1] if args.quick and not args.case else harness.CASES
    cases = [dataclasses.replace(c, batch_size=args.batch_size) for c in standard
             if not args.case or any(s in c.name for s in args.case)]
    if not cases:
        p.error(f"no case matches {args.case}; cases: {[c.name for c in harness.CASES]}")
    return cases


def _read_config(path: str) -> VAEConfig:
    with open(path) as f:
        text = f.read()
    try:
        return VAEConfig.from_dict(json.loads(text))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a VAEConfig JSON file ({err})") from None
