"""Binarised data and image files read by their true range (read_images), on small fixtures written here."""

import numpy as np
import pytest

from twinvae import data
from twinvae.data import DataError
from twinvae.datasets import load_dataset


def test_dynamic_binarization_draws_each_pixel_once_per_step():
    """x ~ Bernoulli(pixel): 0/1 values with the pixels' means, the same draws for the same seed and step
    in float32 and float64 (so both twins and a resumed run see them), other draws at another step."""
    images = np.full((2000, 1, 8, 8), 0.3, np.float32)
    images[:, :, 0, 0], images[:, :, 0, 1] = 0.0, 1.0
    drawn = data.binarize(images, "dynamic", seed=1, step=7)
    assert drawn.dtype == np.float32 and set(np.unique(drawn)) == {0.0, 1.0}
    assert np.all(drawn[:, :, 0, 0] == 0) and np.all(drawn[:, :, 0, 1] == 1)
    assert abs(drawn[:, :, 1:].mean() - 0.3) < 4 * np.sqrt(0.21 / drawn[:, :, 1:].size)
    np.testing.assert_array_equal(data.binarize(images.astype(np.float64), "dynamic", 1, 7), drawn)
    assert np.mean(data.binarize(images, "dynamic", 1, 8) != drawn) > 0.3
    assert np.mean(data.binarize(images, "dynamic", 2, 7) != drawn) > 0.3
    with pytest.raises(ValueError, match=r"binarize must be one of \('dynamic', 'threshold'\), got 'coin'"):
        data.binarize(images, "coin", 1, 7)


def test_a_binarized_dataset_shares_one_test_set_and_refuses_colour():
    digits = data.load_digits()
    dynamic, again = data.binarized(digits, "dynamic"), data.binarized(data.load_digits(), "dynamic")
    np.testing.assert_array_equal(dynamic.test_x, again.test_x)  # once, the same for every run
    assert set(np.unique(dynamic.test_x)) == {0.0, 1.0} and dynamic.train_x is digits.train_x
    threshold = data.binarized(digits, "threshold")
    np.testing.assert_array_equal(threshold.train_x, digits.train_x > 0.5)
    np.testing.assert_array_equal(threshold.test_x, digits.test_x > 0.5)
    colour = data.Dataset("rgb", np.zeros((4, 3, 8, 8), np.float32), None, np.zeros((2, 3, 8, 8), np.float32),
                          None)
    with pytest.raises(DataError, match=r"--binarize takes grey-level images \(1 channel\); the rgb images have "
                                        "3 channels"):
        data.binarized(colour, "dynamic")


# --- image files by their true range (read_images) ------------------------------------------------------------

def _read_one(path, channels=1, size=None):
    """The one image at `path` as (C, H, W), at its own size unless `size` (h, w) is given."""
    from PIL import Image

    with Image.open(path) as image:
        h, w = size or image.size[::-1]
    return data.read_images([path], (channels, h, w))[0]


def _on_white_level(value: int, alpha: int) -> int:
    """An 8-bit sample composited on white, (v a + 255 (255 - a)) / 255, rounded to its 8-bit level."""
    return round((value * alpha + 255 * (255 - alpha)) / 255)


def _on_white(value: int, alpha: int) -> np.float32:
    """That level as the loader gives it: an 8-bit image stays on the k / 255 grid."""
    return np.float32(_on_white_level(value, alpha)) / np.float32(255)


