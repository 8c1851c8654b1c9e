"""Image decoding and fitting. No Ray."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from svdbatch.render.images import ImageError, load_image

LIMIT = 10_000_000


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def halves(width=200, height=100) -> Image.Image:
    """Left half red, right half blue."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
def test_fit_gives_target_size(mode):
    out = load_image(encode(halves()), 64, 64, mode, LIMIT)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8


def test_crop_keeps_centre_and_pad_adds_black_bars():
    cropped = load_image(encode(halves()), 64, 64, "crop", LIMIT)
    assert cropped[32, 0, 0] > 200 and cropped[32, 63, 2] > 200  # both halves visible, no bars
    padded = load_image(encode(halves()), 64, 64, "pad", LIMIT)
    assert padded[0, 32].sum() == 0 and padded[32, 5, 0] > 200  # bars top and bottom


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = encode(halves(200, 100), "JPEG", exif=exif.tobytes())
    out = load_image(data, 50, 100, "stretch", LIMIT)
    assert out[5, 25, 0] > 150 and out[95, 25, 2] > 150  # red on top, blue at the bottom once rotated


def test_alpha_is_composited_on_white_and_cmyk_and_grey_convert():
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert load_image(encode(rgba), 16, 16, "crop", LIMIT).min() == 255
    assert load_image(encode(Image.new("CMYK", (32, 32)), "JPEG"), 16, 16, "crop", LIMIT).shape == (16, 16, 3)
    assert load_image(encode(Image.new("L", (32, 32), 128)), 16, 16, "crop", LIMIT)[0, 0].tolist() == [128] * 3


def test_sixteen_bit_is_scaled_not_clipped():
    grey16 = Image.fromarray(np.full((32, 32), 65535, np.uint16))
    assert load_image(encode(grey16), 16, 16, "crop", LIMIT).min() == 255


@pytest.mark.parametrize(
    ("data", "cause"),
    [(b"", "empty"), (b"not an image at all", "not a readable image"), (encode(halves())[:60], "cannot decode")],
)
def test_bad_bytes_raise_image_error(data, cause):
    with pytest.raises(ImageError, match=cause):
        load_image(data, 64, 64, "crop", LIMIT)


def test_pixel_limit_rejects_before_decoding():
    with pytest.raises(ImageError, match="pixel limit"):
        load_image(encode(Image.new("RGB", (400, 300))), 64, 64, "crop", 100_000)
