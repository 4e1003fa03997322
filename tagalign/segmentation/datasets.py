"""Benchmarks mmseg 1.2.2 lacks, registered in mmseg's DATASETS registry (reference spec §6.3).

VOC20 and COCO-Object; Pascal Context 60/59, COCO-Stuff, Cityscapes and ADE20K come from mmseg itself.
"""

from __future__ import annotations

from mmseg.datasets import BaseSegDataset, COCOStuffDataset, PascalVOCDataset
from mmseg.registry import DATASETS

__all__ = ["COCOObjectDataset", "PascalVOC20Dataset"]


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
