"""Datasets as float32 NCHW arrays in [0, 1], with integer labels where the dataset has them: what a dataset
is (Dataset), the embedded digits, folders of images, binarised data, and the one check of a dataset against
the model that is to train on it or be judged by it (check_for_model). The datasets by name, and the files of
those that can be downloaded, are twinvae.datasets'.

- digits: scikit-learn's 8x8 handwritten digits (embedded: no download), a fixed seeded split.
- folder: any directory of images (the first frame of each file), read by their true range into [0, 1]
  (read_images): 8-bit images over 255, 16-bit grey over 65535, float images when every value lies in
  [0, 1]; transparent pixels are composited on white; a mode that cannot be read exactly is refused.
Every missing, truncated or corrupt file is an error that says what was expected and where it looked.

Binarised data, the standard protocol for Bernoulli likelihoods (binarize): "dynamic" draws each training
batch as x ~ Bernoulli(pixel) from the run's 'binarize' stream, keyed by the training step, so both twins
and a resumed run see the same draws; "threshold" takes pixel > 1/2. The test set is binarised once, the
same way for every run and evaluation: dynamic from the 'binarize-test' stream of seed 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vae_core import layout, seeds
from vae_core.config import VAEConfig

BINARIZE = ("dynamic", "threshold")
BINARIZE_TEST_SEED = 0  # the one binarised test set that every run and evaluation of a dataset shares
# image shape of each named dataset (a folder's comes from the image size and channels asked for)
DATASET_SHAPES = {"digits": (1, 8, 8), "fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
DIGITS_TEST_FRACTION = 0.2
FOLDER_TEST_FRACTION = 0.1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# PIL modes read by their true range (read_images); every other mode is refused
EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "CMYK")  # opaque: PIL's own 8-bit convert and resize
ALPHA_MODES = ("LA", "PA", "RGBA")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
READ_MODES = EIGHT_BIT_MODES + ALPHA_MODES + SIXTEEN_BIT_MODES + ("I", "F")
LUMA = np.array([299, 587, 114]) / 1000  # ITU-R 601-2, the weights of PIL's convert("L")


class DataError(ValueError):
    """A dataset that cannot be found or read; the message names what was expected and where."""


@dataclass(frozen=True)
class Dataset:
    name: str
    train_x: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    train_y: np.ndarray | None  # (N,) int64 labels, or None for unlabelled data
    test_x: np.ndarray
    test_y: np.ndarray | None
    classes: tuple[str, ...] | None = None
    levels: int = 256  # the grey levels the values take, k / (levels - 1): 256 for 8-bit images; 0: off any grid

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.train_x.shape[1:])


# --- digits and folders -----------------------------------------------------------------------------------

def _split(n: int, fraction: float, seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    order = seeds.rng(seed, "data", step=step).permutation(n)
    n_test = int(round(n * fraction))
    return order[n_test:], order[:n_test]


def load_digits(seed: int = 0) -> Dataset:
    """1797 images (1, 8, 8), values 0-16 scaled to [0, 1], split by a fixed permutation from vae_core's
    'data' stream (seed 0 is the canonical split)."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ImportError("the digits dataset ships with scikit-learn: pip install 'twinvae[data]' "
                          "(or scikit-learn)") from None
    digits = sklearn_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    train, test = _split(len(images), DIGITS_TEST_FRACTION, seed, step=0)
    return Dataset("digits", images[train], labels[train], images[test], labels[test],
                   tuple(str(d) for d in range(10)), levels=17)


