"""`python -m benchmarks` (or `twinvae bench`): jit-compiled Flax vs torch.compile vs eager PyTorch.

Each (backend, mode) runs in its own fresh, long-lived worker process with empty compilation caches;
the coordinator compiles them one after another, refuses any that fails the correctness gate, then
times them in alternating turns. Writes results.json, results.csv, results.md and throughput.png."""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks.points import KINDS, MODES, Point, add_conv_arguments, ints
from vae_core.checks import PRECISIONS
from vae_core.config import VAEConfig

QUICK = {"batch_sizes": "128", "modes": "eager,compile-default,jit,nnx-jit", "repeats": 5,
         "repeat_seconds": 0.05, "peak_sizes": "512,1024", "peak_seconds": 0.1}


def _names(choices):
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"{bad or text!r}: choose from {', '.join(choices)}")
        return values
    return parse


def parser() -> argparse.ArgumentParser:
    all_modes = [m for modes in MODES.values() for m in modes]
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run, about a minute on 2 CPU cores: {QUICK} unless given")
    p.add_argument("--backends", type=_names(list(MODES)), default=list(MODES), help="torch,jax (default both)")
    p.add_argument("--modes", type=_names(all_modes), default=None,
                   help=f"from {', '.join(all_modes)} (default: all; modes a device lacks are listed as "
                        "unavailable)")
    p.add_argument("--kinds", type=_names(KINDS), default=list(KINDS), help="train,infer (default both)")
    p.add_argument("--arch", choices=["conv", "mlp"], default="conv")
    p.add_argument("--image", default="1x28x28", help="CxHxW (default 1x28x28)")
    add_conv_arguments(p)
    p.add_argument("--widths", type=ints, default=[400], help="MLP widths (default 400)")
    p.add_argument("--latent", type=int, default=20)
    p.add_argument("--batch-sizes", type=ints, default=None, help="default 32,128,512")
    p.add_argument("--dtype", choices=list(PRECISIONS), default="float32",
                   help="float32 (default), float64, or bfloat16: mixed precision, float32 parameters "
                        "(torch autocast; Flax dtype=bfloat16, param_dtype=float32); rates then divide by "
                        "the bf16 matmul peak measured in the same run")
    p.add_argument("--device", choices=["cpu", "cuda", "tpu"], default="cpu")
    p.add_argument("--aot", type=lambda t: [v.strip() for v in t.split(",") if v.strip()], default=None,
                   metavar="TOPOLOGIES", help="with --device tpu: compile the JAX twin's steps for one chip of "
                   "each TPU topology (e.g. v5e:2x2,v4:2x2x1,v6e:2x2,v5p:2x2x1) on this machine, without a TPU, "
                   "and report XLA's analyses and estimated times (benchmarks/aot.py; needs the tpu-aot extra)")
    p.add_argument("--gpu-target-config", metavar="FILE",
                   help="with --device cuda --aot GPU (e.g. H100): the XLA GpuTargetConfigProto (text format) "
                        "of that GPU, to compile for it without one (needs jax[cuda12])")
    p.add_argument("--aot-grid", choices=["full", "smoke"], default="full",
                   help="full: the documented grid (about 45 compiles, 40 s-2 min each on 2 cores); smoke: a "
                        "tiny model, 4 compiles")
    p.add_argument("--tf32", action="store_true", help="allow TF32 (GPU); rates then divide by the TF32 peak")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads (default: cores)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per mode (default 20)")
    p.add_argument("--repeat-seconds", type=float, default=None,
                   help="steps per repeat are chosen so a repeat lasts about this long (default 0.3)")
    p.add_argument("--peak-sizes", type=ints, default=None, help="matmul sizes for the roofline "
                                                                 "(default 1024,2048,4096)")
    p.add_argument("--peak-seconds", type=float, default=None, help="time per matmul measurement (default 0.3)")
    p.add_argument("--bandwidth-mib", type=float, default=None,
                   help="MiB per array of the bandwidth kernel (default: 8x the last-level cache, within the "
                        "memory available); a smaller one measures the cache, not the memory: for smoke tests")
    p.add_argument("--roofline-only", action="store_true",
                   help="measure only the matmul peaks and the memory bandwidth (no model steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench", help="output folder (default runs/bench)")
    p.add_argument("--no-progress", action="store_true")
    return p


