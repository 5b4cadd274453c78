"""Every dataset by name on small fixtures written here; downloads against a local HTTP server."""

import gzip
import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading

import numpy as np
import pytest

from twinvae import datasets
from twinvae.data import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes holding `array` (what read_idx reads; other tests write datasets with it)."""
    return b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_idx_set(folder, n_train=6, n_test=4, gz=True, rng=np.random.default_rng(0)):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_y": rng.integers(0, 10, n_train, dtype=np.uint8),
              "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_y": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for key, filename in datasets.IDX_FILES.items():
        raw = idx_bytes(arrays[key])
        (folder / (filename + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("TWINVAE_DATA", raising=False)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_idx_dataset_from_data_dir(tmp_path, name, gz):
    arrays = _write_idx_set(tmp_path, gz=gz)
    ds = datasets.load_dataset(name, tmp_path, download_missing=False)
    assert ds.image_shape == (1, 28, 28) and ds.train_x.dtype == np.float32
    np.testing.assert_array_equal(ds.train_x[:, 0], arrays["train_x"] / np.float32(255))
    np.testing.assert_array_equal(ds.test_y, arrays["test_y"])
    assert ds.train_x.min() >= 0 and ds.train_x.max() <= 1 and len(ds.classes) == 10


def test_idx_dataset_from_env_subfolder(tmp_path, monkeypatch):
    _write_idx_set(tmp_path / "mnist")
    monkeypatch.setenv("TWINVAE_DATA", str(tmp_path))
    assert len(datasets.load_dataset("mnist", download_missing=False).train_x) == 6


def test_missing_files_say_where_they_looked(tmp_path):
    with pytest.raises(DataError, match=rf"train-images-idx3-ubyte\[.gz\] not found in {tmp_path}"):
        datasets.load_dataset("mnist", tmp_path, download_missing=False)


@pytest.mark.parametrize("corrupt, words", [
    (lambda raw: raw[:-5], "IDX data of shape (4, 28, 28) needs 3136 bytes, the file holds 3131"),
    (lambda raw: b"\x00\x00\x09\x03" + raw[4:], "not an IDX file of unsigned bytes"),
    (lambda raw: raw[:2], "not an IDX file"),
    (lambda raw: gzip.compress(raw)[:30], "corrupt or truncated gzip"),
])
def test_corrupt_idx_files(tmp_path, corrupt, words):
    _write_idx_set(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match=str(path)) as info:
        datasets.load_dataset("mnist", tmp_path, download_missing=False)
    assert words in str(info.value)


def test_label_count_mismatch(tmp_path):
    _write_idx_set(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DataError, match="6 train images but 5 labels"):
        datasets.load_dataset("mnist", tmp_path, download_missing=False)


class _Server:
    """A local HTTP server on 127.0.0.1 serving a dict of path -> bytes (404 otherwise)."""

    def __init__(self, files):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                if body is not None:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def start(files):
        servers.append(_Server(files))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_download_verifies_checksums(tmp_path, server, monkeypatch):
    source_dir = tmp_path / "source"
    _write_idx_set(source_dir)
    files = {f"/{p.name}": p.read_bytes() for p in source_dir.iterdir()}
    local = server(files)
    md5 = {name.lstrip("/"): hashlib.md5(body).hexdigest() for name, body in files.items()}
    monkeypatch.setitem(datasets.IDX_SOURCES, "mnist", {**datasets.IDX_SOURCES["mnist"], "mirrors": (local.url,),
                                                     "md5": md5})
    cache = tmp_path / "cache"
    ds = datasets.load_dataset("mnist", cache)
    assert len(ds.test_x) == 4 and sorted(p.name for p in cache.iterdir()) == sorted(md5)
    # an altered file on the server: refused, and nothing written
    bad = dict(md5, **{"t10k-labels-idx1-ubyte.gz": "0" * 32})
    monkeypatch.setitem(datasets.IDX_SOURCES, "mnist", {**datasets.IDX_SOURCES["mnist"], "mirrors": (local.url,),
                                                     "md5": bad})
    other = tmp_path / "other"
    with pytest.raises(DataError, match="has MD5 .* expected 0{32} .*nothing was written"):
        datasets.load_dataset("mnist", other)
    assert not (other / "t10k-labels-idx1-ubyte.gz").exists()


def test_download_failure_names_the_url(tmp_path, server, monkeypatch):
    local = server({})
    monkeypatch.setitem(datasets.IDX_SOURCES, "mnist", {**datasets.IDX_SOURCES["mnist"], "mirrors": (local.url,)})
    url = f"{local.url}train-images-idx3-ubyte.gz"
    with pytest.raises(DataError, match=rf"could not download {url}: HTTP Error 404"):
        datasets.load_dataset("mnist", tmp_path)


def _cifar_batch(n, rng):
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(v) for v in
                                                                               rng.integers(0, 10, n)],
            b"batch_label": b"fixture"}


def _write_cifar(folder, rng=np.random.default_rng(1)):
    folder.mkdir(parents=True, exist_ok=True)
    for names in datasets.CIFAR10_BATCHES.values():
        for name in names:
            (folder / name).write_bytes(pickle.dumps(_cifar_batch(3, rng), protocol=2))


def test_cifar10_from_batches(tmp_path):
    _write_cifar(tmp_path / datasets.CIFAR10_FOLDER)
    ds = datasets.load_dataset("cifar10", tmp_path, download_missing=False)
    assert ds.image_shape == (3, 32, 32) and len(ds.train_x) == 15 and len(ds.test_x) == 3
    assert ds.train_y.dtype == np.int64 and ds.classes[0] == "airplane"


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar10_unpickler_refuses_code(tmp_path):
    folder = tmp_path / datasets.CIFAR10_FOLDER
    _write_cifar(folder)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Evil()}))
    with pytest.raises(DataError, match="refusing to load posix.system"):
        datasets.load_dataset("cifar10", tmp_path, download_missing=False)


def test_cifar10_bad_batch_contents(tmp_path):
    folder = tmp_path / datasets.CIFAR10_FOLDER
    _write_cifar(folder)
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"data_batch_2: 'data' must be a uint8 array of shape \(N, 3072\)"):
        datasets.load_dataset("cifar10", tmp_path, download_missing=False)
    (folder / "data_batch_2").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="data_batch_2: not a readable CIFAR-10 batch"):
        datasets.load_dataset("cifar10", tmp_path, download_missing=False)


def test_cifar10_download_extracts_only_the_batches(tmp_path, server, monkeypatch):
    source = tmp_path / "src"
    _write_cifar(source / datasets.CIFAR10_FOLDER)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / datasets.CIFAR10_FOLDER, arcname=datasets.CIFAR10_FOLDER)
        evil = tarfile.TarInfo("../escaped.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    archive = buffer.getvalue()
    local = server({"/cifar.tar.gz": archive})
    monkeypatch.setattr(datasets, "CIFAR10_URL", local.url + "cifar.tar.gz")
    monkeypatch.setattr(datasets, "CIFAR10_MD5", hashlib.md5(archive).hexdigest())
    cache = tmp_path / "cache"
    ds = datasets.load_dataset("cifar10", cache)
    assert len(ds.train_x) == 15 and not (tmp_path / "escaped.txt").exists()


def test_folder_dataset(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    (tmp_path / "sub").mkdir()
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "sub" / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = datasets.load_dataset("folder", tmp_path, image_size=16, channels=3)
    assert ds.image_shape == (3, 16, 16) and len(ds.train_x) + len(ds.test_x) == 10 and ds.train_y is None
    grey = datasets.load_dataset("folder", tmp_path, image_size=8)
    assert grey.image_shape == (1, 8, 8)
    (tmp_path / "sub" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="cannot read .*broken.png"):
        datasets.load_dataset("folder", tmp_path, image_size=8)
    with pytest.raises(DataError, match="needs --data-dir .* and --image-size"):
        datasets.load_dataset("folder", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds 0 image file"):
        datasets.load_dataset("folder", tmp_path / "empty", image_size=8)
    with pytest.raises(DataError, match="is not a directory"):
        datasets.load_dataset("folder", tmp_path / "missing", image_size=8)


def test_digits_is_embedded_and_split_deterministically():
    a, b = datasets.load_dataset("digits"), datasets.load_dataset("digits")
    assert a.image_shape == (1, 8, 8) and len(a.train_x) + len(a.test_x) == 1797
    np.testing.assert_array_equal(a.test_x, b.test_x)
    assert a.train_x.max() == 1.0 and a.train_x.min() == 0.0


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        datasets.load_dataset("imagenet")
