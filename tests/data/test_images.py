"""Image files decoded for what they are: 8/16-bit, float, grey, alpha, EXIF; bad files named."""

import io

import numpy as np
import pytest
from PIL import Image

from npmaskrcnn.data.images import ImageError, read_image


def test_8bit_rgb_grey_and_rgba(tmp_path):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgb.png"), rgb.transpose(2, 0, 1) / 255,
                               rtol=1e-6)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (3, 2, 3) and grey.dtype == np.float32
    np.testing.assert_array_equal(grey[0], grey[2])
    rgba = np.concatenate([rgb, np.zeros((2, 3, 1), np.uint8)], axis=2)  # fully transparent
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png"), rgb.transpose(2, 0, 1) / 255,
                               rtol=1e-6)  # alpha dropped, colours kept


def test_16bit_png_is_scaled_not_saturated(tmp_path):
    values = np.array([[0, 257, 32768], [40000, 65280, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    image = read_image(tmp_path / "deep.png")
    np.testing.assert_allclose(image[1], values / 65535.0, rtol=1e-6)
    assert 0.45 < image.mean() < 0.65  # convert("RGB") made it (nearly) all white


def test_32bit_int_image_in_16bit_range_and_out_of_it(tmp_path):
    values = np.array([[0, 1000], [30000, 65535]], np.int32)
    Image.fromarray(values, mode="I").save(tmp_path / "int.tif")
    np.testing.assert_allclose(read_image(tmp_path / "int.tif")[0], values / 65535.0, rtol=1e-6)
    Image.fromarray(values * 4, mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(ImageError, match=r"wide.tif: 32-bit integer image with values in "
                                         r"\[0, 262140\]"):
        read_image(tmp_path / "wide.tif")


def test_float_images_in_unit_range_are_read_others_refused(tmp_path):
    values = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "unit.tif")
    np.testing.assert_allclose(read_image(tmp_path / "unit.tif")[2], values)  # not black
    Image.fromarray(values * 255, mode="F").save(tmp_path / "bytes.tif")
    with pytest.raises(ImageError, match=r"bytes.tif: float image with values in \[0, 255\]"):
        read_image(tmp_path / "bytes.tif")
    Image.fromarray(np.full((2, 2), np.nan, np.float32), mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(ImageError, match="nan.tif: float image with non-finite values"):
        read_image(tmp_path / "nan.tif")


def test_exif_orientation_only_when_asked(tmp_path):
    pixels = np.zeros((2, 4, 3), np.uint8)
    pixels[0, 0] = 255  # a white pixel at the top left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    Image.fromarray(pixels).save(tmp_path / "photo.png", exif=exif)
    assert read_image(tmp_path / "photo.png").shape == (3, 2, 4)
    upright = read_image(tmp_path / "photo.png", exif_orientation=True)
    assert upright.shape == (3, 4, 2) and upright[0, 0, 1] == 1.0  # now at the top right


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ImageError, match="missing.png: image file not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match=f"{tmp_path.name}: is a folder"):
        read_image(tmp_path)
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match="text.png: cannot decode image: not a format"):
        read_image(tmp_path / "text.png")
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buffer, format="PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[:60])
    with pytest.raises(ImageError, match=r"cut.png: cannot decode image \(truncated"):
        read_image(tmp_path / "cut.png")
