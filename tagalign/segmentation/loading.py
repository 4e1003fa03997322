"""The evaluation pipeline's image loader: mmcv's own for 8-bit RGB and grey files (the reference's decode, byte for
byte), :mod:`tagalign.data.decode` for every other mode (16-bit and float grey, palette, transparency, CMYK)."""

from __future__ import annotations

from mmcv.transforms import LoadImageFromFile
from mmseg.registry import TRANSFORMS
from PIL import Image

from ..data.decode import ImageDecodeError, open_rgb

__all__ = ["LoadRGBImageFromFile"]

_MMCV_MODES = ("RGB", "L")


@TRANSFORMS.register_module(force=True)
class LoadRGBImageFromFile(LoadImageFromFile):
    """``LoadImageFromFile`` (BGR uint8 ``img``) that decodes any image mode faithfully, or names the file."""

    def transform(self, results: dict) -> dict:
        path = results["img_path"]
        try:
            with Image.open(path) as image:
                plain = image.mode in _MMCV_MODES and "transparency" not in image.info and \
                    image.getexif().get(0x0112, 1) == 1
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageDecodeError(f"cannot read image '{path}': {err}") from err
        if plain:
            return super().transform(results)
        image = open_rgb(path)[..., ::-1].copy()  # mmcv's channel order
        if self.to_float32:
            image = image.astype("float32")
        results["img"] = image
        results["img_shape"] = results["ori_shape"] = image.shape[:2]
        return results