def _luma(r: int, g: int, b: int) -> np.float32:
    """PIL's 8-bit RGB -> L (ITU-R 601-2 in 16-bit fixed point, rounded), over 255."""
    return np.float32((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) / np.float32(255)


def test_8_bit_grey_over_255_and_resized_as_before(tmp_path):
    from PIL import Image

    pixels = np.array([[0, 1, 128, 255], [7, 64, 200, 254]], np.uint8)
    Image.fromarray(pixels).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(_read_one(tmp_path / "grey.png")[0], pixels / np.float32(255))
    resized = np.asarray(Image.fromarray(pixels).resize((3, 5)), np.float32) / np.float32(255)
    np.testing.assert_array_equal(_read_one(tmp_path / "grey.png", size=(5, 3))[0], resized)  # PIL's 8-bit path


def test_16_bit_grey_png_over_65535(tmp_path):
    from PIL import Image

    levels = np.array([[0, 1, 257, 65535], [1000, 32768, 65534, 2]], np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode == "I;16"  # how Pillow 13 opens a 16-bit grey PNG
    expected = levels.astype(np.float32) / np.float32(65535)
    np.testing.assert_array_equal(_read_one(tmp_path / "deep.png")[0], expected)
    np.testing.assert_array_equal(_read_one(tmp_path / "deep.png", channels=3), np.stack([expected] * 3))
    Image.fromarray(np.full((6, 6), 1000, np.uint16)).save(tmp_path / "flat.png")
    np.testing.assert_allclose(_read_one(tmp_path / "flat.png", size=(4, 4)), 1000 / 65535, rtol=1e-6)


def test_a_16_bit_png_that_pil_opens_as_mode_i(tmp_path, monkeypatch):
    """Older Pillows open a 16-bit grey PNG as 32-bit "I": read over 65535 all the same."""
    from PIL import Image, PngImagePlugin

    levels = np.array([[0, 1, 257, 65535]], np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    monkeypatch.setitem(PngImagePlugin._MODES, (16, 0), ("I", "I;16B"))
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode == "I"
    np.testing.assert_array_equal(_read_one(tmp_path / "deep.png")[0], levels / np.float32(65535))


def test_a_16_bit_png_with_a_transparent_level_is_composited_on_white(tmp_path):
    from PIL import Image

    Image.fromarray(np.array([[0, 7, 300]], np.uint16)).save(tmp_path / "clear.png", transparency=7)
    np.testing.assert_array_equal(_read_one(tmp_path / "clear.png")[0, 0], np.float32([0, 1, 300 / 65535]))


def test_a_32_bit_integer_tiff_is_refused(tmp_path):
    from PIL import Image

    Image.fromarray(np.array([[0, 70000]], np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(DataError, match=r"wide.tif: a 32-bit integer image \(PIL mode 'I', TIFF\) with values "
                                        r"in \[0, 70000\]: its range is not known"):
        _read_one(tmp_path / "wide.tif")


def test_float_tiff_in_0_1_as_it_is(tmp_path):
    from PIL import Image

    values = np.array([[0, 1e-7, 0.25, 1 / 3], [0.5, 0.999, 0.0625, 1]], np.float32)
    Image.fromarray(values).save(tmp_path / "float.tif")
    np.testing.assert_array_equal(_read_one(tmp_path / "float.tif")[0], values)
    np.testing.assert_array_equal(_read_one(tmp_path / "float.tif", channels=3), np.stack([values] * 3))


@pytest.mark.parametrize("values, found", [([[-0.5, 0.5], [0.25, 2.0]], r"\[-0.5, 2.0\]"),
                                           ([[0.0, np.nan], [0.5, 1.0]], r"\[.*nan.*\]"),
                                           ([[0.0, 0.5], [np.inf, 1.0]], r"\[0.0, inf\]")],
                         ids=["outside", "nan", "inf"])
def test_float_tiff_outside_0_1_is_refused(tmp_path, values, found):
    from PIL import Image

    Image.fromarray(np.array(values, np.float32)).save(tmp_path / "hdr.tif")
    with pytest.raises(DataError, match=rf"hdr.tif: a float image \(PIL mode 'F'\) with values in {found}: float "
                                        "images are read when every value is finite and lies in"):
        _read_one(tmp_path / "hdr.tif")


def _palette_image():
    from PIL import Image

    image = Image.new("P", (3, 1))
    image.putpalette([200, 100, 0, 0, 255, 0, 10, 20, 30])
    image.putdata([0, 1, 2])
    return image


def test_palette_png_by_its_colours(tmp_path):
    _palette_image().save(tmp_path / "palette.png")
    colours = np.float32([[200, 0, 10], [100, 255, 20], [0, 0, 30]]) / np.float32(255)
    np.testing.assert_array_equal(_read_one(tmp_path / "palette.png", channels=3)[:, 0], colours)


def test_palette_png_with_transparency_composited_on_white(tmp_path):
    _palette_image().save(tmp_path / "clear.png", transparency=1)
    rgb = _read_one(tmp_path / "clear.png", channels=3)[:, 0]
    np.testing.assert_array_equal(rgb[:, 1], [1, 1, 1])  # the transparent entry: white
    np.testing.assert_array_equal(rgb[:, 0], np.float32([200, 100, 0]) / np.float32(255))
    grey = _read_one(tmp_path / "clear.png")[0, 0]
    assert grey[1] == 1 and grey[2] == _luma(10, 20, 30)


def test_la_png_composited_on_white(tmp_path):
    from PIL import Image

    pixels = np.array([[[100, 128], [100, 0], [100, 255]]], np.uint8)
    Image.fromarray(pixels, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(_read_one(tmp_path / "la.png")[0, 0],
                                  [_on_white(100, 128), 1, np.float32(100) / np.float32(255)])
    resized = _read_one(tmp_path / "la.png", size=(2, 2))
    assert resized.dtype == np.float32 and resized.min() >= 0 and resized.max() <= 1


def test_rgba_png_composited_on_white(tmp_path):
    from PIL import Image

    pixels = np.array([[[200, 100, 0, 51], [1, 2, 3, 0]]], np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "rgba.png")
    rgb = _read_one(tmp_path / "rgba.png", channels=3)[:, 0]
    np.testing.assert_array_equal(rgb[:, 0], [_on_white(200, 51), _on_white(100, 51), _on_white(0, 51)])
    np.testing.assert_array_equal(rgb[:, 1], [1, 1, 1])
    grey = _read_one(tmp_path / "rgba.png")[0, 0, 0]
    assert grey == _luma(*(_on_white_level(v, 51) for v in (200, 100, 0)))


def test_an_opaque_rgba_png_is_read_as_its_rgb(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(3).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    Image.fromarray(pixels, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(pixels[..., :3]).save(tmp_path / "rgb.png")
    for channels in (1, 3):
        np.testing.assert_array_equal(_read_one(tmp_path / "rgba.png", channels, (4, 3)),
                                      _read_one(tmp_path / "rgb.png", channels, (4, 3)))


def test_pa_tiff_composited_on_white(tmp_path):
    from PIL import Image

    image = _palette_image().convert("PA")
    image.putalpha(Image.frombytes("L", (3, 1), bytes([255, 0, 51])))
    image.save(tmp_path / "pa.tif")
    rgb = _read_one(tmp_path / "pa.tif", channels=3)[:, 0]
    np.testing.assert_array_equal(rgb.T, [np.float32([200, 100, 0]) / np.float32(255), [1, 1, 1],
                                          [_on_white(10, 51), _on_white(20, 51), _on_white(30, 51)]])


def test_cmyk_tiff_by_pils_cmyk_to_rgb(tmp_path):
    from PIL import Image

    Image.frombytes("CMYK", (3, 1), bytes([0, 255, 0, 0, 0, 0, 0, 255, 51, 0, 0, 0])).save(tmp_path / "cmyk.tif")
    rgb = _read_one(tmp_path / "cmyk.tif", channels=3)[:, 0]
    np.testing.assert_array_equal(rgb.T, np.float32([[255, 0, 255], [0, 0, 0], [204, 255, 255]]) / np.float32(255))


def test_1_bit_png_as_0_and_1(tmp_path):
    from PIL import Image

    image = Image.new("1", (3, 2))
    image.putdata([1, 0, 1, 0, 0, 1])
    image.save(tmp_path / "bits.png")
    np.testing.assert_array_equal(_read_one(tmp_path / "bits.png")[0], [[1, 0, 1], [0, 0, 1]])


@pytest.mark.parametrize("mode", ["YCbCr", "LAB"])
def test_a_mode_not_read_exactly_is_refused(tmp_path, mode):
    from PIL import Image

    Image.new("RGB", (2, 2), (10, 20, 30)).convert(mode).save(tmp_path / "odd.tif")
    with pytest.raises(DataError, match=rf"odd.tif: PIL opens it in mode '{mode}', which is not read here "
                                        r"\(modes read: 1, L, P, RGB, CMYK, LA, PA, RGBA, I;16, .*, F\)"):
        _read_one(tmp_path / "odd.tif")


def _two_images(folder):
    from PIL import Image

    for name in ("a.png", "b.png"):
        Image.new("L", (4, 4)).save(folder / name)


def test_an_image_size_too_large_for_memory_is_refused_before_allocating(tmp_path, monkeypatch):
    _two_images(tmp_path)
    monkeypatch.setattr(data.layout, "physical_memory", lambda: 10_000)
    assert load_dataset("folder", tmp_path, image_size=16).image_shape == (1, 16, 16)  # 4,096 bytes fit
    with pytest.raises(DataError, match=r"folder dataset: 2 image\(s\) of 3x64x64 need 196,608 bytes as float32 "
                                        r"\(the batch and a copy\), more than this machine's 10,000 bytes of "
                                        "memory: choose a smaller --image-size"):
        load_dataset("folder", tmp_path, image_size=64, channels=3)
    monkeypatch.undo()
    if data.layout.physical_memory() is not None:  # 16 TB: no machine has it, and nothing is allocated
        with pytest.raises(DataError, match="need 16,000,000,000,000 bytes .* choose a smaller --image-size"):
            load_dataset("folder", tmp_path, image_size=1_000_000)


@pytest.mark.parametrize("size", [0, -3])
def test_an_image_size_below_1_is_refused(tmp_path, size):
    _two_images(tmp_path)
    with pytest.raises(DataError, match=rf"folder dataset: --image-size must be a positive number of pixels, "
                                        rf"got {size}"):
        load_dataset("folder", tmp_path, image_size=size)


def test_a_folders_levels_are_the_grid_its_values_lie_on(tmp_path):
    """8-bit images take 256 levels (with transparency too: composited in 8 bits), 16-bit ones 65536, float
    ones none (0): a discretized logistic, a mass on the data's levels, is then refused by the trainer."""
    from PIL import Image

    from twinvae.data import grid_levels, load_folder

    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (4, 4, 4), dtype=np.uint8), "RGBA").save(tmp_path / f"a{i}.png")
    assert load_folder(tmp_path, 4).levels == 256 and load_folder(tmp_path, 3, channels=3).levels == 256
    deep = rng.integers(0, 65536, (2, 1, 4, 4)).astype(np.float32) / np.float32(65535)
    assert grid_levels(deep) == 65536 and grid_levels(deep + np.float32(0.3 / 65535)) == 0
    assert grid_levels(rng.random((2, 1, 4, 4), dtype=np.float32)) == 0
