"""Datasets as float32 NCHW arrays in [0, 1], with integer labels where the dataset has them.

- digits: scikit-learn's 8x8 handwritten digits (embedded: no download), a fixed seeded split.
- fashion-mnist, mnist: IDX files, gzipped or not, from --data-dir, $TWINVAE_DATA, the Debian package's
  folder, or downloaded (checksum-verified, written atomically) where the network allows.
- cifar10: the python batches, read with an unpickler that accepts only numpy arrays, lists and strings.
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

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vae_core import layout, seeds
from vae_core.checkpoint import atomic_write_bytes

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "folder")
BINARIZE = ("dynamic", "threshold")
BINARIZE_TEST_SEED = 0  # the one binarised test set that every run and evaluation of a dataset shares
# image shape of each named dataset (a folder's comes from the image size and channels asked for)
DATASET_SHAPES = {"digits": (1, 8, 8), "fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
DIGITS_TEST_FRACTION = 0.2
FOLDER_TEST_FRACTION = 0.1
NUMPY_2 = int(np.__version__.split(".")[0]) >= 2
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


# --- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------------------

IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
IDX_SOURCES = {  # mirrors and the published MD5 of each gzipped file
    "fashion-mnist": {
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "md5": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        "debian": "/usr/share/datasets/fashion-mnist",
        "classes": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"),
    },
    "mnist": {
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/",),
        "md5": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        "debian": None,
        "classes": tuple(str(d) for d in range(10)),
    },
}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped or not) with `ndim` dimensions."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: corrupt or truncated gzip ({err})") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path}: not an IDX file of unsigned bytes (expected magic 0x0000080{ndim})")
    if raw[3] != ndim:
        raise DataError(f"{path}: an IDX file with {raw[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX data of shape {dims} needs {expected} bytes, the file holds "
                        f"{len(raw) - header} (truncated or corrupt)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _search_dirs(name: str, data_dir) -> list[Path]:
    dirs = []
    if data_dir:
        dirs += [Path(data_dir), Path(data_dir) / name]
    if os.environ.get("TWINVAE_DATA"):
        dirs += [Path(os.environ["TWINVAE_DATA"]), Path(os.environ["TWINVAE_DATA"]) / name]
    debian = IDX_SOURCES.get(name, {}).get("debian")
    if debian:
        dirs.append(Path(debian))
    return dirs


def _cache_dir(name: str, data_dir) -> Path:
    if data_dir:
        return Path(data_dir)
    root = os.environ.get("TWINVAE_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "twinvae")
    return Path(root) / name


def _find(filename: str, dirs: list[Path]) -> Path | None:
    for folder in dirs:
        for candidate in (folder / filename, folder / f"{filename}.gz"):
            if candidate.is_file():
                return candidate
    return None


def download(url: str, target: Path, md5: str, timeout: float = 60.0) -> Path:
    """Fetch url into target, verified against md5 before it is written (atomically)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as err:
        raise DataError(f"could not download {url}: {err}") from None
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if digest != md5:
        raise DataError(f"download of {url} has MD5 {digest}, expected {md5} (corrupt or altered); "
                        "nothing was written")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data)
    return target


def load_idx(name: str, data_dir=None, download_missing: bool = True) -> Dataset:
    source = IDX_SOURCES[name]
    dirs = _search_dirs(name, data_dir)
    arrays = {}
    for key, filename in IDX_FILES.items():
        path = _find(filename, dirs)
        if path is None and download_missing:
            path = _download_first(source, f"{filename}.gz", _cache_dir(name, data_dir), dirs)
        if path is None:
            raise DataError(f"{name}: {filename}[.gz] not found in {', '.join(map(str, dirs)) or 'no folder'} "
                            "(pass --data-dir or set $TWINVAE_DATA; downloading is off)")
        arrays[key] = read_idx(path, ndim=3 if key.endswith("_x") else 1)
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise DataError(f"{name}: {len(arrays[f'{split}_x'])} {split} images but "
                            f"{len(arrays[f'{split}_y'])} labels")
    return Dataset(name, _to_float(arrays["train_x"][:, None]), arrays["train_y"].astype(np.int64),
                   _to_float(arrays["test_x"][:, None]), arrays["test_y"].astype(np.int64), source["classes"])


