"""The seed's applications on a trained model of either backend: prior samples, reconstructions, latent
interpolation (linear and spherical) and latent arithmetic on class means. Framework-free: each function
takes the twin (twinvae.twin.Twin) and its model, and writes PNG grids. A class-conditional model
(num_classes > 0) takes each image's label from the dataset and each latent's from the picture's rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twinvae.data import DataError, Dataset
from twinvae.images import lerp, save_png, slerp
from twinvae.twin import Model, Twin, check_label, dtype_name, model_labels
from vae_core import checks, seeds
from vae_core.checkpoint import atomic_write_bytes

INTERPOLATION_PAIRS = 6  # rows of the interpolation pictures (a run's end writes fewer if its test set is small)


def mean_images(twin: Twin, model: Model, z: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """The images of latents z (of those classes, for a conditional model): the likelihood's mean of their
    logits, in float64."""
    logits = model.decode(twin.as_input(z, model), labels=model_labels(twin, model, labels, "the latents"))
    return twin.to_numpy(twin.mean_image(logits, model.config.likelihood)).astype(np.float64)


def encode_all(twin: Twin, model: Model, images: np.ndarray, batch: int = 500,
               labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar) of every image (with its label, for a conditional model), in float64, encoded `batch`
    images at a time."""
    mus, logvars = [], []
    for start in range(0, len(images), batch):
        x = twin.as_input(images[start:start + batch].astype(dtype_name(model)), model)
        y = model_labels(twin, model, None if labels is None else labels[start:start + batch])
        mu, logvar = model.encode(x, labels=y)
        mus.append(twin.to_numpy(mu).astype(np.float64))
        logvars.append(twin.to_numpy(logvar).astype(np.float64))
    return np.concatenate(mus), np.concatenate(logvars)


def write_samples(twin: Twin, model: Model, out, n: int = 64, seed: int = 0, label: int | None = None) -> Path:
    """n images from the prior (z from the 'sample' stream: the same in both backends); a conditional
    model's of class `label`, or without one a grid of one row per class, n // classes images a row, the
    same z down each column (so a column keeps its style and changes its class; a two-level model's z2, which
    `decode` takes through p(z1 | z2)'s mean, so that z1 adds no noise of its own to the style)."""
    checks.check_count("--n", n)
    classes = model.config.num_classes
    if check_label(model, label) is not None:
        images = model.sample(n, seed, labels=twin.as_labels(np.full(n, label), model))
        return save_png(Path(out) / f"samples-class-{label}.png", twin.to_numpy(images))
    if not classes:
        return save_png(Path(out) / "samples.png", twin.to_numpy(model.sample(n, seed)))
    per_class = max(1, n // classes)
    z = seeds.standard_normal(seed, "sample", 0, (per_class, model.config.latent_dim), dtype_name(model))
    grid = mean_images(twin, model, np.tile(z, (classes, 1)), np.repeat(np.arange(classes), per_class))
    return save_png(Path(out) / "samples.png", grid, ncol=per_class)


def write_reconstructions(twin: Twin, model: Model, data: Dataset, out, n: int = 32) -> Path:
    """Test images (odd rows) above their reconstructions from the posterior mean (even rows); n at most
    (the test set may hold fewer)."""
    n = min(checks.check_count("the number of images", n), len(data.test_x))
    x = data.test_x[:n].astype(dtype_name(model))
    labels = model_labels(twin, model, None if data.test_y is None else data.test_y[:n], f"the {data.name} images")
    recon = twin.to_numpy(model.reconstruct(twin.as_input(x, model), labels=labels))
    ncol = min(8, n)
    rows = []
    for start in range(0, n, ncol):
        rows += [x[start:start + ncol], recon[start:start + ncol]]
    return save_png(Path(out) / "reconstructions.png", np.concatenate(rows), ncol=ncol)


def write_interpolations(twin: Twin, model: Model, data: Dataset, out, pairs: int = INTERPOLATION_PAIRS,
                         steps: int = 10, seed: int = 0) -> list[Path]:
    """Between pairs of distinct test images: each row is image a, `steps` decoded points from mu(a) to
    mu(b), image b; one grid linear, one spherical. A conditional model's pairs are of one class, which
    the whole path decodes with."""
    checks.check_count("--pairs", pairs)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"--steps must be at least 2 (the two ends of each path), got {steps!r}")
    if 2 * pairs > len(data.test_x):
        raise DataError(f"{pairs} pairs need {2 * pairs} distinct test images; {data.name} has "
                        f"{len(data.test_x)}: ask for --pairs {len(data.test_x) // 2} or fewer")
    picks = interpolation_pairs(data, pairs, seed, conditional=bool(model.config.num_classes))
    images, labels = data.test_x[picks], None if data.test_y is None else data.test_y[picks]
    mu, _ = encode_all(twin, model, images, labels=labels)
    t = np.linspace(0.0, 1.0, steps)
    written = []
    for name, path_fn in (("linear", lerp), ("spherical", slerp)):
        rows = []
        for i in range(pairs):
            a, b = 2 * i, 2 * i + 1
            path_labels = None if labels is None else np.full(steps, labels[a])
            decoded = mean_images(twin, model, path_fn(mu[a], mu[b], t), path_labels)
            rows.append(np.concatenate([images[a:a + 1], decoded, images[b:b + 1]]))
        written.append(save_png(Path(out) / f"interpolation-{name}.png", np.concatenate(rows), ncol=steps + 2))
    return written


