"""The `twinvae` command: one small parser builder and one runner per subcommand. It parses and prints; what
a command means is the trainer's (twinvae.trainer.options) or twinvae.checkpoint_commands'. Framework-free:
a subcommand imports torch or jax only when it runs. `parity` and `bench` own their options and get the
rest of the command line whole."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from twinvae import __version__, allocator, checkpoint_commands
from twinvae.checkpoint_commands import parameter_default
from twinvae.data import BINARIZE
from twinvae.datasets import DATASETS
from twinvae.demo import run_demo
from twinvae.presets import PRESETS
from twinvae.trainer import (
    TrainingInterrupted,
    TrainOptions,
    config_from_flags,
    options_from_flags,
    refuse_changes_on_resume,
    resume,
    train,
)
from twinvae.trainer.options import DEFAULT_OUT, DEFAULT_PRESET, LR_SCHEDULES, resumable_flags
from twinvae.twin import BACKENDS
from vae_core import checks
from vae_core.checkpoint import inputs_kept
from vae_core.config import ARCHS, HIERARCHIES, LIKELIHOODS, OBJECTIVES, PRIORS, VAEConfig

HANDED_OVER = {"bench": "the benchmark harness: `twinvae bench --help` (same as python -m benchmarks)",
               "parity": "check that the twins agree on your model and device: `twinvae parity --help`"}


def main(argv=None) -> int:
    allocator.keep_freed_memory()  # before a framework starts its threads
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from benchmarks.__main__ import main as bench

        return bench(argv[1:])
    if argv[:1] == ["parity"]:
        from twinvae.parity.cli import main as parity

        return parity(argv[1:])
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line, for the results files that name it
    try:
        with inputs_kept(_command_inputs(args)):  # no output of the command replaces one of its inputs
            return args.run(args)
    # bad input, missing data or package, divergence: a message, no traceback
    except (ValueError, OSError, RuntimeError, ModuleNotFoundError) as err:
        print(f"twinvae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before training's own handler is in place (imports, data, compile)
        print(f"twinvae {args.command}: interrupted (Ctrl-C) {_interrupted_where(args)}", file=sys.stderr)
        return 130


def _command_inputs(args) -> list[str]:
    """The files a command reads: its checkpoint, --config, the images it denoises, and the data files under
    --data-dir (a resumed run's, as its record names it): those a dataset reads (twinvae.datasets.data_files),
    less any under the folder the command writes, which are its outputs."""
    from pathlib import Path

    from twinvae.datasets import data_files
    from twinvae.denoising import image_files

    inputs = [getattr(args, name, None) for name in ("checkpoint", "config")]
    if getattr(args, "paths", None):
        with contextlib.suppress(ValueError):  # the command names what is missing
            inputs += image_files(args.paths)
    data_dir = getattr(args, "data_dir", None) or _resumed_data_dir(args)
    writes = getattr(args, "resume", None) or getattr(args, "out", None) or (
        Path(args.checkpoint).parent if getattr(args, "checkpoint", None) and args.command != "export" else None)
    if data_dir and Path(data_dir).is_dir():
        written = Path(writes).resolve() if writes else None
        inputs += [p for p in data_files(data_dir) if written is None or not p.resolve().is_relative_to(written)]
    return [str(path) for path in inputs if path]


def _resumed_data_dir(args) -> str | None:
    if not getattr(args, "resume", None):
        return None
    try:
        from pathlib import Path

        return json.loads((Path(args.resume) / "run.json").read_text())["options"]["data_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # resume names what is wrong with the record


def _interrupted_where(args) -> str:
    """What an interruption outside training's own handler (start-up, the end-of-run files) left, and how to
    go on."""
    if args.command != "train":
        return "before it finished; nothing it would write was left half-written"
    from pathlib import Path

    out = args.resume or getattr(args, "out", None)
    if out and (Path(out) / "run.json").is_file():
        return f"outside a training step; the run folder is whole: continue with twinvae train --resume {out}"
    return "before training started; nothing was saved: run the command again"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinvae", description="One VAE, written in PyTorch and JAX/Flax.")
    parser.add_argument("--version", action="version", version=f"twinvae {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _train_parser(commands)
    checkpoint_commands.add_parsers(commands)
    _demo_parser(commands)
    for name, help_text in HANDED_OVER.items():
        commands.add_parser(name, add_help=False, help=help_text)
    return parser


# --- train: each default in the help is TrainOptions' (or VAEConfig's, or a preset's) ----------------------------

def _train_parser(commands) -> None:
    p = commands.add_parser("train", help="train a VAE with either backend; writes a run folder")
    p.set_defaults(run=_train)
    p.add_argument("--backend", choices=BACKENDS,
                   help=f"default {TrainOptions.backend} (or, with --resume, the run's)")
    p.add_argument("--resume", metavar="DIR",
                   help=f"continue the run in DIR from its last saved state; only {resumable_flags()} may change "
                        "(any other option given must match the run's)")
    p.add_argument("--overwrite", action="store_true",
                   help="train into an --out that holds a run: delete that run's files first")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="also save model and training state every this many steps (default "
                        f"{TrainOptions.checkpoint_every}: at epoch ends)")
    _data_flags(p)
    _model_flags(p)
    _optimisation_flags(p)
    p.add_argument("--dtype", choices=list(checks.PRECISIONS),
                   help="float32, float64, or bfloat16: mixed precision (float32 parameters and optimizer, layers "
                        f"computing in bf16); default {TrainOptions.dtype}")
    p.add_argument("--seed", type=int, help=f"default {TrainOptions.seed}")
    default_out = DEFAULT_OUT.format(dataset="DATASET", backend="BACKEND").replace("%", "%%")  # argparse's %
    p.add_argument("--out", help=f"run folder (default: {default_out}, at the time it starts)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile the step (default: jax yes, torch no: no faster on a CPU here)")
    _parallel_flags(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a terminal)")


def _data_flags(p) -> None:
    p.add_argument("--dataset", choices=DATASETS, help=f"default {TrainOptions.dataset}")
    p.add_argument("--data-dir", help="where the dataset's files are (or go), or the image folder")
    p.add_argument("--image-size", type=int, help="folder dataset: resize images to this square size")
    p.add_argument("--channels", type=int, choices=[1, 3],
                   help=f"folder dataset: grey (1) or RGB (3); default {TrainOptions.channels}")
    p.add_argument("--binarize", choices=BINARIZE,
                   help="binarised data for a Bernoulli likelihood: dynamic (each batch drawn x ~ "
                        "Bernoulli(pixel), seeded) or threshold (pixel > 1/2); the test set binarised once")
    p.add_argument("--denoise", type=float, metavar="SIGMA",
                   help="train a denoising VAE: inputs get Gaussian noise of this sigma, clipped to [0, 1]")


def _model_flags(p) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--config", help="a VAEConfig JSON file (image_shape is the dataset's)")
    group.add_argument("--preset", choices=list(PRESETS),
                       help="seed (the seed's conv VAE), mlp (pytorch/examples), resnet (stronger); default "
                            f"{DEFAULT_PRESET}")
    p.add_argument("--arch", choices=ARCHS)
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--likelihood", choices=LIKELIHOODS,
                   help="bernoulli (the seed's BCE), gaussian (the seed's squared error), continuous_bernoulli "
                        "(the normalised density on [0, 1]), discretized_logistic (a mass on the data's grey "
                        f"levels); default {VAEConfig.likelihood}")
    p.add_argument("--beta", type=float)
    p.add_argument("--num-classes", type=int, metavar="N",
                   help="a class-conditional VAE of the dataset's N classes (default "
                        f"{VAEConfig.num_classes}: unconditional)")
    p.add_argument("--objective", choices=OBJECTIVES,
                   help="elbo, or iwae: the importance-weighted bound of --train-samples samples per image "
                        f"(Burda et al. 2015; beta 1, no KL warm-up, no free bits); default {VAEConfig.objective}")
    p.add_argument("--train-samples", type=int, metavar="K",
                   help="iwae: importance samples of z per image in training (default "
                        f"{VAEConfig.train_samples}: the ELBO)")
    p.add_argument("--prior", choices=PRIORS,
                   help="p(z): standard, N(0, I), or vamp, the VampPrior of --pseudo-inputs learned images "
                        f"(Tomczak & Welling 2018; no free bits); default {VAEConfig.prior}")
    p.add_argument("--pseudo-inputs", type=int, metavar="P",
                   help=f"vamp: the number of pseudo-inputs (default {VAEConfig.pseudo_inputs})")
    p.add_argument("--hierarchy", type=int, choices=HIERARCHIES,
                   help="stochastic layers: 1, or 2: z2 above z1, p(z2) p(z1|z2) p(x|z1,z2) (Tomczak & Welling's "
                        f"HVAE; --prior is z2's, --latent-dim each level's); default {VAEConfig.hierarchy}")
    p.add_argument("--prior-width", type=int, metavar="W",
                   help=f"hierarchy 2: the hidden width of p(z1|z2) (default {VAEConfig.prior_width})")


def _optimisation_flags(p) -> None:
    p.add_argument("--epochs", type=int, help=f"default {TrainOptions.epochs} (or, with --resume, the run's)")
    p.add_argument("--batch-size", type=int, help=f"default {TrainOptions.batch_size}")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {TrainOptions.lr:g}, or the preset's)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="constant, or a cosine decay to 0 at the end (default "
                        f"{TrainOptions.lr_schedule}, or the preset's)")
    p.add_argument("--lr-warmup", type=int, metavar="STEPS",
                   help="raise the learning rate linearly over this many steps (default "
                        f"{TrainOptions.lr_warmup}, or the preset's)")
    p.add_argument("--kl-warmup", type=int, metavar="STEPS",
                   help=f"raise beta linearly over this many steps (default {TrainOptions.kl_warmup}: off)")
    p.add_argument("--free-bits", type=float, metavar="NATS",
                   help="free bits per latent dimension in the training objective (default "
                        f"{TrainOptions.free_bits:g}: off)")


def _parallel_flags(p) -> None:
    p.add_argument("--devices", type=_devices, default=None, metavar="N|all",
                   help="jax: data-parallel over N devices of a mesh in this process, or all it sees "
                        f"(default {TrainOptions.devices}; the batch divides among them)")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="torch: data-parallel over N DistributedDataParallel processes on this machine "
                        f"(gloo on CPU, NCCL on GPU; default {TrainOptions.nproc}); torchrun --nproc-per-node N "
                        "-m twinvae train --backend torch ... does the same, and spans machines")


def _devices(text: str) -> int:
    if text == "all":
        return 0
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of devices >= 1 or 'all', got {text!r}")
    return value


def _train(args) -> int:
    flags = vars(args)  # each flag by its option's name, None where it was left out
    try:
        if args.resume:
            out = args.resume
            refuse_changes_on_resume(args.resume, flags)
            record = resume(args.resume, args.backend, args.epochs, progress=not args.no_progress,
                            devices=args.devices, nproc=args.nproc)
        else:
            config, options = config_from_flags(flags), options_from_flags(flags)
            out = options.out
            record = train(config, options, progress=not args.no_progress, overwrite=args.overwrite)
    except TrainingInterrupted as err:  # Ctrl-C or SIGTERM: the state was saved; say how to go on
        print(f"twinvae train: {err}", file=sys.stderr)
        return err.exit_code
    if record is not None:  # None: a worker of a multi-process run other than rank 0, which reports
        print(f"test negative ELBO {record['test']['total']:.3f} nats/image after {record['epoch']} epochs; "
              f"run folder {out}")
    return 0


# --- demo ------------------------------------------------------------------------------------------------------

def _demo_parser(commands) -> None:
    p = commands.add_parser("demo", help="train in torch, load in JAX, show both compute the same")
    p.set_defaults(run=_demo)
    p.add_argument("--out", default=parameter_default(run_demo, "out"),
                   help="folder for the checkpoint (default %(default)s)")
    p.add_argument("--seed", type=int, default=parameter_default(run_demo, "seed"))
    p.add_argument("--steps", type=int, default=parameter_default(run_demo, "steps"),
                   help="Adam steps in torch, then in both twins (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=parameter_default(run_demo, "batch_size"))
    p.add_argument("--dtype", choices=["float32", "float64"], default=parameter_default(run_demo, "dtype"))


def _demo(args) -> int:
    return run_demo(args.out, args.seed, args.steps, args.batch_size, args.dtype)


if __name__ == "__main__":
    sys.exit(main())
