"""The `twinvae` command. Framework-free: a subcommand imports torch or jax only when it runs."""

from __future__ import annotations

import argparse
import json
import sys
import time

from vae_core import __version__, checks


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

    commands.add_parser("bench", add_help=False, help="the benchmark harness: `twinvae bench --help` "
                                                      "(same as python -m benchmarks)")

    inspect = commands.add_parser("inspect", help="print a checkpoint's config, metadata and weights")
    inspect.add_argument("checkpoint")

    evaluate = commands.add_parser("evaluate", help="negative ELBO, IWAE -log p(x), bits/dim, active units")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--dataset", help="default: the one in the checkpoint's metadata")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--k", type=int, default=1000, help="importance samples per image (default 1000)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--backend", choices=["jax", "torch"], default="jax")
    evaluate.add_argument("--noise", type=float, metavar="SIGMA",
                          help="also report denoising PSNR at this noise level (default: the sigma a "
                               "denoising model was trained at)")
    evaluate.add_argument("--json", help="also write the figures to this JSON file")
    evaluate.add_argument("--no-progress", action="store_true")

    sample = commands.add_parser("sample", help="images from the prior, as a PNG grid")
    interpolate = commands.add_parser("interpolate", help="linear and spherical paths between test images")
    arithmetic = commands.add_parser("arithmetic", help="latent arithmetic on class means: A + (B - C)")
    denoise = commands.add_parser("denoise", help="denoise image files (noise added at --noise first)")
    denoise.add_argument("--noise", type=float, metavar="SIGMA",
                         help="Gaussian noise added before denoising, the result clipped to [0, 1] (default: the "
                              "sigma the model was trained at; 0: the files are noisy already)")
    for command in (sample, interpolate, arithmetic, denoise):
        command.add_argument("checkpoint")
        command.add_argument("--backend", choices=["jax", "torch"], default="jax")
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--out", help="folder for the PNGs (default: the checkpoint's folder)")
    denoise.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of them")
    sample.add_argument("--n", type=int, default=64)
    for command in (interpolate, arithmetic):
        command.add_argument("--dataset", help="default: the one in the checkpoint's metadata")
        command.add_argument("--data-dir")
    interpolate.add_argument("--pairs", type=int, default=6)
    interpolate.add_argument("--steps", type=int, default=10)
    arithmetic.add_argument("--a", required=True, help="class (name or index) whose images are shifted")
    arithmetic.add_argument("--b", required=True, help="class added")
    arithmetic.add_argument("--c", required=True, help="class subtracted")
    arithmetic.add_argument("--n", type=int, default=8)

    train = commands.add_parser("train", help="train a VAE with either backend; writes a run folder")
    train.add_argument("--backend", choices=["jax", "torch"], help="default jax (or, with --resume, the run's)")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last saved state")
    train.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                       help="also save model and training state every this many steps")
    train.add_argument("--dataset", choices=list(DATASET_SHAPES) + ["folder"], default="digits")
    train.add_argument("--data-dir", help="where the dataset's files are (or go), or the image folder")
    train.add_argument("--image-size", type=int, help="folder dataset: resize images to this square size")
    train.add_argument("--channels", type=int, choices=[1, 3], default=1, help="folder dataset: grey or RGB")
    group = train.add_mutually_exclusive_group()
    group.add_argument("--config", help="a VAEConfig JSON file (image_shape is the dataset's)")
    group.add_argument("--preset", choices=list(PRESETS), default="seed",
                       help="seed (the seed's conv VAE, default), mlp (pytorch/examples), resnet (stronger)")
    train.add_argument("--arch", choices=["conv", "mlp"])
    train.add_argument("--latent-dim", type=int)
    train.add_argument("--likelihood", choices=["bernoulli", "gaussian"])
    train.add_argument("--beta", type=float)
    train.add_argument("--epochs", type=int, help="default 10 (or, with --resume, the run's)")
    train.add_argument("--batch-size", type=int, default=128)
    train.add_argument("--lr", type=float, help="peak learning rate (default 1e-3, or the preset's)")
    train.add_argument("--lr-schedule", choices=["constant", "cosine"],
                       help="constant, or a cosine decay to 0 at the end (default constant, or the preset's)")
    train.add_argument("--lr-warmup", type=int, metavar="STEPS",
                       help="raise the learning rate linearly over this many steps (default 0, or the preset's)")
    train.add_argument("--kl-warmup", type=int, default=0, metavar="STEPS",
                       help="raise beta linearly over this many steps (default 0: off)")
    train.add_argument("--free-bits", type=float, default=0.0, metavar="NATS",
                       help="free bits per latent dimension in the training objective (default 0: off)")
    train.add_argument("--denoise", type=float, default=0.0, metavar="SIGMA",
                       help="train a denoising VAE: inputs get Gaussian noise of this sigma, clipped to [0, 1]")
    train.add_argument("--dtype", choices=list(checks.PRECISIONS), default="float32",
                       help="float32 (default), float64, or bfloat16: mixed precision (float32 parameters and "
                            "optimizer, layers computing in bf16)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", help="run folder (default: runs/DATASET-BACKEND-TIMESTAMP)")
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="compile the step (default: jax yes, torch no: no faster on a CPU here)")
    train.add_argument("--devices", type=_devices, default=None, metavar="N|all",
                       help="jax: data-parallel over N devices of a mesh in this process, or all it sees "
                            "(default 1; the batch divides among them)")
    train.add_argument("--nproc", type=int, default=None, metavar="N",
                       help="torch: data-parallel over N DistributedDataParallel processes on this machine "
                            "(gloo on CPU, NCCL on GPU; default 1); torchrun --nproc-per-node N -m "
                            "vae_torch.train ... does the same, and spans machines")
    train.add_argument("--no-progress", action="store_true")

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the harness has its own options; hand them over whole
        from benchmarks.__main__ import main as bench

        return bench(argv[1:])
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from vae_core.demo import run_demo

            return run_demo(args.out, args.seed, args.steps, args.batch_size, args.dtype)
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command in ("sample", "interpolate", "arithmetic", "denoise"):
            return _application(args)
        return _inspect(args.checkpoint)
    except (ValueError, OSError, RuntimeError) as err:  # bad input, missing data, divergence: no traceback
        print(f"twinvae {args.command}: error: {err}", file=sys.stderr)
        return 2


