"""Benchmarks mmseg 1.2.2 lacks, registered in mmseg's DATASETS registry (reference spec §6.3).

VOC20, COCO-Object and ImageNet-S 50/300/919 (with their loaders); Pascal Context 60/59, COCO-Stuff, Cityscapes and
ADE20K come from mmseg itself.
"""

from __future__ import annotations

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets import BaseSegDataset, COCOStuffDataset, PascalVOCDataset
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

from ..data.synthetic import EVAL_CLASSES, SHAPE_CLASSES
from .imagenets_classes import IMAGENETS50, IMAGENETS300, IMAGENETS919
from .loading import LoadRGBImageFromFile

__all__ = [
    "COCOObjectDataset",
    "CheckSegMap",
    "ImageNetS50Dataset",
    "ImageNetS300Dataset",
    "ImageNetS919Dataset",
    "LoadImageNetSAnnotations",
    "LoadImageNetSImageFromFile",
    "PascalVOC20Dataset",
    "ShapesDataset",
]


@DATASETS.register_module(force=True)
class PascalVOC20Dataset(BaseSegDataset):
    """Pascal VOC 2012 without the background class: background becomes ignore (reduce_zero_label)."""

    METAINFO = dict(classes=PascalVOCDataset.METAINFO["classes"][1:], palette=PascalVOCDataset.METAINFO["palette"][1:])

    def __init__(self, img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=True, **kwargs) -> None:
        super().__init__(
            img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=reduce_zero_label, **kwargs
        )


@DATASETS.register_module(force=True)
class COCOObjectDataset(BaseSegDataset):
    """COCO-Object: background + the 80 COCO thing classes, labels in ``*_instanceTrainIds.png``.

    Made from COCO-Stuff-164k by ``tools/convert_coco_object.py``: every stuff pixel and every unlabelled pixel is
    background, so nothing is ignored.
    """

    METAINFO = dict(
        classes=("background", *COCOStuffDataset.METAINFO["classes"][:80]),
        palette=[[0, 0, 0], *COCOStuffDataset.METAINFO["palette"][:80]],
    )

    def __init__(self, img_suffix=".jpg", seg_map_suffix="_instanceTrainIds.png", **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=False, **kwargs)


# ---------------------------------------------------------------------------------------------- ImageNet-S
IMAGENETS_IGNORE_INDEX = 1000
IMAGENETS_MAX_PIXELS = 1000 * 1000


@TRANSFORMS.register_module(force=True)
class LoadImageNetSImageFromFile(LoadRGBImageFromFile):
    """Load an ImageNet-S image; one with more than 1000x1000 pixels is first resized (bilinear) so its long side is
    1000, and that size becomes ``ori_shape`` (the prediction is later nearest-resized to the ground truth)."""

    def __init__(self, downsample_large_image: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.downsample_large_image = downsample_large_image

    def transform(self, results: dict) -> dict:
        results = super().transform(results)
        height, width = results["img"].shape[:2]
        results["file_shape"] = (height, width)  # the ground truth's size; ori_shape may become the downsampled one
        if self.downsample_large_image and height * width > IMAGENETS_MAX_PIXELS:
            size = (int(1000 * width / height), 1000) if height > width else (1000, int(1000 * height / width))
            results["img"] = mmcv.imresize(results["img"], size, interpolation="bilinear")
            results["img_shape"] = results["ori_shape"] = results["img"].shape[:2]
        return results


@TRANSFORMS.register_module(force=True)
class LoadImageNetSAnnotations(BaseTransform):
    """ImageNet-S ground truth: an RGB PNG whose label is ``G * 256 + R`` (919 classes do not fit a byte);
    0 is "others" (scored as background), 1000 is ignored."""

    def transform(self, results: dict) -> dict:
        path = results["seg_map_path"]
        with Image.open(path) as png:
            rgb = np.asarray(png.convert("RGB"), dtype=np.int64)
        results["gt_seg_map"] = rgb[..., 1] * 256 + rgb[..., 0]
        results.setdefault("seg_fields", []).append("gt_seg_map")
        return results


@TRANSFORMS.register_module(force=True)
class CheckSegMap(BaseTransform):
    """Refuse a ground-truth map that does not belong to its image or its dataset, naming the file.

    It must be one channel of class indices, the size of its image (ImageNet-S: the image before its large-image
    downsampling), with values below ``num_classes`` or equal to ``ignore_index`` (after reduce_zero_label).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        label, path = results["gt_seg_map"], results.get("seg_map_path")
        image_shape = tuple(results.get("file_shape", results["ori_shape"]))[:2]
        if label.ndim != 2:
            raise ValueError(f"{path}: expected a single-channel map of class indices (a P or L mode PNG); got "
                             f"shape {label.shape}: a colour-coded (RGB) label image? Convert it to class indices "
                             f"(docs/datasets.md).")
        if tuple(label.shape) != image_shape:
            raise ValueError(f"{path}: the label is {label.shape[0]}x{label.shape[1]} (HxW) but its image "
                             f"{results.get('img_path')} is {image_shape[0]}x{image_shape[1]}: a label of another "
                             f"image, or a transposed one.")
        values = np.unique(label)
        bad = values[(values >= self.num_classes) & (values != self.ignore_index)]
        if len(bad):
            raise ValueError(f"{path}: label values {bad[:10].tolist()} are neither a class index "
                             f"(0..{self.num_classes - 1}) nor the ignore index {self.ignore_index}.")
        return results


class _ImageNetSDataset(BaseSegDataset):
    def __init__(self, img_suffix=".JPEG", seg_map_suffix=".png", **kwargs) -> None:
        kwargs.setdefault("ignore_index", IMAGENETS_IGNORE_INDEX)
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=False, **kwargs)


@DATASETS.register_module(force=True)
class ImageNetS50Dataset(_ImageNetSDataset):
    METAINFO = dict(classes=IMAGENETS50)


@DATASETS.register_module(force=True)
class ImageNetS300Dataset(_ImageNetSDataset):
    METAINFO = dict(classes=IMAGENETS300)


@DATASETS.register_module(force=True)
class ImageNetS919Dataset(_ImageNetSDataset):
    METAINFO = dict(classes=IMAGENETS919)


@DATASETS.register_module(force=True)
class ShapesDataset(BaseSegDataset):
    """The generated shapes world's evaluation split (Pascal VOC layout): each shape labelled by its colour;
    background (0) is ignored, as in the paper's without-background benchmarks."""

    METAINFO = dict(classes=EVAL_CLASSES)

    def __init__(self, img_suffix=".jpg", seg_map_suffix=".png", **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=True, **kwargs)


@DATASETS.register_module(force=True)
class ShapesWithBackgroundDataset(BaseSegDataset):
    """The generated shapes world's with-background split (Pascal VOC layout): each object labelled by its shape,
    background (0) scored as a class, as in the paper's with-background benchmarks."""

    METAINFO = dict(classes=SHAPE_CLASSES)

    def __init__(self, img_suffix=".jpg", seg_map_suffix=".png", **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=False, **kwargs)
