"""Image grids as PNG files (Pillow), and the latent-space operations the application commands share."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vae_core.checkpoint import atomic_write_bytes


def grid(images: np.ndarray, ncol: int | None = None, pad: int = 2, scale: int | None = None) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one (H', W', C) uint8 image, ncol columns, white padding."""
    images = np.asarray(images, np.float64)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN or inf")
    n, c, h, w = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    canvas = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c))
    for i, image in enumerate(images):
        r, col = divmod(i, ncol)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = \
            image.transpose(1, 2, 0)
    scale = scale or max(1, 56 // h)  # small images (8x8 digits) are enlarged to stay visible
    canvas = np.repeat(np.repeat(canvas, scale, 0), scale, 1)
    return (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8)


def save_png(path, images: np.ndarray, ncol: int | None = None, scale: int | None = None, pad: int = 2) -> Path:
    """Write a grid of images to a PNG, atomically (one image at its own size: scale=1, pad=0)."""
    import io

    from PIL import Image

    pixels = grid(images, ncol, pad=pad, scale=scale)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(steps, latent) points on the segment from a to b."""
    return a[None] + (b - a)[None] * t[:, None]


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(steps, latent) points on the great circle from a to b (norms interpolated linearly), which keeps
    the points at the radius where a Gaussian prior has its mass; falls back to lerp for parallel vectors."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return lerp(a, b, t)
    cos = np.clip(np.dot(a / na, b / nb), -1.0, 1.0)
    omega = math.acos(cos)
    if omega < 1e-6:
        return lerp(a, b, t)
    directions = (np.sin((1 - t)[:, None] * omega) * (a / na)[None]
                  + np.sin(t[:, None] * omega) * (b / nb)[None]) / math.sin(omega)
    return directions * ((1 - t) * na + t * nb)[:, None]
