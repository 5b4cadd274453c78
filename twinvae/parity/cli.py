"""`twinvae parity [--config FILE.json | --preset P] [--device cpu|cuda] [--dtype D] [--quick] ...`: the
parity table for the user's own model on their own device (default: every standard case); exits non-zero
on any failure. `--export [FORMAT ...]` checks the model's exported artifacts instead of the twins. TPU is
not a choice: the float64 torch reference cannot run there."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from twinvae.parity.cases import CASES, Case
from twinvae.parity.report import format_groups, format_summary, format_table
from twinvae.presets import PRESETS
from twinvae.results import machine_record, results_origin, write_results
from vae_core import export as export_spec
from vae_core.checkpoint import inputs_kept, refuse_input
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
    from twinvae.parity import comparisons, twins  # import torch and jax: after --help and bad options

    cases = chosen_cases(p, args)
    device = _device(p, args, twins)
    twins.set_tf32(args.tf32)
    steps = args.steps
    rows = []
    for case in cases:
        for dtype in _dtypes(p, args):
            start = time.perf_counter()
            if args.export is not None:
                rows += comparisons.compare_exports(case, dtype, device, formats=_formats(p, args))
            else:
                rows += comparisons.compare(case, dtype, device, steps=steps,
                                            forms="default" if args.quick else "all")
            print(f"  {case.name} {dtype}: {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
    table = format_summary(rows) if args.summary else format_table(rows)
    print(f"device: {device}, TF32 {'on' if args.tf32 else 'off'}")
    print(table)
    failed = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    origin = _origin(sys.argv[1:] if argv is None else argv, device)
    for path, text in ((args.markdown, table), (args.brief, format_groups(rows))):
        if path:
            write_results(path, f"{origin}\n\n{text}\n")
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
    """The line a results file starts with (twinvae.results), naming the device compared on where it is not
    the CPU."""
    machine = machine_record()
    return results_origin(f"twinvae parity {' '.join(argv)}",
                          machine if device == "cpu" else {**machine, "cpu": f"{device} ({machine['cpu']})"}) + "."


def _device(p: argparse.ArgumentParser, args, twins) -> str:
    """The device both twins run on: it must exist for torch and for JAX."""
    try:
        device = twins.device_from_env(args.device)
        twins.check_device(device)
    except (ValueError, RuntimeError) as err:
        p.error(f"device {args.device or '$TWINVAE_DEVICE'}: {err}")
    return device


def chosen_cases(p: argparse.ArgumentParser, args) -> list[Case]:
    """The cases the options pick: the model of --config or --preset, or the standard cases (--case, --quick),
    at --batch-size."""
    if args.batch_size < 1 or (args.steps is not None and args.steps < 0):
        p.error("--batch-size must be at least 1 and --steps at least 0")
    if args.config or args.preset:
        if args.case:
            p.error("--case picks standard cases; it does not go with --config or --preset")
        try:
            config = (VAEConfig.from_json_file(args.config, "--config") if args.config
                      else PRESETS[args.preset].config())
        except ValueError as err:
            p.error(str(err))
        return [Case(args.config or f"preset {args.preset}", config, args.batch_size)]
    standard = CASES[:1] if args.quick and not args.case else CASES
    cases = [dataclasses.replace(c, batch_size=args.batch_size) for c in standard
             if not args.case or any(s in c.name for s in args.case)]
    if not cases:
        p.error(f"no case matches {args.case}; cases: {[c.name for c in CASES]}")
    return cases
