"""Denoising with a VAE: the noise model, PSNR, and the `twinvae denoise` application. Framework-free.

A denoising VAE (Im et al. 2017) is trained on noisy inputs x~ = clip(x + sigma * n, 0, 1), n ~ N(0, I),
with the reconstruction scored against the clean x; it denoises by decoding the posterior mean of the
noisy image. Any VAE can be asked to denoise this way; one trained for it does it much better. The noise
comes from vae_core's 'noise' stream, so both backends (and resumed runs) see the same noisy images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twinvae.data import IMAGE_SUFFIXES, DataError, image_paths, read_images
from twinvae.images import save_png
from twinvae.twin import check_label, dtype_name, model_labels
from vae_core import checks, seeds

EVAL_NOISE_OFFSET = 1 << 40  # 'noise' stream steps of evaluation: far past any training step


def training_noise(metadata: dict) -> float:
    """The sigma a checkpoint's model was trained to denoise (its metadata's `denoise`), 0 for others."""
    return float(metadata.get("denoise") or 0.0)


def add_noise(images: np.ndarray, sigma: float, seed: int, step: int) -> np.ndarray:
    """clip(images + sigma * N(0, 1), 0, 1), in the images' dtype; the noise is draw `step` of the seed's
    'noise' stream (drawn in float64, so float32 and float64 runs see the same noise up to rounding)."""
    sigma = checks.check_noise(sigma)
    noise = seeds.standard_normal(seed, "noise", step, images.shape)
    return np.clip(images + sigma * noise, 0.0, 1.0).astype(images.dtype)


def psnr(estimate: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio of each image in dB, for pixels in [0, 1]: 10 log10(1 / MSE). An exact
    copy gives inf."""
    if estimate.shape != clean.shape:
        raise ValueError(f"PSNR of images of shape {estimate.shape} against {clean.shape}")
    mse = np.mean((np.asarray(estimate, np.float64) - np.asarray(clean, np.float64)) ** 2,
                  axis=tuple(range(1, clean.ndim)))
    with np.errstate(divide="ignore"):
        return -10.0 * np.log10(mse)


def denoise(twin, model, noisy: np.ndarray, batch: int = 500, labels: np.ndarray | None = None) -> np.ndarray:
    """Decode the posterior mean of each noisy image (with its label, for a conditional model): pixel
    probabilities in [0, 1], float64."""
    out = []
    for i in range(0, len(noisy), batch):
        x = twin.as_input(noisy[i:i + batch].astype(dtype_name(model)), model)
        y = model_labels(twin, model, None if labels is None else labels[i:i + batch])
        out.append(twin.to_numpy(model.reconstruct(x, labels=y)))
    return np.concatenate(out).astype(np.float64)


def denoising_figures(twin, model, clean: np.ndarray, sigma: float, seed: int = 0,
                      labels: np.ndarray | None = None) -> dict:
    """Mean PSNR (dB) of the noisy inputs and of their denoised versions against the clean images, and of
    the reconstructions of the clean images themselves (for comparison: a model trained on noisy inputs
    can denoise better than it reconstructs clean ones, which its encoder never saw)."""
    noisy = add_noise(clean, sigma, seed, EVAL_NOISE_OFFSET)
    return {"sigma": float(sigma),
            "psnr_noisy": float(np.mean(psnr(noisy, clean))),
            "psnr_denoised": float(np.mean(psnr(denoise(twin, model, noisy, labels=labels), clean))),
            "psnr_reconstructed": float(np.mean(psnr(denoise(twin, model, clean, labels=labels), clean)))}


def write_denoising(twin, model, clean: np.ndarray, out, sigma: float, seed: int = 0, n: int = 8,
                    name: str = "denoising.png", labels: np.ndarray | None = None) -> Path:
    """n test images in three rows: clean, noisy (sigma), denoised."""
    clean, labels = clean[:n], None if labels is None else labels[:n]
    noisy = add_noise(clean, sigma, seed, EVAL_NOISE_OFFSET)
    rows = np.concatenate([clean, noisy, denoise(twin, model, noisy, labels=labels)])
    return save_png(Path(out) / name, rows, ncol=len(clean))


def image_files(paths) -> list[Path]:
    """Image files named directly, and every image file under a named folder (sorted); errors name what
    is missing or not an image."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = image_paths(path)
            if not inside:
                raise DataError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path} does not exist")
    return found


def denoise_files(twin, model, paths, out, sigma: float, seed: int = 0, label: int | None = None) -> dict:
    """`twinvae denoise`: read the image files (or folders), resized to the model's image size, add noise
    at sigma (0: they are noisy already), denoise, and write out/denoised/<name>.png for each file plus
    out/denoising.png (rows of up to 16: the files, the noisy inputs, the denoised images; with sigma 0
    the first two rows are the same). A conditional model denoises every file as of class `label`.
    Returns the paths written and, where noise was added, the mean PSNR of noisy and denoised images."""
    sigma = checks.check_noise(sigma)
    classes = model.config.num_classes
    if classes and label is None:
        raise DataError(f"this model is class-conditional (num_classes={classes}) and image files have no "
                        "labels: give the files' class with --label")
    check_label(model, label)
    files = image_files(paths)
    clean = read_images(files, model.config.image_shape)
    noisy = add_noise(clean, sigma, seed, EVAL_NOISE_OFFSET) if sigma > 0 else clean
    denoised = denoise(twin, model, noisy, labels=None if label is None else np.full(len(files), label))
    out = Path(out)
    (out / "denoised").mkdir(parents=True, exist_ok=True)
    names = unique_names(files)
    written = [save_png(out / "denoised" / f"{name}.png", denoised[i:i + 1], scale=1, pad=0)
               for i, name in enumerate(names)]
    ncol = min(len(files), 16)
    rows = [part[i:i + ncol] for i in range(0, len(files), ncol) for part in (clean, noisy, denoised)]
    written.append(save_png(out / "denoising.png", np.concatenate(rows), ncol=ncol))
    result = {"files": len(files), "sigma": sigma, "written": [str(p) for p in written]}
    if sigma > 0:
        result.update(psnr_noisy=float(np.mean(psnr(noisy, clean))),
                      psnr_denoised=float(np.mean(psnr(denoised, clean))))
    return result


def unique_names(files: list[Path]) -> list[str]:
    """File stems, with a counter where two files share one (a/x.png and b/x.png)."""
    names, taken = [], set()
    for path in files:
        name, count = path.stem, 0
        while name in taken:
            count += 1
            name = f"{path.stem}-{count}"
        taken.add(name)
        names.append(name)
    return names
