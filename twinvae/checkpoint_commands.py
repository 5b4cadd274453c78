"""The subcommands that take a trained model's checkpoint: evaluate, the applications (sample, interpolate,
arithmetic, denoise), export and inspect; a parser builder and a runner each (twinvae.cli runs them). Each
reads the checkpoint before a framework is imported, so a bad file fails at once."""

from __future__ import annotations

import argparse
import inspect
import json

from twinvae import apps
from twinvae.data import BINARIZE, check_for_model
from twinvae.evaluation import evaluate_checkpoint
from twinvae.frechet import DEFAULT_SAMPLES, MIN_ROWS, check_samples
from twinvae.results import write_results
from twinvae.twin import BACKENDS, DEFAULT_BACKEND, check_conditional
from vae_core import checks
from vae_core import export as export_spec
from vae_core.checkpoint import (
    atomic_write_json,
    read_checkpoint,
    refuse_input,
    refuse_symlink,
)


def parameter_default(function, parameter: str):
    """A parameter's default, read off the function that takes it, so the CLI never states it again."""
    return inspect.signature(function).parameters[parameter].default


def _dataset_options(p) -> None:
    p.add_argument("--dataset", help="default: the one in the checkpoint's metadata")
    p.add_argument("--data-dir")


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


def _evaluate_parser(commands) -> None:
    p = commands.add_parser("evaluate", help="negative ELBO, IWAE -log p(x), bits/dim, active units")
    p.set_defaults(run=_evaluate)
    p.add_argument("checkpoint")
    _dataset_options(p)
    p.add_argument("--k", type=int, default=parameter_default(evaluate_checkpoint, "k"),
                   help="importance samples per image (default %(default)s)")
    p.add_argument("--seed", type=int, default=parameter_default(evaluate_checkpoint, "seed"))
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND, help="default %(default)s")
    p.add_argument("--noise", type=float, metavar="SIGMA",
                   help="also report denoising PSNR at this noise level (default: the sigma a denoising model "
                        "was trained at)")
    p.add_argument("--binarize", choices=BINARIZE,
                   help="on the test set binarised so (default: as the model was trained, its metadata's)")
    p.add_argument("--fid", action="store_true",
                   help="also an in-domain Frechet distance of prior samples to the grey test images, by "
                        "twinvae's own classifier (comparable only with itself, not with published FIDs)")
    p.add_argument("--fid-samples", type=_fid_samples, metavar="N",
                   help=f"prior samples for --fid (default {DEFAULT_SAMPLES})")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--markdown", metavar="FILE", help="also write them as a results table (for the docs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a terminal)")


def _fid_samples(text: str) -> int:
    try:
        return check_samples(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of prior samples >= {MIN_ROWS} (a covariance needs "
                                         f"two), got {text!r}") from None


def _evaluate(args) -> int:
    from twinvae.evaluation import format_report, report_markdown

    if args.fid_samples and not args.fid:
        raise ValueError(f"--fid-samples {args.fid_samples} sizes the Frechet distance of --fid: give --fid too")
    read_checkpoint(args.checkpoint)  # a bad file fails here, before a framework is imported
    if args.json and args.markdown and _same_file(args.json, args.markdown):
        raise ValueError(f"--json {args.json} and --markdown {args.markdown} are one file: name two")
    for path in (args.json, args.markdown):
        if path:
            _check_writable(path)  # before the evaluation's minutes, not after
    result = evaluate_checkpoint(args.checkpoint, backend=args.backend, dataset=args.dataset,
                                 data_dir=args.data_dir, k=args.k, seed=args.seed, noise=args.noise,
                                 binarize=args.binarize, progress=not args.no_progress,
                                 fid_samples=(args.fid_samples or DEFAULT_SAMPLES) if args.fid else 0)
    print(format_report(result))
    if args.json:
        atomic_write_json(args.json, result)
    if args.markdown:
        write_results(args.markdown, report_markdown(result, "twinvae " + " ".join(args.argv)))
    return 0


def _application_parser(commands, name: str, help_text: str, run):
    p = commands.add_parser(name, help=help_text)
    p.set_defaults(run=lambda args: _application(args, run))
    p.add_argument("checkpoint")
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND, help="default %(default)s")
    p.add_argument("--seed", type=int, default=parameter_default(apps.write_samples, "seed"))
    p.add_argument("--out", help="folder for the PNGs (default: the checkpoint's folder)")
    return p


