"""One image decoder for every entry point: any mode Pillow opens becomes faithful 8-bit RGB, or a clear refusal.

Rules (``to_rgb``), applied after the EXIF orientation:
- ``RGB``: as is. ``L``: the grey value in each channel. ``1``: 0 or 255.
- ``I;16`` (and its byte orders): ``round(v / 257)``, so 0..65535 maps onto 0..255 (Pillow's ``convert`` would clip
  every value above 255 to white). ``I`` (32-bit integer, how older Pillows open 16-bit PNGs): the same rule when every
  value lies in 0..65535, refused otherwise. ``F`` (32-bit float): ``round(255 * v)`` when every value lies in
  [0, 1], refused otherwise (no scale can be guessed faithfully).
- Transparency (``LA``, ``RGBA``, ``PA``, ``P`` or ``L``/``RGB`` with a ``transparency`` entry): composited over
  :data:`BACKGROUND` (white, as the image shows on a web page): ``out = round(a * c + (1 - a) * bg)``,
  ``a = alpha / 255``.
- ``P`` without transparency, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's conversion to RGB.
Anything else is refused. :class:`ImageDecodeError` names the source and the mode.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["BACKGROUND", "ImageDecodeError", "decode_bytes", "open_rgb", "to_rgb"]

#: The colour transparent pixels are composited on.
BACKGROUND: tuple[int, int, int] = (255, 255, 255)
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_PILLOW_RGB = ("P", "CMYK", "YCbCr", "LAB", "HSV")


class ImageDecodeError(ValueError):
    """An image cannot be read, or its pixels cannot be turned into 8-bit RGB faithfully."""


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values.astype(np.uint8)[..., None], 3, axis=-1)


def _composite(rgb: np.ndarray, alpha: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    out = a * rgb.astype(np.float64) + (1.0 - a) * np.asarray(background, dtype=np.float64)
    return np.rint(out).astype(np.uint8)


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("LA", "RGBA", "PA", "La", "RGBa") or "transparency" in image.info


def to_rgb(image: Image.Image, source: str = "image", background: tuple[int, int, int] = BACKGROUND) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of an opened Pillow image by the rules of this module; ``source`` names it in errors."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return np.asarray(image, dtype=np.uint8).copy()
    if mode == "L" and "transparency" not in image.info:
        return _grey(np.asarray(image))
    if mode == "1":
        return _grey(np.asarray(image.convert("L")))
    if mode in _SIXTEEN_BIT or mode == "I":
        values = np.asarray(image).astype(np.int64)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageDecodeError(f"{source}: a 32-bit integer image (mode I) with values {values.min()}..."
                                   f"{values.max()}, outside 0..65535: no faithful 8-bit scale; convert it to 8 or "
                                   f"16 bits first")
        return _grey((values * 255 + 32767) // 65535)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
            raise ImageDecodeError(f"{source}: a 32-bit float image (mode F) with values outside [0, 1]: no faithful "
                                   f"8-bit scale; convert it to 8 bits first")
        return _grey(np.rint(values * 255))
    if _has_transparency(image):
        rgba = np.asarray(image.convert("RGBA"))
        return _composite(rgba[..., :3], rgba[..., 3], background)
    if mode in _PILLOW_RGB:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    raise ImageDecodeError(f"{source}: image mode {mode} is not supported (expected RGB, grey, palette, CMYK, "
                           f"16-bit or float grey, with or without transparency)")


def _decode(opener, source: str, background: tuple[int, int, int]) -> np.ndarray:
    try:
        with opener() as image:
            return to_rgb(image, source, background)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(f"refusing image '{source}': {err} Downscale it first (or raise "
                               f"PIL.Image.MAX_IMAGE_PIXELS if you trust it).") from err
    except UnidentifiedImageError as err:
        raise ImageDecodeError(f"cannot read image '{source}': not an image file in a format Pillow knows (or "
                               f"damaged)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"cannot read image '{source}': {err}") from err


def open_rgb(path: str | os.PathLike, background: tuple[int, int, int] = BACKGROUND) -> np.ndarray:
    """Decode an image file to ``[H, W, 3]`` uint8 RGB; every failure is an :class:`ImageDecodeError` naming it."""
    return _decode(lambda: Image.open(path), str(path), background)


def decode_bytes(data: bytes, source: str = "image", background: tuple[int, int, int] = BACKGROUND) -> np.ndarray:
    """Decode encoded image bytes (a shard member, an upload) to ``[H, W, 3]`` uint8 RGB."""
    return _decode(lambda: Image.open(io.BytesIO(data)), source, background)
