"""The `twinvae` command: one small parser builder and one runner per subcommand. Framework-free: a
subcommand imports torch or jax only when it runs. `parity` and `bench` own their options and get the
rest of the command line whole."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import sys
import time

from twinvae import __version__, allocator, apps
from twinvae.data import BINARIZE, DATASET_SHAPES, DATASETS
from twinvae.demo import run_demo
from twinvae.evaluation import evaluate_checkpoint
from twinvae.presets import PRESETS
from twinvae.trainer import TrainOptions
from twinvae.twin import BACKENDS, DEFAULT_BACKEND, check_conditional
from vae_core import checks
from vae_core import export as export_spec
from vae_core.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    inputs_kept,
    read_checkpoint,
    refuse_input,
    refuse_symlink,
)
from vae_core.config import ARCHS, LIKELIHOODS

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
    --data-dir (a resumed run's, as its record names it): those a dataset reads (twinvae.data.data_files),
    less any under the folder the command writes, which are its outputs."""
    from pathlib import Path

    from twinvae.data import data_files
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


def _default(function, parameter: str):
    """A parameter's default, read off the function that takes it, so the CLI never states it again."""
    return inspect.signature(function).parameters[parameter].default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinvae", description="One VAE, written in PyTorch and JAX/Flax.")
    parser.add_argument("--version", action="version", version=f"twinvae {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for build in (_train_parser, _evaluate_parser, _sample_parser, _interpolate_parser, _arithmetic_parser,
                  _denoise_parser, _export_parser, _inspect_parser, _demo_parser):
        build(commands)
    for name, help_text in HANDED_OVER.items():
        commands.add_parser(name, add_help=False, help=help_text)
    return parser


# --- train ------------------------------------------------------------------------------------------------

def _train_parser(commands) -> None:
    p = commands.add_parser("train", help="train a VAE with either backend; writes a run folder")
    p.set_defaults(run=_train)
    p.add_argument("--backend", choices=BACKENDS, help="default jax (or, with --resume, the run's)")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR from its last saved state; only --epochs, --backend, --devices "
                        "and --nproc may change (any other option given must match the run's)")
    p.add_argument("--overwrite", action="store_true",
                   help="train into an --out that holds a run: delete that run's files first")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="also save model and training state every this many steps (default 0: at epoch ends)")
    p.add_argument("--dataset", choices=DATASETS, help=f"default {TrainOptions.dataset}")
    p.add_argument("--data-dir", help="where the dataset's files are (or go), or the image folder")
    p.add_argument("--image-size", type=int, help="folder dataset: resize images to this square size")
    p.add_argument("--channels", type=int, choices=[1, 3], help="folder dataset: grey (1, default) or RGB (3)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--config", help="a VAEConfig JSON file (image_shape is the dataset's)")
    group.add_argument("--preset", choices=list(PRESETS),
                       help="seed (the seed's conv VAE, default), mlp (pytorch/examples), resnet (stronger)")
    p.add_argument("--arch", choices=ARCHS)
    p.add_argument("--latent-dim", type=int)
    p.add_argument("--likelihood", choices=LIKELIHOODS,
                   help="bernoulli (the seed's BCE, default), gaussian (the seed's squared error), "
                        "continuous_bernoulli (the normalised density on [0, 1]), discretized_logistic "
                        "(a mass on the data's grey levels)")
    p.add_argument("--beta", type=float)
    p.add_argument("--num-classes", type=int, metavar="N",
                   help="a class-conditional VAE of the dataset's N classes (default 0: unconditional)")
    p.add_argument("--epochs", type=int, help="default 10 (or, with --resume, the run's)")
    p.add_argument("--batch-size", type=int, help="default 128")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-3, or the preset's)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"],
                   help="constant, or a cosine decay to 0 at the end (default constant, or the preset's)")
    p.add_argument("--lr-warmup", type=int, metavar="STEPS",
                   help="raise the learning rate linearly over this many steps (default 0, or the preset's)")
    p.add_argument("--kl-warmup", type=int, metavar="STEPS",
                   help="raise beta linearly over this many steps (default 0: off)")
    p.add_argument("--free-bits", type=float, metavar="NATS",
                   help="free bits per latent dimension in the training objective (default 0: off)")
    p.add_argument("--binarize", choices=BINARIZE,
                   help="binarised data for a Bernoulli likelihood: dynamic (each batch drawn x ~ "
                        "Bernoulli(pixel), seeded) or threshold (pixel > 1/2); the test set binarised once")
    p.add_argument("--denoise", type=float, metavar="SIGMA",
                   help="train a denoising VAE: inputs get Gaussian noise of this sigma, clipped to [0, 1]")
    p.add_argument("--dtype", choices=list(checks.PRECISIONS),
                   help="float32 (default), float64, or bfloat16: mixed precision (float32 parameters and "
                        "optimizer, layers computing in bf16)")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run folder (default: runs/DATASET-BACKEND-TIMESTAMP)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile the step (default: jax yes, torch no: no faster on a CPU here)")
    p.add_argument("--devices", type=_devices, default=None, metavar="N|all",
                   help="jax: data-parallel over N devices of a mesh in this process, or all it sees "
                        "(default 1; the batch divides among them)")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="torch: data-parallel over N DistributedDataParallel processes on this machine "
                        "(gloo on CPU, NCCL on GPU; default 1); torchrun --nproc-per-node N -m twinvae "
                        "train --backend torch ... does the same, and spans machines")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a terminal)")


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
    from twinvae.trainer import TrainingInterrupted, resume, train

    try:
        if args.resume:
            out = args.resume
            _refuse_changes_on_resume(args)
            record = resume(args.resume, args.backend, args.epochs, progress=not args.no_progress,
                            devices=args.devices, nproc=args.nproc)
        else:
            config, options = _train_config(args), _train_options(args)
            out = options.out
            record = train(config, options, progress=not args.no_progress, overwrite=args.overwrite)
    except TrainingInterrupted as err:  # Ctrl-C or SIGTERM: the state was saved; say how to go on
        print(f"twinvae train: {err}", file=sys.stderr)
        return err.exit_code
    if record is not None:  # None: a worker of a multi-process run other than rank 0, which reports
        print(f"test negative ELBO {record['test']['total']:.3f} nats/image after {record['epoch']} epochs; "
              f"run folder {out}")
    return 0


