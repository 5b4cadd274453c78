import numpy as np
import pytest
from PIL import Image

from twinvae.data import DataError, read_images
from twinvae.denoising import add_noise, image_files, psnr, unique_names


def test_add_noise_is_seeded_clipped_and_keeps_the_dtype():
    x = np.full((3, 1, 4, 4), 0.5, np.float32)
    a, b = add_noise(x, 0.3, seed=1, step=7), add_noise(x, 0.3, seed=1, step=7)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, add_noise(x, 0.3, seed=1, step=8))
    assert a.min() >= 0 and a.max() <= 1 and np.std(a) > 0.2
    wide = add_noise(x, 5.0, seed=0, step=0)
    assert wide.min() == 0 and wide.max() == 1
    # float64 draws the same noise, up to the float32 rounding
    assert np.max(np.abs(add_noise(x.astype(np.float64), 0.3, 1, 7) - a)) < 1e-6
    assert np.array_equal(add_noise(x, 0.0, 0, 0), x)
    for bad in (-0.1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="sigma"):
            add_noise(x, bad, 0, 0)


def test_psnr():
    clean = np.zeros((2, 1, 2, 2))
    noisy = clean + np.array([0.1, 0.01])[:, None, None, None]
    np.testing.assert_allclose(psnr(noisy, clean), [20.0, 40.0])
    assert psnr(clean, clean)[0] == np.inf
    with pytest.raises(ValueError, match="shape"):
        psnr(clean[:1], clean)


def test_image_files_and_read_images(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((10, 12, 3), 255, np.uint8)).save(tmp_path / "a" / "x.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "x.jpg")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    files = image_files([tmp_path / "a", tmp_path / "x.jpg"])
    assert [p.name for p in files] == ["x.png", "x.jpg"] and unique_names(files) == ["x", "x-1"]
    images = read_images(files, (1, 8, 6))
    assert images.shape == (2, 1, 8, 6) and images.dtype == np.float32
    assert images[0].min() == 1.0 and images[1].max() == 0.0
    assert read_images(files, (3, 4, 4)).shape == (2, 3, 4, 4)
    with pytest.raises(DataError, match="does not exist"):
        image_files([tmp_path / "missing.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        image_files([tmp_path / "empty"])
    with pytest.raises(DataError, match="notes.txt"):
        read_images([tmp_path / "a" / "notes.txt"], (1, 8, 8))
    with pytest.raises(DataError, match="2 channels"):
        read_images(files, (2, 8, 8))
