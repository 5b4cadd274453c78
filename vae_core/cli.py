"""The `twinvae` command. Framework-free: a subcommand imports torch or jax only when it runs."""

from __future__ import annotations

import argparse
import json
import sys

from vae_core import __version__


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="twinvae", description="One VAE, written in PyTorch and JAX/Flax.")
    parser.add_argument("--version", action="version", version=f"twinvae {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train in torch, load in JAX, show both compute the same")
    demo.add_argument("--out", default="runs/demo", help="folder for the checkpoint (default runs/demo)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steps", type=int, default=20, help="Adam steps in torch, then in both twins")
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float32")

    inspect = commands.add_parser("inspect", help="print a checkpoint's config, metadata and weights")
    inspect.add_argument("checkpoint")

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from vae_core.demo import run_demo

            return run_demo(args.out, args.seed, args.steps, args.batch_size, args.dtype)
        return _inspect(args.checkpoint)
    except (ValueError, OSError) as err:  # bad input: a clear message, no traceback
        print(f"twinvae {args.command}: error: {err}", file=sys.stderr)
        return 2


def _inspect(path: str) -> int:
    from vae_core.weights import canonical_shapes, num_parameters, read_checkpoint

    weights, config, metadata = read_checkpoint(path)
    print(f"config: {json.dumps(config.to_dict())}")
    print(f"metadata: {json.dumps(metadata)}")
    print(f"{num_parameters(config)} parameters, {next(iter(weights.values())).dtype}")
    for key, shape in canonical_shapes(config).items():
        print(f"  {key:32s} {shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