def _given_options(args) -> dict:
    """The TrainOptions fields the command line gave (flags left out are None)."""
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(TrainOptions)
            if getattr(args, field.name, None) is not None}


def _train_options(args):
    """TrainOptions from the flags given, over the preset's tuned options, over TrainOptions' defaults."""
    backend = args.backend or TrainOptions.backend
    tuned = {} if args.config else PRESETS[args.preset or "seed"].training
    dataset = args.dataset or TrainOptions.dataset
    out = args.out or time.strftime(f"runs/{dataset}-{backend}-%Y%m%d-%H%M%S")
    return TrainOptions(**{**tuned, **_given_options(args), "backend": backend, "out": out})


CONFIG_FLAGS = ("arch", "latent_dim", "likelihood", "beta", "num_classes")  # VAEConfig fields the flags override


def _train_config(args, base=None):
    """The model: a preset or a config file at the dataset's image shape (or `base`, a resumed run's,
    where neither is given), with the flags' overrides."""
    dataset = args.dataset or TrainOptions.dataset
    if dataset == "folder":
        if args.image_size is None:
            raise ValueError("the folder dataset needs --image-size (the square size its images are read at)")
        if args.image_size < 1:
            raise ValueError(f"--image-size must be a positive number of pixels, got {args.image_size}")
        shape = (args.channels or TrainOptions.channels, args.image_size, args.image_size)
    else:
        for flag, value in (("--image-size", args.image_size), ("--channels", args.channels)):
            if value is not None:
                raise ValueError(f"{flag} applies to the folder dataset only; {dataset} images are "
                                 f"{DATASET_SHAPES[dataset]} (C, H, W)")
        shape = DATASET_SHAPES[dataset]
    if args.config:
        config = _read_config_file(args.config, shape, dataset)
    elif args.preset or base is None:
        config = PRESETS[args.preset or "seed"].config(shape)
    else:
        config = base
    overrides = {k: getattr(args, k) for k in CONFIG_FLAGS if getattr(args, k) is not None}
    return dataclasses.replace(config, **overrides)


def _read_config_file(path: str, shape: tuple, dataset: str):
    from vae_core.config import VAEConfig

    try:
        with open(path) as f:
            data = json.loads(f.read())
    except OSError as err:
        raise ValueError(f"cannot read --config {path}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--config {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a JSON object of VAEConfig fields, not a "
                         f"{type(data).__name__}")
    if tuple(data.get("image_shape", shape)) != shape:
        raise ValueError(f"--config {path}: image_shape {data['image_shape']} does not match the {dataset} "
                         f"images {shape}")
    try:
        return VAEConfig.from_dict({**data, "image_shape": shape})
    except (TypeError, ValueError) as err:
        raise ValueError(f"--config {path}: {err}") from None


