"""Image bytes -> RGB uint8 at the target size.

Catalog and scraped images come in every mode; this turns each into what SVD expects, or raises ``ImageError``
with a cause a user can act on. Sizes are checked from the header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

BACKGROUND = (255, 255, 255)


class ImageError(ValueError):
    """An image that cannot be used."""


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageError("file is empty")
    with warnings.catch_warnings():
        # Our own limit below is the one that applies; Pillow's hard stop only catches absurd headers.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError:
            raise ImageError(f"header claims more than the {max_pixels} pixel limit (images.max_pixels)") from None
        except UnidentifiedImageError:
            raise ImageError("not a readable image (unknown or corrupt format)") from None
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageError(f"not a readable image ({type(error).__name__}: {error})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} is more than the {max_pixels} pixel limit (images.max_pixels)")
    if width < 1 or height < 1:
        raise ImageError(f"{width}x{height} has no pixels")
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """First frame, EXIF orientation applied, alpha composited on white, 16-bit scaled down."""
    image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def fit(image: Image.Image, width: int, height: int, mode: str) -> Image.Image:
    """Fit to width x height: 'crop' fills and centre-crops, 'pad' fits inside on black, 'stretch' ignores aspect."""
    if mode == "stretch":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    if mode == "crop":
        return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
    if mode == "pad":
        return ImageOps.pad(image, (width, height), Image.Resampling.LANCZOS, color=(0, 0, 0))
    raise ValueError(f"unknown fit mode {mode!r}")


def load_image(data: bytes, width: int, height: int, mode: str, max_pixels: int) -> np.ndarray:
    """Decode and fit; returns an (height, width, 3) uint8 array."""
    image = _open(data, max_pixels)
    try:
        rgb = _to_rgb(image)
        fitted = fit(rgb, width, height, mode)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"cannot decode the image ({type(error).__name__}: {error})") from None
    return np.asarray(fitted, dtype=np.uint8)