def _label_option(p, help_text: str) -> None:
    p.add_argument("--label", metavar="CLASS", help=help_text)


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


def _test_data(args, model, metadata):
    """The dataset the applications take test images from: --dataset, else the checkpoint's."""
    from twinvae.datasets import load_dataset

    name = args.dataset or metadata.get("dataset")
    if not name:
        raise ValueError(f"checkpoint {args.checkpoint} names no dataset in its metadata; pass --dataset")
    shape = model.config.image_shape  # a folder of images is read at the model's size
    data = load_dataset(name, args.data_dir, image_size=shape[1], channels=shape[0])
    check_for_model(data, model.config, name)
    return data


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


def _sample_parser(commands) -> None:
    p = _application_parser(commands, "sample", "images from the prior, as a PNG grid", _sample)
    p.add_argument("--n", type=int, default=parameter_default(apps.write_samples, "n"),
                   help="images (default %(default)s; a conditional model's grid without --label: n // classes "
                        "per class)")
    _label_option(p, "a conditional model's class to sample (a name or an index; default: a row per class)")


def _sample(args, twin, model, metadata, out) -> list:
    return [apps.write_samples(twin, model, out, args.n, args.seed, _label(args, model, metadata))]


def _interpolate_parser(commands) -> None:
    p = _application_parser(commands, "interpolate", "linear and spherical paths between test images",
                            _interpolate)
    _dataset_options(p)
    p.add_argument("--pairs", type=int, default=parameter_default(apps.write_interpolations, "pairs"))
    p.add_argument("--steps", type=int, default=parameter_default(apps.write_interpolations, "steps"))


def _interpolate(args, twin, model, metadata, out) -> list:
    return apps.write_interpolations(twin, model, _test_data(args, model, metadata), out, args.pairs, args.steps,
                                args.seed)


def _arithmetic_parser(commands) -> None:
    p = _application_parser(commands, "arithmetic", "latent arithmetic on class means: A + (B - C)", _arithmetic)
    _dataset_options(p)
    p.add_argument("--a", required=True, help="class (name or index) whose images are shifted")
    p.add_argument("--b", required=True, help="class added")
    p.add_argument("--c", required=True, help="class subtracted")
    p.add_argument("--n", type=int, default=parameter_default(apps.write_arithmetic, "n"))


def _arithmetic(args, twin, model, metadata, out) -> list:
    data = _test_data(args, model, metadata)
    return [apps.write_arithmetic(twin, model, data, out, args.a, args.b, args.c, args.n)]


def _denoise_parser(commands) -> None:
    p = _application_parser(commands, "denoise", "denoise image files (noise added at --noise first)", _denoise)
    p.add_argument("--noise", type=float, metavar="SIGMA",
                   help="Gaussian noise added before denoising, the result clipped to [0, 1] (default: the "
                        "sigma the model was trained at; 0: the files are noisy already)")
    _label_option(p, "a conditional model's class of every file (a name or an index)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of them")


def _denoise(args, twin, model, metadata, out) -> list:
    from twinvae.denoising import denoise_files, training_noise

    sigma = training_noise(metadata) if args.noise is None else args.noise
    result = denoise_files(twin, model, args.paths, out, sigma, args.seed, _label(args, model, metadata))
    if "psnr_noisy" in result:
        print(f"{result['files']} image(s), noise sigma {sigma:g}: PSNR noisy {result['psnr_noisy']:.2f} dB, "
              f"denoised {result['psnr_denoised']:.2f} dB")
    return [result["written"][-1], f"{result['files']} denoised image(s) in {out / 'denoised'}"]


def _batch(text: str) -> int | None:
    if text == "dynamic":
        return None
    try:
        return checks.check_count("--batch", int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'dynamic' or a batch size >= 1, got {text!r}") from None


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


def add_parsers(commands) -> None:
    """These subcommands, in the order `twinvae --help` lists them."""
    for build in (_evaluate_parser, _sample_parser, _interpolate_parser, _arithmetic_parser, _denoise_parser,
                  _export_parser, _inspect_parser):
        build(commands)