def _refuse_changes_on_resume(args) -> None:
    """With --resume, every option other than those a resume may change must match the run's: naming
    both values, instead of silently keeping the stored ones."""
    from pathlib import Path

    from twinvae.trainer import RESUMABLE, read_run_record

    if args.overwrite:
        raise ValueError("--overwrite starts a run again and --resume continues one: give one of them")
    if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise ValueError(f"--out {args.out} with --resume {args.resume}: a resumed run stays in its folder")
    config, stored = read_run_record(Path(args.resume))
    differences = [f"--{name.replace('_', '-')} {value!r} (the run has {getattr(stored, name)!r})"
                   for name, value in _given_options(args).items()
                   if name not in (*RESUMABLE, "out") and value != getattr(stored, name)]
    if args.config or args.preset or any(getattr(args, k) is not None for k in CONFIG_FLAGS):
        as_stored = {"dataset": stored.dataset, "image_size": args.image_size or stored.image_size,
                     "channels": args.channels or stored.channels if stored.dataset == "folder" else args.channels}
        given = _train_config(argparse.Namespace(**{**vars(args), **as_stored}), base=config)
        differences += [f"the model's {name} {getattr(given, name)!r} (the run has {getattr(config, name)!r})"
                        for name in config.to_dict() if getattr(given, name) != getattr(config, name)]
    if differences:
        raise ValueError(f"--resume {args.resume} continues the run as it was; only --epochs, --backend, "
                         f"--devices and --nproc may change. Given otherwise: {'; '.join(differences)}. Drop "
                         "them, or start a new run with another --out")


# --- evaluate, the applications, inspect, demo ----------------------------------------------------------------

def _evaluate_parser(commands) -> None:
    p = commands.add_parser("evaluate", help="negative ELBO, IWAE -log p(x), bits/dim, active units")
    p.set_defaults(run=_evaluate)
    p.add_argument("checkpoint")
    _dataset_options(p)
    p.add_argument("--k", type=int, default=_default(evaluate_checkpoint, "k"),
                   help="importance samples per image (default %(default)s)")
    p.add_argument("--seed", type=int, default=_default(evaluate_checkpoint, "seed"))
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND, help="default %(default)s")
    p.add_argument("--noise", type=float, metavar="SIGMA",
                   help="also report denoising PSNR at this noise level (default: the sigma a denoising model "
                        "was trained at)")
    p.add_argument("--binarize", choices=BINARIZE,
                   help="on the test set binarised so (default: as the model was trained, its metadata's)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--markdown", metavar="FILE", help="also write them as a results table (for the docs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a terminal)")


def _evaluate(args) -> int:
    from twinvae.evaluation import format_report, report_markdown

    read_checkpoint(args.checkpoint)  # a bad file fails here, before a framework is imported
    if args.json and args.markdown and _same_file(args.json, args.markdown):
        raise ValueError(f"--json {args.json} and --markdown {args.markdown} are one file: name two")
    for path in (args.json, args.markdown):
        if path:
            _check_writable(path)  # before the evaluation's minutes, not after
    result = evaluate_checkpoint(args.checkpoint, backend=args.backend, dataset=args.dataset,
                                 data_dir=args.data_dir, k=args.k, seed=args.seed, noise=args.noise,
                                 binarize=args.binarize, progress=not args.no_progress)
    print(format_report(result))
    if args.json:
        atomic_write_json(args.json, result)
    if args.markdown:
        atomic_write_bytes(args.markdown, report_markdown(result, "twinvae " + " ".join(args.argv)).encode())
    return 0


def _check_writable(path: str) -> None:
    """That `path` can be written (a file in an existing, writable folder), without writing it."""
    import tempfile
    from pathlib import Path

    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder")
    refuse_symlink(target)
    refuse_input(target)  # the checkpoint, a data file: refused now, not after the work
    if not folder.is_dir():
        raise ValueError(f"cannot write {path}: folder {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):  # the atomic write's temp file goes there too
            pass
    except OSError as err:
        raise ValueError(f"cannot write {path}: {err.strerror} in {folder}") from None


def _same_file(a: str, b: str) -> bool:
    from pathlib import Path

    return Path(a).resolve() == Path(b).resolve()


def _dataset_options(p) -> None:
    p.add_argument("--dataset", help="default: the one in the checkpoint's metadata")
    p.add_argument("--data-dir")


def _application_parser(commands, name: str, help_text: str, run):
    p = commands.add_parser(name, help=help_text)
    p.set_defaults(run=lambda args: _application(args, run))
    p.add_argument("checkpoint")
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND, help="default %(default)s")
    p.add_argument("--seed", type=int, default=_default(apps.write_samples, "seed"))
    p.add_argument("--out", help="folder for the PNGs (default: the checkpoint's folder)")
    return p


