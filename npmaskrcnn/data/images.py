"""Image files as model inputs: (3, H, W) float32 RGB in [0, 1], decoded for what they are.

``PIL.Image.convert("RGB")`` alone is wrong for two kinds of file: it saturates 16-bit
images (a 16-bit PNG opens in mode ``I;16`` with values up to 65535, and every value
above 255 becomes white) and it truncates float images (mode ``F``) to integers, so an
image in [0, 1] turns black. Here each mode is scaled by its own range:

=====================  ===========================================================
PIL mode               read as
=====================  ===========================================================
``I;16`` (and B/L/N)   16-bit grey: value / 65535
``I`` (32-bit int)     value / 65535 when every value lies in [0, 65535] (how Pillow
                       opens some 16-bit files), refused otherwise
``F`` (32-bit float)   as is when every value is finite and in [0, 1], refused
                       otherwise (no guess at what range was meant)
anything else          ``convert("RGB")`` (8-bit grey, palette, RGBA, CMYK, ...;
                       48-bit RGB PNGs are reduced to 8 bits per channel by Pillow),
                       value / 255
=====================  ===========================================================

Grey images become three equal channels; an alpha channel is dropped. Host-only NumPy code.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_UINT16_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageError(ValueError):
    """An image file cannot be used; ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def _pixels(im: Image.Image, path) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] of an opened image (see the module table)."""
    if im.mode in _UINT16_MODES:
        grey = np.asarray(im).astype(np.float32) / 65535.0
    elif im.mode == "I":
        values = np.asarray(im)
        lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ImageError(path, f"32-bit integer image with values in [{lo}, {hi}]; "
                                   "only 8- and 16-bit images are read (convert it to PNG)")
        grey = values.astype(np.float32) / 65535.0
    elif im.mode == "F":
        grey = np.asarray(im, dtype=np.float32)
        finite = np.isfinite(grey).all()
        lo, hi = (float(grey.min()), float(grey.max())) if grey.size else (0.0, 0.0)
        if not finite or lo < 0.0 or hi > 1.0:
            shown = "non-finite values" if not finite else f"values in [{lo:g}, {hi:g}]"
            raise ImageError(path, f"float image with {shown}; float images are read as "
                                   "intensities in [0, 1] (convert it to an 8-bit PNG or JPEG)")
    else:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return np.repeat(grey[:, :, None], 3, axis=2)


def read_image(path: str | os.PathLike, exif_orientation: bool = False) -> np.ndarray:
    """Read an image file as (3, H, W) float32 RGB in [0, 1] (see the module docstring).

    Args:
        path: the file.
        exif_orientation: turn the image upright as its EXIF orientation tag says (what a
            photo viewer shows). Off for datasets: COCO annotations are in the stored pixels.
    Returns:
        (3, H, W) float32, C-contiguous.
    Raises:
        ImageError: missing file, not an image, a truncated or undecodable file, too many
            pixels for Pillow, or pixel values outside the ranges above; the message names
            the file.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if exif_orientation:
                    im = ImageOps.exif_transpose(im)
                pixels = _pixels(im, path)
    except FileNotFoundError as err:
        raise ImageError(path, "image file not found") from err
    except IsADirectoryError as err:
        raise ImageError(path, "is a folder, not an image file") from err
    except PermissionError as err:
        raise ImageError(path, "cannot be read: permission denied") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(path, f"too many pixels for Pillow to open safely ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageError(path, "cannot decode image: not a format Pillow can read") from err
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageError):
            raise
        raise ImageError(path, f"cannot decode image (truncated or damaged?): {err}") from err
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
