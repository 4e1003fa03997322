"""The large-vocabulary benchmarks PASCAL-Context-459 and ADE20K-847 (training-free spec §8), as mmseg datasets.

Both keep CAT-Seg's converted layout: 16-bit TIFF label maps beside the images. Their labels do not fit a byte, so
they are read unchanged (mmseg's ``LoadAnnotations`` casts to uint8: 16-bit labels would wrap silently) and scored
with the dataset's own ignore value, never mmseg's default 255, which is a real class in both (PC459's "monkey",
ADE847's "pier"):

* ``pc459``: labels 0..458 (``LabelMap - 1``); 459 is unlabelled (CAT-Seg's ignore label), and so is 65535, what a 0
  in ``LabelMap`` becomes in uint16.
* ``ade847``: labels 0..846, 65535 unlabelled (every ADE20K object outside the 847 classes).

The split is the set of label maps present (CAT-Seg writes only the validation maps; its converters list no split).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

from .large_vocab_classes import ADE847, PC459

__all__ = ["ADE20K847Dataset", "ADE847_IGNORE", "LoadADE847Annotations", "LoadPC459Annotations",
           "LoadUnchangedAnnotations", "PC459_IGNORE", "PascalContext459Dataset"]

PC459_IGNORE = 459
ADE847_IGNORE = 65535
UINT16_UNLABELLED = 65535


@TRANSFORMS.register_module(force=True)
class LoadUnchangedAnnotations(BaseTransform):
    """Read a label map with its own bit depth (8- or 16-bit PNG/TIFF) as int64; values in ``unlabelled`` become
    ``ignore_index``. A colour (RGB) map is refused, naming the file."""

    def __init__(self, ignore_index: int = 255, unlabelled: tuple[int, ...] = ()) -> None:
        self.ignore_index = ignore_index
        self.unlabelled = tuple(unlabelled)

    def transform(self, results: dict) -> dict:
        path = results["seg_map_path"]
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I;16", "I;16B", "I;16L", "I"):
                raise ValueError(f"{path}: expected a label map of class indices (8- or 16-bit, one channel), got a "
                                 f"{image.mode} image; the converters of docs/datasets.md write 16-bit TIFF")
            label = np.asarray(image).astype(np.int64)
        for value in self.unlabelled:
            label[label == value] = self.ignore_index
        results["gt_seg_map"] = label
        results.setdefault("seg_fields", []).append("gt_seg_map")
        return results


@TRANSFORMS.register_module(force=True)
class LoadPC459Annotations(LoadUnchangedAnnotations):
    """PC459 labels: 0..458; 459 and 65535 (a 0 in ``LabelMap``) unlabelled."""

    def __init__(self) -> None:
        super().__init__(PC459_IGNORE, unlabelled=(UINT16_UNLABELLED,))


@TRANSFORMS.register_module(force=True)
class LoadADE847Annotations(LoadUnchangedAnnotations):
    """ADE847 labels: 0..846 (255 is "pier"); 65535 unlabelled."""

    def __init__(self) -> None:
        super().__init__(ADE847_IGNORE)


class _LabelListedDataset(BaseSegDataset):
    """A split listed by its label maps (``ann_file`` empty): each map ``<stem><seg_map_suffix>`` needs its image
    ``<stem><img_suffix>``; a missing image is an error naming both paths."""

    def load_data_list(self) -> list[dict]:
        if self.ann_file:
            return super().load_data_list()
        img_dir, ann_dir = Path(self.data_prefix["img_path"]), Path(self.data_prefix["seg_map_path"])
        data = []
        for label in sorted(ann_dir.glob(f"*{self.seg_map_suffix}")):
            if label.name.startswith("."):
                continue
            image = img_dir / (label.name[: -len(self.seg_map_suffix)] + self.img_suffix)
            if not image.is_file():
                raise FileNotFoundError(f"{label}: its image {image} is missing")
            data.append(dict(img_path=str(image), seg_map_path=str(label), label_map=self.label_map,
                             reduce_zero_label=self.reduce_zero_label, seg_fields=[]))
        if not data:
            raise FileNotFoundError(f"no label maps (*{self.seg_map_suffix}) in {ann_dir}")
        return data


@DATASETS.register_module(force=True)
class PascalContext459Dataset(_LabelListedDataset):
    """PASCAL-Context with its full 459 classes (CAT-Seg's ``annotations_detectron2/pc459_val/*.tif``)."""

    METAINFO = dict(classes=PC459)

    def __init__(self, img_suffix=".jpg", seg_map_suffix=".tif", **kwargs) -> None:
        kwargs.setdefault("ignore_index", PC459_IGNORE)
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=False, **kwargs)


@DATASETS.register_module(force=True)
class ADE20K847Dataset(_LabelListedDataset):
    """ADE20K-Full's 847 classes (CAT-Seg's ``images_detectron2``/``annotations_detectron2`` validation split)."""

    METAINFO = dict(classes=ADE847)

    def __init__(self, img_suffix=".jpg", seg_map_suffix=".tif", **kwargs) -> None:
        kwargs.setdefault("ignore_index", ADE847_IGNORE)
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=False, **kwargs)