def options_from(args):
    from benchmarks.coordinator import Options

    quick = QUICK if args.quick else {}
    try:
        c, h, w = (int(v) for v in args.image.lower().split("x"))
        config = VAEConfig(image_shape=(c, h, w), latent_dim=args.latent, arch=args.arch,
                           conv_channels=tuple(args.channels), mlp_widths=tuple(args.widths),
                           res_blocks=args.res_blocks)
    except ValueError as err:
        raise SystemExit(f"python -m benchmarks: error: bad model ({err})") from None
    batch_sizes = args.batch_sizes or ints(quick.get("batch_sizes", "32,128,512"))
    modes = args.modes or (_names(sum(MODES.values(), ()))(quick["modes"]) if quick
                           else [m for modes in MODES.values() for m in modes])
    points = [] if args.roofline_only else [Point(config, b, args.dtype, kind) for kind in args.kinds
                                            for b in batch_sizes]
    return Options(backends=args.backends, modes=modes, points=points, device=args.device, threads=args.threads,
                   tf32=args.tf32, repeats=args.repeats or quick.get("repeats", 20),
                   repeat_seconds=args.repeat_seconds or quick.get("repeat_seconds", 0.3),
                   peak_sizes=args.peak_sizes or ints(quick.get("peak_sizes", "1024,2048,4096")),
                   peak_seconds=args.peak_seconds or quick.get("peak_seconds", 0.3),
                   bandwidth_mib=args.bandwidth_mib, seed=args.seed)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.aot:
        if (args.device, bool(args.gpu_target_config)) not in (("tpu", False), ("cuda", True)):
            raise SystemExit("python -m benchmarks: error: --aot compiles for TPU topologies (--device tpu) or "
                             "for a GPU (--device cuda with --gpu-target-config FILE)")
        if args.gpu_target_config and not os.path.isfile(args.gpu_target_config):
            raise SystemExit(f"python -m benchmarks: error: --gpu-target-config {args.gpu_target_config}: no such "
                             "file (an XLA GpuTargetConfigProto in text format, docs/devices/gpu.md)")
        if args.device == "tpu":
            os.environ.setdefault("JAX_PLATFORMS", "cpu")  # no TPU here: libtpu gives compile-only devices
        from benchmarks import aot, chips

        try:
            for target in args.aot:  # an unknown chip is refused before any compile
                chips.chip_for(target)
        except ValueError as err:
            raise SystemExit(f"python -m benchmarks: error: --aot: {err}") from None

        out = args.out if args.out != "runs/bench" else f"runs/{args.device}-aot"
        return aot.main(args.aot, args.aot_grid, out, argv, args.gpu_target_config)
    if args.bandwidth_mib is not None and not args.bandwidth_mib > 0:
        raise SystemExit(f"python -m benchmarks: error: --bandwidth-mib must be above 0, got {args.bandwidth_mib}")
    options = options_from(args)

    from benchmarks import coordinator, report
    from twinvae.progress import Progress

    workers = sum(1 for b in options.backends for m in options.modes if m in MODES[b])
    progress = Progress(len(options.points) * (workers + options.repeats), enabled=not args.no_progress)
    results = coordinator.run(options, progress)
    progress.close()
    results["meta"] = report.run_meta(argv, results, options)
    table = report.rows(results, options.tf32)
    written = report.write_all(args.out, results, table, options.tf32)  # prints results.md
    print("wrote " + ", ".join(written))
    failed = [r for r in table if r["status"] in ("error", "refused")]
    for r in failed:
        print(f"{r['backend']} {r['mode']} {r['kind']} b={r['batch']}: {r['status']}: {r['reason']}",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