# image shape of each named dataset (the folder dataset's comes from --channels and --image-size)
DATASET_SHAPES = {"digits": (1, 8, 8), "fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28),
                  "cifar10": (3, 32, 32)}
# Each preset: the model, and the training options it was tuned with (flags given explicitly win).
PRESETS = {
    "seed": ({"arch": "conv", "conv_channels": (32, 64), "latent_dim": 20}, {}),  # the seed's conv VAE
    "mlp": ({"arch": "mlp", "mlp_widths": (400,), "latent_dim": 20}, {}),  # pytorch/examples
    # twice the seed's width, a residual block at each resolution, a higher peak rate with a cosine decay
    "resnet": ({"arch": "conv", "conv_channels": (64, 128), "res_blocks": 1, "latent_dim": 20},
               {"lr": 2e-3, "lr_schedule": "cosine", "lr_warmup": 200}),
}
TRAIN_DEFAULTS = {"lr": 1e-3, "lr_schedule": "constant", "lr_warmup": 0}


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
    import dataclasses

    from vae_core.config import VAEConfig
    from vae_core.trainer import TrainingInterrupted, TrainOptions, resume, train

    def report(run, out) -> int:
        try:
            record = run()
        except TrainingInterrupted as err:  # Ctrl-C: the state was saved; say how to go on
            print(f"twinvae train: {err}", file=sys.stderr)
            return 130
        if record is None:  # a worker of a multi-process run other than rank 0: rank 0 reports
            return 0
        print(f"test negative ELBO {record['test']['total']:.3f} nats/image after {record['epoch']} epochs; "
              f"run folder {out}")
        return 0

    if args.resume:
        return report(lambda: resume(args.resume, args.backend, args.epochs, progress=not args.no_progress,
                                     devices=args.devices, nproc=args.nproc), args.resume)
    args.backend = args.backend or "jax"

    if args.dataset == "folder":
        if not args.image_size:
            raise ValueError("the folder dataset needs --image-size")
        shape = (args.channels, args.image_size, args.image_size)
    else:
        shape = DATASET_SHAPES[args.dataset]
    if args.config:
        with open(args.config) as f:
            data = json.loads(f.read())
        if isinstance(data, dict) and tuple(data.get("image_shape", shape)) != shape:
            raise ValueError(f"{args.config}: image_shape {data['image_shape']} does not match the "
                             f"{args.dataset} images {shape}")
        config = VAEConfig.from_dict({**data, "image_shape": shape} if isinstance(data, dict) else data)
    else:
        config = VAEConfig(image_shape=shape, **PRESETS[args.preset][0])
    overrides = {k: v for k, v in (("arch", args.arch), ("latent_dim", args.latent_dim),
                                   ("likelihood", args.likelihood), ("beta", args.beta)) if v is not None}
    config = dataclasses.replace(config, **overrides)
    out = args.out or time.strftime(f"runs/{args.dataset}-{args.backend}-%Y%m%d-%H%M%S")
    tuned = {} if args.config else PRESETS[args.preset][1]
    schedule = {k: getattr(args, k) if getattr(args, k) is not None else tuned.get(k, default)
                for k, default in TRAIN_DEFAULTS.items()}
    options = TrainOptions(backend=args.backend, dataset=args.dataset, data_dir=args.data_dir,
                           image_size=args.image_size, channels=args.channels, epochs=args.epochs or 10,
                           batch_size=args.batch_size, **schedule, kl_warmup=args.kl_warmup,
                           free_bits=args.free_bits, denoise=args.denoise, dtype=args.dtype,
                           seed=args.seed, out=out, compile=args.compile, checkpoint_every=args.checkpoint_every,
                           devices=1 if args.devices is None else args.devices,
                           nproc=1 if args.nproc is None else args.nproc)
    return report(lambda: train(config, options, progress=not args.no_progress), out)