def _sample_parser(commands) -> None:
    p = _application_parser(commands, "sample", "images from the prior, as a PNG grid", _sample)
    p.add_argument("--n", type=int, default=_default(apps.write_samples, "n"),
                   help="images (default %(default)s; a conditional model's grid without --label: n // classes "
                        "per class)")
    _label_option(p, "a conditional model's class to sample (a name or an index; default: a row per class)")


def _label_option(p, help_text: str) -> None:
    p.add_argument("--label", metavar="CLASS", help=help_text)


def _interpolate_parser(commands) -> None:
    p = _application_parser(commands, "interpolate", "linear and spherical paths between test images",
                            _interpolate)
    _dataset_options(p)
    p.add_argument("--pairs", type=int, default=_default(apps.write_interpolations, "pairs"))
    p.add_argument("--steps", type=int, default=_default(apps.write_interpolations, "steps"))


def _arithmetic_parser(commands) -> None:
    p = _application_parser(commands, "arithmetic", "latent arithmetic on class means: A + (B - C)", _arithmetic)
    _dataset_options(p)
    p.add_argument("--a", required=True, help="class (name or index) whose images are shifted")
    p.add_argument("--b", required=True, help="class added")
    p.add_argument("--c", required=True, help="class subtracted")
    p.add_argument("--n", type=int, default=_default(apps.write_arithmetic, "n"))


def _denoise_parser(commands) -> None:
    p = _application_parser(commands, "denoise", "denoise image files (noise added at --noise first)", _denoise)
    p.add_argument("--noise", type=float, metavar="SIGMA",
                   help="Gaussian noise added before denoising, the result clipped to [0, 1] (default: the "
                        "sigma the model was trained at; 0: the files are noisy already)")
    _label_option(p, "a conditional model's class of every file (a name or an index)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of them")


def _application(args, run) -> int:
    from pathlib import Path

    from twinvae.twin import twin_for_checkpoint

    out = Path(args.out or Path(args.checkpoint).parent)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; it names the folder the PNGs go to: name a folder")
    read_checkpoint(args.checkpoint)  # a bad file fails here, before a framework is imported
    twin = twin_for_checkpoint(args.backend, args.checkpoint)
    model, config, metadata = twin.load_checkpoint(args.checkpoint)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the folder --out {out}: {err.strerror}") from None
    written = run(args, twin, model, metadata, out)
    print("wrote " + ", ".join(map(str, written)))
    return 0


def _sample(args, twin, model, metadata, out) -> list:
    return [apps.write_samples(twin, model, out, args.n, args.seed, _label(args, model, metadata))]


def _label(args, model, metadata) -> int | None:
    """--label as a class index: a name of the checkpoint's classes (its metadata's, from training) or an
    index; refused for an unconditional model."""
    if args.label is None:
        return None
    count = check_conditional(model, str(args.checkpoint))
    names = metadata.get("classes") or []
    if args.label in names:
        return names.index(args.label)
    if args.label.isdigit() and int(args.label) < count:
        return int(args.label)
    known = f"its classes are {', '.join(names)}; or give an index" if names else "give an index"
    raise ValueError(f"--label {args.label!r} is not a class of {args.checkpoint}: {known}, 0 to {count - 1}")


def _interpolate(args, twin, model, metadata, out) -> list:
    return apps.write_interpolations(twin, model, _test_data(args, model, metadata), out, args.pairs, args.steps,
                                args.seed)


def _arithmetic(args, twin, model, metadata, out) -> list:
    data = _test_data(args, model, metadata)
    return [apps.write_arithmetic(twin, model, data, out, args.a, args.b, args.c, args.n)]


def _denoise(args, twin, model, metadata, out) -> list:
    from twinvae.denoising import denoise_files, training_noise

    sigma = training_noise(metadata) if args.noise is None else args.noise
    result = denoise_files(twin, model, args.paths, out, sigma, args.seed, _label(args, model, metadata))
    if "psnr_noisy" in result:
        print(f"{result['files']} image(s), noise sigma {sigma:g}: PSNR noisy {result['psnr_noisy']:.2f} dB, "
              f"denoised {result['psnr_denoised']:.2f} dB")
    return [result["written"][-1], f"{result['files']} denoised image(s) in {out / 'denoised'}"]