def load_folder(folder, image_size: int, channels: int = 1, seed: int = 0) -> Dataset:
    """Every image file under `folder`, resized to image_size x image_size, grey (1) or RGB (3)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"folder dataset: {folder} is not a directory")
    if channels not in (1, 3):
        raise DataError(f"folder dataset: channels must be 1 or 3, got {channels}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise DataError(f"folder dataset: --image-size must be a positive number of pixels, got {image_size!r}")
    paths = image_paths(folder)
    if len(paths) < 2:
        raise DataError(f"folder dataset: {folder} holds {len(paths)} image file(s) ({', '.join(IMAGE_SUFFIXES)})"
                        "; at least 2 are needed for a train/test split")
    try:
        images = read_images(paths, (channels, image_size, image_size))
    except DataError as err:
        raise DataError(f"folder dataset: {err}") from None
    train, test = _split(len(images), FOLDER_TEST_FRACTION, seed, step=0)
    return Dataset(f"folder:{folder}", images[train], None, images[test], None, None, grid_levels(images))


def grid_levels(images: np.ndarray) -> int:
    """The grey levels a batch's values lie on: 256 (8-bit, k / 255), 65536 (16-bit, k / 65535), or 0 where
    they lie on neither (float images, or resized ones that left a grid), which no discrete likelihood fits."""
    for levels in (256, 65536):
        scaled = images.astype(np.float64) * (levels - 1)
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-2):  # float32's rounding of k / 65535: 4e-3
            return levels
    return 0


def image_paths(folder: Path) -> list[Path]:
    """Every image file (IMAGE_SUFFIXES) under a folder, recursively, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_images(paths, image_shape: tuple[int, int, int]) -> np.ndarray:
    """Image files (the first frame of each) as one (N, C, H, W) float32 batch in [0, 1], each by its true
    range, grey (C=1) or RGB (C=3), resized to H x W (bicubic, PIL's default):
    - 8-bit ("1", "L", "P", "RGB", "CMYK") over 255, by PIL's own convert and resize, as always (colour to grey
      by PIL's ITU-R 601-2 luma, CMYK by PIL's exact 8-bit CMYK to RGB);
    - 16-bit grey ("I;16", "I;16B", "I;16L", "I;16N") over 65535. Mode "I" (32-bit integers) is read so only
      from a PNG, which holds at most 16 bits (older Pillows open 16-bit grey PNGs as "I"), with every value
      in 0..65535; any other "I" image (a 32-bit or signed 16-bit TIFF) has no known range and is refused.
      PIL itself reads 16-bit colour and grey-with-alpha PNGs at 8 bits (their high byte);
    - float ("F", a float TIFF) as it is, when every value is finite and lies in [0, 1]; refused otherwise;
    - transparency (alpha in "LA", "PA", "RGBA"; a palette's or a PNG's transparent colour, which PIL turns
      into alpha exactly) composited on white, in float: x * alpha + (1 - alpha).
    Images that are not 8-bit and opaque are converted and resized in float (colour to grey by the same luma
    weights, grey to RGB by replicating the channel; each channel resized as a PIL "F" image with the
    bicubic filter, its overshoot clipped to [0, 1] as PIL's 8-bit resize clips it to 0..255). Any other mode
    is refused. Refused too, before anything is allocated: a batch that cannot fit in memory
    (check_image_memory)."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = image_shape
    if c not in (1, 3):
        raise DataError(f"image files are read as grey (1 channel) or RGB (3), not {c} channels")
    check_image_memory(len(paths), image_shape)
    images = np.empty((len(paths), c, h, w), np.float32)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                images[i] = _image_array(image, path, image_shape)
        except Image.DecompressionBombError:
            raise DataError(f"{path} is larger than images are read here (more than "
                            f"{2 * Image.MAX_IMAGE_PIXELS} pixels, PIL's guard against decompression bombs): "
                            "shrink it first") from None
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"cannot read {path} as an image ({err})") from None
    return images


def check_image_memory(count: int, image_shape: tuple[int, int, int]) -> None:
    """Refuse images that cannot plausibly fit, before anything is allocated: the float32 batch and one copy
    of it (the train/test split, the noisy inputs of denoising) against the machine's physical memory (no
    check where the system does not say)."""
    c, h, w = image_shape
    needed = 2 * count * c * h * w * np.dtype(np.float32).itemsize
    memory = layout.physical_memory()
    if memory is not None and needed > memory:
        raise DataError(f"{count} image(s) of {c}x{h}x{w} need {needed:,} bytes as float32 (the batch and a "
                        f"copy), more than this machine's {memory:,} bytes of memory: choose a smaller "
                        "--image-size")


def _image_array(image, path, image_shape: tuple[int, int, int]) -> np.ndarray:
    """One open image as (C, H, W) float32 in [0, 1] (read_images): an 8-bit image by PIL's 8-bit convert and
    resize, as before (with alpha: composited on white first, in 8 bits); any other in float."""
    c, h, w = image_shape
    if image.mode not in READ_MODES:
        raise DataError(f"{path}: PIL opens it in mode {image.mode!r}, which is not read here (modes read: "
                        f"{', '.join(READ_MODES)}): save it in one of them")
    if image.mode == "PA" or (image.mode in ("L", "P", "RGB") and _transparent(image)):
        image = image.convert("RGBA")  # a palette's or a transparent colour's alpha, exactly
    if image.mode in ALPHA_MODES and not _opaque(image):
        image = _on_white_8_bit(image, path)
    if image.mode in EIGHT_BIT_MODES or image.mode in ALPHA_MODES:  # (opaque, where it has alpha)
        image = image.convert("L" if c == 1 else "RGB").resize((w, h))
        return np.asarray(image, np.float32).reshape(h, w, c).transpose(2, 0, 1) / np.float32(255)
    return _resize_float(_as_channels(_on_white(*_samples(image, path)), c), (h, w))


def _on_white_8_bit(image, path):
    """An 8-bit image with alpha composited on white (in float) and rounded back to its 8 bits, as PIL's "L"
    or "RGB": an 8-bit image stays one, on the k / 255 grid its levels are (Dataset.levels)."""
    from PIL import Image

    composited = np.round(_on_white(*_samples(image, path)) * 255).astype(np.uint8)
    grey = composited.shape[-1] == 1
    return Image.fromarray(composited[..., 0] if grey else composited, "L" if grey else "RGB")


def _transparent(image) -> bool:
    """Whether an image without alpha carries transparency: a transparent colour or palette entry (PNG's tRNS,
    GIF's), or a palette with alpha (Image.has_transparency_data, which Pillow 10.0 lacks)."""
    return "transparency" in image.info or (image.mode == "P" and image.palette.mode == "RGBA")


def _opaque(image) -> bool:
    return image.getchannel("A").getextrema() == (255, 255)


def _samples(image, path) -> tuple[np.ndarray, np.ndarray | None]:
    """The image's colour or grey as float64 (H, W, bands) in [0, 1] by its true range, and its alpha
    (H, W, 1) in [0, 1] or None: 8-bit with alpha, 16-bit grey (with a PNG's transparent level), float."""
    raw = np.asarray(image)
    values = raw.reshape(*raw.shape[:2], -1).astype(np.float64)
    if image.mode in ALPHA_MODES:
        return values[..., :-1] / 255, values[..., -1:] / 255
    alpha = None
    if "transparency" in image.info:  # a 16-bit PNG's transparent grey level (tRNS)
        alpha = (values != image.info["transparency"]).astype(np.float64)
    return values / _white(image, raw, path), alpha


def _white(image, raw: np.ndarray, path) -> int:
    """The value of white in a 16-bit or float image (read_images), refusing one whose range is unknown or
    that lies outside [0, 1]."""
    if image.mode in SIXTEEN_BIT_MODES:
        return 65535
    found = f"values in [{raw.min()}, {raw.max()}]"
    if image.mode == "I":
        if image.format == "PNG" and raw.min() >= 0 and raw.max() <= 65535:
            return 65535
        raise DataError(f"{path}: a 32-bit integer image (PIL mode 'I', {image.format}) with {found}: its range "
                        "is not known (mode 'I' is read only from 16-bit PNGs); save it as 16-bit grey, or as "
                        "float in [0, 1]")
    if not (np.isfinite(raw).all() and raw.min() >= 0 and raw.max() <= 1):
        raise DataError(f"{path}: a float image (PIL mode 'F') with {found}: float images are read when every "
                        "value is finite and lies in [0, 1]")
    return 1


def _on_white(values: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    return values if alpha is None else values * alpha + (1 - alpha)


def _as_channels(values: np.ndarray, channels: int) -> np.ndarray:
    """(H, W, bands) as (H, W, channels): colour to grey by the ITU-R 601-2 luma, grey to RGB replicated."""
    if values.shape[-1] == channels:
        return values
    return (values @ LUMA)[..., None] if channels == 1 else np.repeat(values, channels, axis=-1)


def _resize_float(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) in [0, 1] as (C, h, w) float32: each channel resized as a PIL float image with the bicubic
    filter (PIL's default resize, the 8-bit path's too), its overshoot clipped to [0, 1]; as it is at its size."""
    from PIL import Image

    h, w = size
    planes = values.astype(np.float32).transpose(2, 0, 1)
    if planes.shape[1:] == (h, w):
        return planes
    resized = [np.asarray(Image.fromarray(plane).resize((w, h), Image.Resampling.BICUBIC)) for plane in planes]
    return np.clip(np.stack(resized), 0, 1)


# --- binarised data ---------------------------------------------------------------------------------------

def binarize(images: np.ndarray, mode: str, seed: int, step: int, purpose: str = "binarize") -> np.ndarray:
    """The images as 0/1 in their dtype: "dynamic", x ~ Bernoulli(pixel), draw `step` of the seed's
    `purpose` stream (uniforms drawn in float64, so float32 and float64 images give the same draws);
    "threshold", pixel > 1/2."""
    if mode not in BINARIZE:
        raise ValueError(f"binarize must be one of {BINARIZE}, got {mode!r}")
    if mode == "threshold":
        return (images > 0.5).astype(images.dtype)
    return (seeds.rng(seed, purpose, step).random(images.shape) < images).astype(images.dtype)


def binarized(data: Dataset, mode: str) -> Dataset:
    """The dataset with its test set binarised once (dynamic: the 'binarize-test' stream of seed 0), and
    with "threshold" its training set too; a dynamic run binarises each training batch (binarize). Only
    grey-level images can be: a colour image's pixel is no probability of one binary value (binarize
    names a mode it does not know)."""
    channels = data.image_shape[0]
    if channels != 1:
        raise DataError(f"--binarize takes grey-level images (1 channel); the {data.name} images have "
                        f"{channels} channels")
    test_x = binarize(data.test_x, mode, BINARIZE_TEST_SEED, 0, "binarize-test")
    train_x = binarize(data.train_x, mode, 0, 0) if mode == "threshold" else data.train_x
    return replace(data, train_x=train_x, test_x=test_x, levels=2)


# --- the dataset against the model ------------------------------------------------------------------------

def check_classes(data: Dataset, num_classes: int, name: str) -> None:
    """A class-conditional model's data: labels in both splits, every one a class of the model."""
    if data.train_y is None or data.test_y is None:
        raise DataError(f"a class-conditional model (num_classes={num_classes}) needs labelled data; the {name} "
                        "dataset has no labels")
    top = int(max(data.train_y.max(), data.test_y.max()))
    if top >= num_classes:
        raise DataError(f"the {name} labels run from 0 to {top}: a conditional model of them needs num_classes "
                        f"{top + 1} (--num-classes {top + 1}), not {num_classes}")


def check_for_model(data: Dataset, config: VAEConfig, name: str) -> None:
    """That a dataset fits the model that is to train on it or be judged by it: the model's image shape
    (C, H, W) in both splits, and for a class-conditional model labels in both, each a class of the model
    (check_classes). `name`: the dataset as the command names it."""
    for split in ("train", "test"):
        shape = tuple(int(n) for n in getattr(data, f"{split}_x").shape[1:])
        if shape != config.image_shape:
            raise DataError(f"the {name} {split} images are {shape} (C, H, W), the model takes "
                            f"{config.image_shape}")
    if config.num_classes:
        check_classes(data, config.num_classes, name)
