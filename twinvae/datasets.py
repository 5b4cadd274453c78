"""The datasets by name (load_dataset's table), and the files of those that can be downloaded.

- digits: scikit-learn's 8x8 handwritten digits (twinvae.data.load_digits).
- fashion-mnist, mnist: IDX files, gzipped or not, from --data-dir, $TWINVAE_DATA, the Debian package's
  folder, or downloaded (checksum-verified, written atomically) where the network allows.
- cifar10: the python batches, read with an unpickler that accepts only numpy arrays, lists and strings.
- folder: any directory of images (twinvae.data.load_folder).
Every missing, truncated or corrupt file is an error that says what was expected and where it looked.
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
from pathlib import Path

import numpy as np

from twinvae.data import IMAGE_SUFFIXES, DataError, Dataset, load_digits, load_folder
from vae_core.checkpoint import atomic_write_bytes

NUMPY_2 = int(np.__version__.split(".")[0]) >= 2


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


# --- by name --------------------------------------------------------------------------------------------------

def _load_folder(data_dir, image_size: int | None, channels: int, seed: int, **_) -> Dataset:
    if not data_dir or image_size is None:
        raise DataError("the folder dataset needs --data-dir (the image folder) and --image-size")
    return load_folder(data_dir, image_size, channels, seed)


LOADERS = {  # name -> loader of load_dataset's keyword arguments (each takes those it needs)
    "digits": lambda seed, **_: load_digits(seed),
    "fashion-mnist": lambda data_dir, download_missing, **_: load_idx("fashion-mnist", data_dir, download_missing),
    "mnist": lambda data_dir, download_missing, **_: load_idx("mnist", data_dir, download_missing),
    "cifar10": lambda data_dir, download_missing, **_: load_cifar10(data_dir, download_missing),
    "folder": _load_folder,
}
DATASETS = tuple(LOADERS)


def load_dataset(name: str, data_dir=None, *, download_missing: bool = True, image_size: int | None = None,
                 channels: int = 1, seed: int = 0) -> Dataset:
    """Load one of DATASETS; for 'folder', data_dir is the image folder and image_size is required."""
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return LOADERS[name](data_dir=data_dir, download_missing=download_missing, image_size=image_size,
                         channels=channels, seed=seed)

def data_files(folder) -> list[Path]:
    """The files under a --data-dir that a dataset reads: image files, IDX files (gzipped or not), CIFAR-10's
    batches and archive; what a command must not write over."""
    names = {*IDX_FILES.values(), *(f"{n}.gz" for n in IDX_FILES.values()),
             *(n for batches in CIFAR10_BATCHES.values() for n in batches), Path(CIFAR10_URL).name}
    return sorted(p for p in Path(folder).rglob("*")
                  if (p.suffix.lower() in IMAGE_SUFFIXES or p.name in names) and p.is_file())