def interpolation_pairs(data: Dataset, pairs: int, seed: int, conditional: bool) -> np.ndarray:
    """Indices of 2 * pairs distinct test images, pair i at 2i and 2i + 1 (the 'sample' stream, step 1); for
    a conditional model each image a is followed by the next image of its class in a permutation."""
    draw = seeds.rng(seed, "sample", step=1)
    if not conditional:
        return draw.choice(len(data.test_x), 2 * pairs, replace=False)
    order = draw.permutation(len(data.test_x))
    if data.test_y is None:
        raise DataError(f"this model is class-conditional and the {data.name} images have no labels")
    picks, taken = [], set()
    for a in order:
        if len(picks) == 2 * pairs:
            break
        if a in taken:
            continue
        partner = next((b for b in order if b not in taken and b != a and data.test_y[b] == data.test_y[a]), None)
        if partner is not None:
            picks += [a, partner]
            taken.update((a, partner))
    if len(picks) < 2 * pairs:
        raise DataError(f"{data.name} has too few test images of a shared class for {pairs} pairs")
    return np.asarray(picks)


def class_index(data: Dataset, name: str) -> int:
    if data.train_y is None or data.classes is None:
        raise DataError(f"{data.name} has no labels: latent arithmetic on class means needs a labelled dataset")
    if name in data.classes:
        return data.classes.index(name)
    if name.isdigit() and int(name) < len(data.classes):
        return int(name)
    raise DataError(f"unknown class {name!r} for {data.name}; classes: {', '.join(data.classes)} (or 0-"
                    f"{len(data.classes) - 1})")


def write_arithmetic(twin: Twin, model: Model, data: Dataset, out, a: str, b: str, c: str, n: int = 8) -> Path:
    """z + (mean_b - mean_c) for n test images of class a, with the class means over the test set.
    Rows: the images, their reconstructions, the shifted decodings; last row: decode(mean_a + mean_b -
    mean_c) beside the three class means decoded. A conditional model encodes each image with its own
    label and decodes a class mean with its class, a reconstruction with a, and what is shifted towards b
    with b (its label carries the class, z the rest)."""
    checks.check_count("--n", n)
    ia, ib, ic = (class_index(data, name) for name in (a, b, c))
    mu, _ = encode_all(twin, model, data.test_x, labels=data.test_y)
    means = {i: mu[data.test_y == i].mean(0) for i in (ia, ib, ic)}
    chosen = np.flatnonzero(data.test_y == ia)[:n]
    if len(chosen) == 0:
        raise DataError(f"no test image of class {a!r}")
    k = len(chosen)
    shifted = mu[chosen] + (means[ib] - means[ic])
    summary = np.stack([means[ia], means[ib], means[ic], means[ia] + means[ib] - means[ic]])
    summary = mean_images(twin, model, summary, np.array([ia, ib, ic, ib]))
    summary_row = np.concatenate([summary, np.ones((k - 4, *data.image_shape))]) if k >= 4 else summary[:k]
    grid_images = np.concatenate([data.test_x[chosen], mean_images(twin, model, mu[chosen], np.full(k, ia)),
                                  mean_images(twin, model, shifted, np.full(k, ib)), summary_row])
    return save_png(Path(out) / "arithmetic.png", grid_images, ncol=k)


def write_loss_curve(records: list[dict], path) -> Path | None:
    """Train and test negative ELBO per epoch (matplotlib; None without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import io

    epochs = [r["epoch"] for r in records]
    fig, ax = plt.subplots(figsize=(6, 4))
    for split in ("train", "test"):
        ax.plot(epochs, [r[split]["total"] for r in records], marker="o", label=f"{split} (total)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO, nats per image")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)