def _download_first(source: dict, filename: str, cache: Path, searched: list[Path]) -> Path:
    errors = []
    for mirror in source["mirrors"]:
        try:
            return download(mirror + filename, cache / filename, source["md5"][filename])
        except DataError as err:
            errors.append(str(err))
    raise DataError(f"{filename} not found in {', '.join(map(str, searched)) or 'no folder'} and not "
                    f"downloadable: {'; '.join(errors)}")


def _to_float(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0).astype(np.float32)


# --- CIFAR-10 ---------------------------------------------------------------------------------------------

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts, strings and numbers; refuses every other global, so a
    malicious batch file cannot run code. (_codecs.encode rebuilds bytes in protocol-2 pickles that
    Python 3 wrote.)"""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only arrays, lists and strings")
        if NUMPY_2:  # numpy 2 renamed numpy.core to numpy._core; the batches were pickled before that
            module = module.replace("numpy.core.", "numpy._core.")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({err})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (expected a dict, got {type(batch).__name__})")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072)")
    if not isinstance(labels, list) or len(labels) != len(data):
        raise DataError(f"{path}: 'labels' must be a list of {len(data)} ints")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, np.int64)


def load_cifar10(data_dir=None, download_missing: bool = True) -> Dataset:
    dirs = [d / CIFAR10_FOLDER for d in _search_dirs("cifar10", data_dir)] + _search_dirs("cifar10", data_dir)
    folder = next((d for d in dirs if (d / "test_batch").is_file()), None)
    if folder is None and download_missing:
        folder = _download_cifar10(_cache_dir("cifar10", data_dir))
    if folder is None:
        raise DataError(f"cifar10: {CIFAR10_FOLDER}/test_batch not found in {', '.join(map(str, dirs))} "
                        "(pass --data-dir or set $TWINVAE_DATA; downloading is off)")
    splits = {}
    for split, names in CIFAR10_BATCHES.items():
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(f"cifar10: {folder} lacks {missing}")
        parts = [read_cifar_batch(folder / n) for n in names]
        splits[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return Dataset("cifar10", _to_float(splits["train"][0]), splits["train"][1], _to_float(splits["test"][0]),
                   splits["test"][1], CIFAR10_CLASSES)


def _download_cifar10(cache: Path) -> Path:
    archive = download(CIFAR10_URL, cache / "cifar-10-python.tar.gz", CIFAR10_MD5)
    wanted = {f"{CIFAR10_FOLDER}/{n}" for names in CIFAR10_BATCHES.values() for n in names}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():  # only the known batch files, never a path from the archive
            if member.name in wanted and member.isfile():
                data = tar.extractfile(member).read()
                target = cache / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, data)
    return cache / CIFAR10_FOLDER


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


def data_files(folder) -> list[Path]:
    """The files under a --data-dir that a dataset reads: image files, IDX files (gzipped or not), CIFAR-10's
    batches and archive; what a command must not write over."""
    names = {*IDX_FILES.values(), *(f"{n}.gz" for n in IDX_FILES.values()),
             *(n for batches in CIFAR10_BATCHES.values() for n in batches), Path(CIFAR10_URL).name}
    return sorted(p for p in Path(folder).rglob("*")
                  if (p.suffix.lower() in IMAGE_SUFFIXES or p.name in names) and p.is_file())


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


def load_dataset(name: str, data_dir=None, *, download_missing: bool = True, image_size: int | None = None,
                 channels: int = 1, seed: int = 0) -> Dataset:
    """Load one of DATASETS; for 'folder', data_dir is the image folder and image_size is required."""
    if name == "digits":
        return load_digits(seed)
    if name in IDX_SOURCES:
        return load_idx(name, data_dir, download_missing)
    if name == "cifar10":
        return load_cifar10(data_dir, download_missing)
    if name == "folder":
        if not data_dir or image_size is None:
            raise DataError("the folder dataset needs --data-dir (the image folder) and --image-size")
        return load_folder(data_dir, image_size, channels, seed)
    raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")



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
