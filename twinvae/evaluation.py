"""`twinvae evaluate`: likelihood figures of a checkpoint from either backend, on a dataset's test set.

Always at beta = 1 and without free bits, so every figure bounds the same likelihood: the negative ELBO
(one eps per image, the 'eval' stream), the IWAE estimate of -log p(x) with K importance samples
(Burda et al. 2016; vectorised over K and over images), the KL of each latent dimension and the number
of active units (variance over the test set of E_q[z] above 0.01), and for denoising the PSNR of noisy and
denoised test images (vae_core/denoising.py). What the nats are depends on the likelihood and the data
(measure): bits per dimension only where the likelihood is a probability mass on the data's own values,
which a reader may set beside published bits/dim."""

from __future__ import annotations

import math
import warnings

import numpy as np

from twinvae.apps import encode_all, mean_images
from twinvae.data import Dataset, binarized, check_for_model
from twinvae.datasets import load_dataset
from twinvae.denoising import denoising_figures, training_noise
from twinvae.frechet import check_samples, frechet_figures, markdown_columns, report_lines
from twinvae.progress import Progress
from twinvae.results import markdown_table, results_origin
from twinvae.twin import DEFAULT_BACKEND, Model, Twin, dtype_name, model_labels, twin_for_checkpoint
from vae_core import checks, seeds

ACTIVE_UNIT_THRESHOLD = 0.01
SAMPLES_PER_CHUNK = 20_000  # images x K per draw of eps (the draws, and so the figures, depend on it)
# images x K per decoder call (one image's K where K is larger): a tenth of the decoder's intermediates at
# 20,000 (counted from their shapes: the seed model's ~1 GB, the resnet preset's ~4 GB), and 1.0-1.15x
# its speed (benchmarks/results/cpu-iwae.md)
LATENTS_PER_CALL = 2_000
EVAL_BATCH = 500


def measure(likelihood: str, images: np.ndarray) -> tuple[str, bool]:
    """What a likelihood's nats on these images are, and whether bits/dim mean anything: the Bernoulli is
    a mass on {0, 1}, so a likelihood of binary images only (on grey levels its BCE normalises over
    nothing); the Gaussian and the continuous Bernoulli are densities of continuous values, not masses of
    the images' discrete levels; the discretized logistic is a mass on those levels."""
    if likelihood == "bernoulli":
        if np.isin(images, (0.0, 1.0)).all():
            return "nats (a Bernoulli likelihood of binary images)", True
        return "BCE nats (not a likelihood of grey-level data)", False
    if likelihood == "discretized_logistic":
        return "nats (a discretized logistic mass on the data's levels)", True
    if likelihood == "gaussian":
        return ("nats of a continuous density (fixed-variance Gaussian), not comparable with discrete "
                "bits/dim"), False
    if likelihood == "continuous_bernoulli":
        return "nats of a continuous density on [0, 1], not comparable with discrete bits/dim", False
    raise ValueError(f"no measure is known for the likelihood {likelihood!r}")