def _test_data(args, model, metadata):
    """The dataset the applications take test images from: --dataset, else the checkpoint's."""
    from twinvae.data import load_dataset

    name = args.dataset or metadata.get("dataset")
    if not name:
        raise ValueError(f"checkpoint {args.checkpoint} names no dataset in its metadata; pass --dataset")
    shape = model.config.image_shape  # a folder of images is read at the model's size
    data = load_dataset(name, args.data_dir, image_size=shape[1], channels=shape[0])
    if data.image_shape != model.config.image_shape:
        raise ValueError(f"the checkpoint takes images {model.config.image_shape}, {name} has {data.image_shape}")
    return data


def _export_parser(commands) -> None:
    p = commands.add_parser("export", help="a part of a model as an ONNX, torch.export or StableHLO artifact")
    p.set_defaults(run=_export)
    p.add_argument("checkpoint", help="a checkpoint written by either twin")
    p.add_argument("--format", required=True, choices=list(export_spec.FORMATS),
                   help="onnx (onnxruntime), torch.export (.pt2) or stablehlo (jax.export)")
    p.add_argument("--part", required=True, choices=list(export_spec.PARTS),
                   help="encoder: images -> (mu, logvar); decoder: z -> logits; vae: (images, eps) -> (mu, "
                        "logvar, logits); a class-conditional model's take labels last")
    p.add_argument("--batch", default="dynamic", type=_batch, metavar="dynamic|N",
                   help="a dynamic batch dimension (default) or a fixed batch size")
    p.add_argument("--dtype", choices=export_spec.DTYPES, default="float32",
                   help="float32 (default) or bfloat16: mixed precision, float32 in and out (not for onnx)")
    p.add_argument("--platform", choices=export_spec.PLATFORMS, default="cpu",
                   help="where it runs (default cpu); stablehlo is lowered for it from any machine")
    p.add_argument("--out", help="the artifact's path (default: beside the checkpoint, e.g. "
                                 "model-decoder.onnx); its sidecar goes to OUT.json")


def _batch(text: str) -> int | None:
    if text == "dynamic":
        return None
    try:
        return checks.check_count("--batch", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'dynamic' or a batch size >= 1, got {text!r}") from None


def _export(args) -> int:
    from twinvae.export import default_path, export

    out = args.out or str(default_path(args.checkpoint, args.format, args.part))
    for path in (out, export_spec.sidecar_path(out)):
        _check_writable(path)
    info = export(args.checkpoint, args.format, args.part, out, batch=args.batch, dtype=args.dtype,
                  platform=args.platform)
    print(f"wrote {out} ({info['artifact_format']}, {info['part']}, {info['dtype']}, {info['platform']}, "
          f"layout {info['layout']}) and its sidecar {out}.json")
    for what in ("inputs", "outputs"):
        print(f"  {what}: " + ", ".join(f"{s['name']} {tuple(s['shape'])} {s['dtype']}" for s in info[what]))
    return 0


def _inspect_parser(commands) -> None:
    p = commands.add_parser("inspect", help="print a checkpoint's config, metadata and weights")
    p.set_defaults(run=_inspect)
    p.add_argument("checkpoint")


def _inspect(args) -> int:
    from vae_core.layout import canonical_shapes, num_parameters

    weights, config, metadata = read_checkpoint(args.checkpoint)
    print(f"config: {json.dumps(config.to_dict())}")
    print(f"metadata: {json.dumps(metadata)}")
    print(f"{num_parameters(config)} parameters, {next(iter(weights.values())).dtype}")
    for key, shape in canonical_shapes(config).items():
        print(f"  {key:32s} {shape}")
    return 0


def _demo_parser(commands) -> None:
    p = commands.add_parser("demo", help="train in torch, load in JAX, show both compute the same")
    p.set_defaults(run=_demo)
    p.add_argument("--out", default=_default(run_demo, "out"),
                   help="folder for the checkpoint (default %(default)s)")
    p.add_argument("--seed", type=int, default=_default(run_demo, "seed"))
    p.add_argument("--steps", type=int, default=_default(run_demo, "steps"),
                   help="Adam steps in torch, then in both twins (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=_default(run_demo, "batch_size"))
    p.add_argument("--dtype", choices=["float32", "float64"], default=_default(run_demo, "dtype"))


def _demo(args) -> int:
    return run_demo(args.out, args.seed, args.steps, args.batch_size, args.dtype)


if __name__ == "__main__":
    sys.exit(main())
