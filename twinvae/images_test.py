import numpy as np
import pytest

from twinvae.images import grid, lerp, save_png, slerp


def test_grid_layout_and_padding():
    images = np.zeros((5, 1, 4, 6))
    images[4] = 1.0
    pixels = grid(images, ncol=3, pad=2, scale=1)
    assert pixels.shape == (2 * 6 + 2, 3 * 8 + 2, 1) and pixels.dtype == np.uint8
    assert pixels[0, 0, 0] == 255 and pixels[2, 2, 0] == 0  # padding white, first image black
    assert pixels[8, 10, 0] == 255  # the fifth image (row 1, column 1) is white


def test_grid_rejects_bad_images():
    with pytest.raises(ValueError, match="NaN or inf"):
        grid(np.full((1, 1, 2, 2), np.nan))
    with pytest.raises(ValueError, match=r"must be \(N, C, H, W\)"):
        grid(np.zeros((2, 2)))


def test_save_png_round_trip(tmp_path):
    from PIL import Image

    path = save_png(tmp_path / "g.png", np.random.default_rng(0).random((4, 3, 8, 8)), ncol=2, scale=2)
    with Image.open(path) as image:
        assert image.size == (2 * (8 + 2) * 2 + 4, 2 * (8 + 2) * 2 + 4) and image.mode == "RGB"


def test_interpolation_paths():
    a, b = np.array([3.0, 0.0]), np.array([0.0, 4.0])
    t = np.linspace(0, 1, 5)
    for path in (lerp(a, b, t), slerp(a, b, t)):
        np.testing.assert_allclose(path[0], a, atol=1e-12)
        np.testing.assert_allclose(path[-1], b, atol=1e-12)
    # spherical: norms go linearly from |a| to |b|; linear dips through the chord
    np.testing.assert_allclose(np.linalg.norm(slerp(a, b, t), axis=1), [3, 3.25, 3.5, 3.75, 4])
    assert np.linalg.norm(lerp(a, b, t)[2]) < 3
    np.testing.assert_allclose(slerp(a, 2 * a, t), lerp(a, 2 * a, t))  # parallel: falls back to lerp