def negative_elbo(twin: Twin, model: Model, images: np.ndarray, seed: int, dtype: str,
                  labels: np.ndarray | None = None) -> dict:
    """Mean per-image negative ELBO, reconstruction and KL at beta = 1, in nats, with eps drawn from the
    'eval' stream (so every epoch and both backends see the same noise); a conditional model's with each
    image's label (its -ELBO bounds -log p(x | label))."""
    sums = np.zeros(3)
    for start in range(0, len(images), EVAL_BATCH):
        x = images[start:start + EVAL_BATCH]
        y = model_labels(twin, model, None if labels is None else labels[start:start + EVAL_BATCH])
        eps = seeds.standard_normal(seed, "eval", start // EVAL_BATCH, (len(x), model.config.noise_dim), dtype)
        losses = twin.evaluate(model, twin.as_input(x.astype(dtype), model), twin.as_input(eps, model), y)
        sums += [float(twin.to_numpy(v).astype(np.float64).sum()) for v in losses]
    return dict(zip(("total", "reconstruction", "kl"), (sums / len(images)).tolist()))


SAMPLES_PER_CLASS = 1000  # the conditional samples of each class that the real-data classifier judges


def real_data_classifier(data: Dataset):
    """A multinomial logistic regression (scikit-learn, lbfgs) of the real training images' classes:
    small, deterministic, framework-free."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=300).fit(data.train_x.reshape(len(data.train_x), -1), data.train_y)


def conditional_sample_accuracy(twin: Twin, model: Model, data: Dataset, per_class: int = SAMPLES_PER_CLASS,
                                seed: int = 0) -> dict:
    """How recognisable a class-conditional model's samples are: a classifier of the real training images
    (real_data_classifier), scored on the real test images and on `per_class` prior samples of every
    class, each decoded with its class (the likelihood's mean image; z from the 'sample' stream, step 2; a
    two-level model's z2, decoded as `decode` does, through p(z1 | z2)'s mean)."""
    with warnings.catch_warnings():  # lbfgs stopping at max_iter is the classifier's size, not an error
        warnings.simplefilter("ignore", category=UserWarning)
        classifier = real_data_classifier(data)
    labels = np.repeat(np.arange(model.config.num_classes), per_class)
    z = seeds.standard_normal(seed, "sample", 2, (len(labels), model.config.latent_dim), dtype_name(model))
    samples = np.concatenate([mean_images(twin, model, z[i:i + EVAL_BATCH], labels[i:i + EVAL_BATCH])
                              for i in range(0, len(labels), EVAL_BATCH)])
    return {"classifier": "logistic regression of the real training images (scikit-learn)",
            "real_test_accuracy": float(classifier.score(data.test_x.reshape(len(data.test_x), -1), data.test_y)),
            "sample_accuracy": float(classifier.score(samples.reshape(len(samples), -1), labels)),
            "samples_per_class": per_class}


def log_mean_exp(log_w: np.ndarray, axis: int = 0) -> np.ndarray:
    top = np.max(log_w, axis=axis, keepdims=True)
    return (top + np.log(np.mean(np.exp(log_w - top), axis=axis, keepdims=True))).squeeze(axis)


def iwae_nll(twin: Twin, model: Model, images: np.ndarray, k: int, seed: int, dtype: str,
             progress: Progress | None = None, labels: np.ndarray | None = None) -> np.ndarray:
    """Per-image IWAE estimate of -log p(x) in nats (of -log p(x | label) for a conditional model), K
    importance samples each."""
    per_chunk = max(1, SAMPLES_PER_CHUNK // k)
    per_call = max(1, LATENTS_PER_CALL // k)
    nll = []
    for chunk, start in enumerate(range(0, len(images), per_chunk)):
        x = images[start:start + per_chunk].astype(dtype)
        y = None if labels is None else labels[start:start + per_chunk]
        eps = seeds.standard_normal(seed, "eval", 1_000_000 + chunk, (k, len(x), model.config.noise_dim), dtype)
        log_w = np.concatenate([importance_log_weights(twin, model, x[i:i + per_call], eps[:, i:i + per_call],
                                                       None if y is None else y[i:i + per_call])
                                for i in range(0, len(x), per_call)], axis=1)
        nll.append(-log_mean_exp(log_w.astype(np.float64)))
        if progress:
            progress.advance(len(x))
    return np.concatenate(nll)


def importance_log_weights(twin: Twin, model: Model, x: np.ndarray, eps: np.ndarray,
                           labels: np.ndarray | None) -> np.ndarray:
    """The twin's importance log-weights (K, N) of canonical numpy images, eps and labels, as numpy."""
    log_w = twin.importance_log_weights(model, twin.as_input(x, model), twin.as_input(eps, model),
                                        model_labels(twin, model, labels))
    return twin.to_numpy(log_w)


def evaluate_checkpoint(path, *, backend: str = DEFAULT_BACKEND, dataset: str | None = None, data_dir=None,
                        k: int = 1000, seed: int = 0, noise: float | None = None, binarize: str | None = None,
                        progress: bool = False, fid_samples: int = 0) -> dict:
    """The figures of the module docstring; with a noise level (default: the sigma a denoising model was
    trained at, none for others) also the PSNR of noisy, denoised and reconstructed test images. On the
    binarised test set (twinvae.data.binarized) where `binarize` says so, by default where the model was
    trained on binarised data (its metadata's `binarize`). With fid_samples > 0 also the in-domain Frechet
    distance of that many prior samples to the test set (twinvae.frechet), always of the grey images."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if noise is not None:
        checks.check_noise(noise)
    if fid_samples:
        check_samples(fid_samples)
    twin = twin_for_checkpoint(backend, path)
    model, config, metadata = twin.load_checkpoint(path)
    name = dataset or metadata.get("dataset")
    if not name:
        raise ValueError(f"checkpoint {path} names no dataset in its metadata; pass --dataset")
    data = load_dataset(name, data_dir, image_size=config.image_shape[1], channels=config.image_shape[0])
    check_for_model(data, config, name)
    # the grey images, before any binarising (a Bernoulli decoder's mean image estimates their intensity)
    frechet = frechet_figures(twin, model, data, fid_samples, seed, EVAL_BATCH) if fid_samples else None
    binarize = binarize or metadata.get("binarize")
    if binarize:
        data = binarized(data, binarize)
    if config.likelihood == "discretized_logistic" and data.levels != config.levels:
        raise ValueError(f"checkpoint {path} is a discretized logistic over {config.levels} levels; the {name} "
                         f"test images{' as binarised' if binarize else ''} take {data.levels} levels")
    labels = data.test_y if config.num_classes else None
    dtype = dtype_name(model)
    images = data.test_x
    elbo = negative_elbo(twin, model, images, seed, dtype, labels)
    _check_finite(path, name, "negative ELBO", elbo["total"])
    mu, logvar = encode_all(twin, model, images, labels=labels)
    # the closed form against N(0, I); the VampPrior's KL, a mixture's, does not split by dimension
    kl_per_dim = None if config.prior == "vamp" else (0.5 * (mu**2 + np.exp(logvar) - 1 - logvar)).mean(0).tolist()
    active = int(np.sum(mu.var(0) > ACTIVE_UNIT_THRESHOLD))
    bar = Progress(len(images), enabled=progress, unit="image")
    bar.stage(f"IWAE, K={k}")
    nll = iwae_nll(twin, model, images, k, seed, dtype, bar, labels).mean()
    bar.close()
    _check_finite(path, name, "IWAE -log p(x)", float(nll))
    label, discrete = measure(config.likelihood, images)
    bits = 1 / (config.num_pixels * math.log(2)) if discrete else None
    noise = training_noise(metadata) if noise is None else noise
    denoising = denoising_figures(twin, model, images, noise, seed, labels) if noise > 0 else None
    samples = conditional_sample_accuracy(twin, model, data, seed=seed) if config.num_classes else None
    return {"checkpoint": str(path), "dataset": name, "binarize": binarize, "backend": backend,
            "images": len(images), "k": k,
            "seed": seed, "denoising": denoising, "negative_elbo": elbo["total"],
            "reconstruction": elbo["reconstruction"],
            "kl": elbo["kl"], "iwae_nll": float(nll), "measure": label,
            "bits_per_dim_elbo": elbo["total"] * bits if bits else None,
            "bits_per_dim_iwae": float(nll) * bits if bits else None, "active_units": active,
            "latent_dim": config.latent_dim, "hierarchy": config.hierarchy, "kl_per_dim": kl_per_dim,
            "likelihood": config.likelihood,
            "num_classes": config.num_classes, "conditional_samples": samples, "frechet": frechet}


def _check_finite(path, dataset: str, quantity: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"checkpoint {path}: its {quantity} on the {dataset} test set is {value}, not a figure "
                         "to report: the weights overflow on these images (a damaged or diverged model)")


def format_report(r: dict) -> str:
    kl = _top_latent(r) + ", ".join(f"{v:.2f}" for v in r["kl_per_dim"]) if r["kl_per_dim"] is not None else \
        "none: the VampPrior's KL does not split by latent dimension"
    d = r.get("denoising")
    psnr = (f"\n  denoising sigma {d['sigma']:g}: PSNR noisy {d['psnr_noisy']:.2f} dB, denoised "
            f"{d['psnr_denoised']:.2f} dB (+{d['psnr_denoised'] - d['psnr_noisy']:.2f}), clean reconstructed "
            f"{d['psnr_reconstructed']:.2f} dB") if d else ""
    return (f"{r['checkpoint']} on {r['dataset']} test{_binarised(r)} ({r['images']} images, {r['backend']} "
            "backend)\n"
            f"  figures in         {r['measure']}, per image{_given_labels(r)}\n"
            f"  negative ELBO      {r['negative_elbo']:9.3f}{_bits(r['bits_per_dim_elbo'])} = reconstruction "
            f"{r['reconstruction']:.3f} + KL {r['kl']:.3f}\n"
            f"  IWAE -log p(x)     {r['iwae_nll']:9.3f}{_bits(r['bits_per_dim_iwae'])}, K = {r['k']}\n"
            f"  active units       {r['active_units']} of {r['latent_dim']} "
            f"({_top_latent(r)}Var E_q[z] > {ACTIVE_UNIT_THRESHOLD})\n"
            f"  KL per latent dim  {kl}" + psnr + _samples_line(r) + report_lines(r.get("frechet")))


def report_markdown(r: dict, command: str) -> str:
    """The figures as a results file for the docs: the provenance line (twinvae.results: the command, this
    process's machine and versions) with what was measured, then one table row."""
    d = r.get("denoising")
    header = ["checkpoint", "backend", "test images", "K", "negative ELBO", "bits/dim", "IWAE -log p(x)",
              "bits/dim", "reconstruction", "KL", "active units"]
    header += ["sigma", "PSNR noisy", "PSNR denoised"] if d else []
    cells = [r["checkpoint"], r["backend"], str(r["images"]), str(r["k"]), f"{r['negative_elbo']:.3f}",
             _cell(r["bits_per_dim_elbo"]), f"{r['iwae_nll']:.3f}", _cell(r["bits_per_dim_iwae"]),
             f"{r['reconstruction']:.3f}", f"{r['kl']:.3f}", f"{r['active_units']} of {r['latent_dim']}"]
    if d:
        cells += [f"{d['sigma']:g}", f"{d['psnr_noisy']:.2f} dB", f"{d['psnr_denoised']:.2f} dB"]
    samples = r.get("conditional_samples")
    if samples:  # the classifier's accuracy on the samples, then on the real test set
        header += ["class accuracy of samples", "of the real test set"]
        cells += [f"{samples['sample_accuracy']:.1%}", f"{samples['real_test_accuracy']:.1%}"]
    frechet_header, frechet_cells = markdown_columns(r.get("frechet"))
    header, cells = header + frechet_header, cells + frechet_cells
    return (f"{results_origin(command)}; {r['measure']} per image{_given_labels(r)} on the {r['dataset']} test "
            f"set{_binarised(r)}.\n\n{markdown_table(header, [cells])}\n")


def _samples_line(r: dict) -> str:
    s = r.get("conditional_samples")
    if not s:
        return ""
    return (f"\n  class accuracy     {s['sample_accuracy']:.1%} on {s['samples_per_class']} samples of each class "
            f"(the real test set: {s['real_test_accuracy']:.1%}), by a {s['classifier']}")


def _top_latent(r: dict) -> str:
    """A two-level model's active units and KL per dimension are its top latent z2's."""
    return "z2, the top latent's: " if r.get("hierarchy", 1) == 2 else ""


def _given_labels(r: dict) -> str:
    """A conditional model's figures bound -log p(x | label), not -log p(x)."""
    return ", given each image's label (-log p(x | y))" if r.get("num_classes") else ""


def _binarised(r: dict) -> str:
    protocols = {"dynamic": ", binarised dynamically (seed 0)", "threshold": ", binarised at 1/2"}
    return protocols.get(r.get("binarize"), "")


def _bits(value: float | None) -> str:
    return f" ({value:.4f} bits/dim)" if value is not None else ""


def _cell(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "n/a"