def _evaluate(args) -> int:
    from vae_core.evaluation import evaluate_checkpoint, format_report
    from vae_core.weights import atomic_write_bytes, read_checkpoint

    read_checkpoint(args.checkpoint)  # a bad file fails here, before a framework is imported
    result = evaluate_checkpoint(args.checkpoint, backend=args.backend, dataset=args.dataset,
                                 data_dir=args.data_dir, k=args.k, seed=args.seed, noise=args.noise,
                                 progress=not args.no_progress)
    print(format_report(result))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(result, indent=1) + "\n").encode())
    return 0


def _application(args) -> int:
    import importlib
    from pathlib import Path

    from vae_core import apps
    from vae_core.data import load_dataset
    from vae_core.weights import read_checkpoint

    read_checkpoint(args.checkpoint)  # a bad file fails here, before a framework is imported
    twin = importlib.import_module(f"vae_{args.backend}")
    model, config, metadata = twin.load_checkpoint(args.checkpoint)
    out = Path(args.out or Path(args.checkpoint).parent)
    out.mkdir(parents=True, exist_ok=True)
    if args.command == "sample":
        written = [apps.write_samples(twin, model, out, args.n, args.seed)]
    elif args.command == "denoise":
        from vae_core.denoising import denoise_files, training_noise

        sigma = training_noise(metadata) if args.noise is None else args.noise
        result = denoise_files(twin, model, args.paths, out, sigma, args.seed)
        if "psnr_noisy" in result:
            print(f"{result['files']} image(s), noise sigma {sigma:g}: PSNR noisy {result['psnr_noisy']:.2f} dB, "
                  f"denoised {result['psnr_denoised']:.2f} dB")
        written = [result["written"][-1], f"{result['files']} denoised image(s) in {out / 'denoised'}"]
    else:
        name = args.dataset or metadata.get("dataset")
        if not name:
            raise ValueError(f"checkpoint {args.checkpoint} names no dataset in its metadata; pass --dataset")
        data = load_dataset(name, args.data_dir)
        if data.image_shape != config.image_shape:
            raise ValueError(f"the checkpoint takes images {config.image_shape}, {name} has {data.image_shape}")
        if args.command == "interpolate":
            written = apps.write_interpolations(twin, model, data, out, args.pairs, args.steps, args.seed)
        else:
            written = [apps.write_arithmetic(twin, model, data, out, args.a, args.b, args.c, args.n)]
    print("wrote " + ", ".join(map(str, written)))
    return 0


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
