"""The zero-shot benchmarks: where each dataset lives, how it is read, and the paper's number for it.

Data layout and preparation for every key: docs/datasets.md (anchors are the keys).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["BENCHMARKS", "EXTRA_BENCHMARKS", "PAPER_MIOU", "BenchmarkSpec", "MissingDatasetError", "resolve_data_root"]


@dataclass(frozen=True)
class BenchmarkSpec:
    key: str
    dataset_type: str  # registered mmseg dataset class
    subdir: str  # default location under --data-root
    img_path: str
    seg_map_path: str
    ann_file: str = ""  # split list relative to the dataset root ("" = every image in img_path)
    short_side: int = 448
    long_side: int = 2048
    load_image: str = "LoadImageFromFile"
    load_annotations: str = "LoadAnnotations"
    ignore_index: int = 255

    @property
    def env_var(self) -> str:
        return f"TAGALIGN_DATA_{self.key.upper()}"


_VOC = dict(subdir="VOCdevkit/VOC2012", img_path="JPEGImages", seg_map_path="SegmentationClass",
            ann_file="ImageSets/Segmentation/val.txt")
_CONTEXT = dict(subdir="VOCdevkit/VOC2010", img_path="JPEGImages", seg_map_path="SegmentationClassContext",
                ann_file="ImageSets/SegmentationContext/val.txt")
_COCO = dict(subdir="coco_stuff164k", img_path="images/val2017", seg_map_path="annotations/val2017")

BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.key: spec
    for spec in [
        BenchmarkSpec("voc", "PascalVOCDataset", **_VOC),
        BenchmarkSpec("context", "PascalContextDataset", **_CONTEXT),
        BenchmarkSpec("coco_object", "COCOObjectDataset", **_COCO),
        BenchmarkSpec("voc20", "PascalVOC20Dataset", **_VOC),
        BenchmarkSpec("context59", "PascalContextDataset59", **_CONTEXT),
        BenchmarkSpec("coco_stuff", "COCOStuffDataset", **_COCO),
        BenchmarkSpec("cityscapes", "CityscapesDataset", "cityscapes", "leftImg8bit/val", "gtFine/val"),
        BenchmarkSpec("ade20k", "ADE20KDataset", "ADEChallengeData2016", "images/validation",
                      "annotations/validation"),
        *[
            BenchmarkSpec(f"imagenets{n}", f"ImageNetS{n}Dataset", f"ImageNetS{n}", "validation",
                          "validation-segmentation", short_side=256 if n == 919 else 448,
                          long_side=1024 if n == 919 else 2048,  # the reference's img_scale=(1024, 256) for 919
                          load_image="LoadImageNetSImageFromFile", load_annotations="LoadImageNetSAnnotations",
                          ignore_index=1000)
            for n in (50, 300, 919)
        ],
    ]
}

#: Not part of ``--dataset all``: the generated shapes world of the quickstart (Pascal VOC layout).
EXTRA_BENCHMARKS: dict[str, BenchmarkSpec] = {
    "shapes": BenchmarkSpec("shapes", "ShapesDataset", "shapes_voc", "JPEGImages", "SegmentationClass",
                            ann_file="ImageSets/Segmentation/val.txt", short_side=224),
}

#: TagAlign paper, Table 1, no post-processing.
PAPER_MIOU = {"voc": 55.3, "context": 32.7, "coco_object": 35.1, "imagenets50": 52.8, "imagenets300": 34.4,
              "voc20": 83.8, "context59": 35.1, "coco_stuff": 23.1, "cityscapes": 27.3, "ade20k": 16.9}
WITH_BACKGROUND = ("voc", "context", "coco_object", "imagenets50", "imagenets300")


class MissingDatasetError(FileNotFoundError):
    """A benchmark's files are not where they were expected."""


def _missing(spec: BenchmarkSpec, root: Path) -> list[str]:
    expected = [root / spec.img_path, root / spec.seg_map_path] + ([root / spec.ann_file] if spec.ann_file else [])
    return [str(p) for p in expected if not p.exists()]


def resolve_data_root(spec: BenchmarkSpec, data_root: str | os.PathLike | None) -> Path:
    """The dataset root: ``$TAGALIGN_DATA_<KEY>``, else ``<data_root or $TAGALIGN_DATA or ./data>/<subdir>``, or
    ``data_root`` itself when it is the dataset's own root (mmseg's convention, e.g. ``data/VOCdevkit/VOC2012``).

    Raises :class:`MissingDatasetError` naming the expected paths and the documentation section.
    """
    if os.environ.get(spec.env_var):
        candidates = [Path(os.environ[spec.env_var])]
    else:
        parent = Path(data_root or os.environ.get("TAGALIGN_DATA", "data"))
        candidates = [parent / spec.subdir, parent]
    root = next((c for c in candidates if not _missing(spec, c)), None)
    if root is None:
        root = candidates[0]
        raise MissingDatasetError(
            f"dataset '{spec.key}' not found: missing {', '.join(_missing(spec, root))}. Expected the layout of "
            f"docs/datasets.md#{spec.key} under {root}"
            f"{f' or {candidates[1]}' if len(candidates) > 1 else ''} (set --data-root to the folder holding "
            f"{spec.subdir} or to {spec.subdir} itself, or {spec.env_var} for this dataset alone)."
        )
    if spec.ann_file and not any(line.strip() for line in (root / spec.ann_file).read_text().splitlines()):
        raise MissingDatasetError(f"dataset '{spec.key}': the split file {root / spec.ann_file} lists no image")
    logger.info("dataset '%s': using %s", spec.key, root)
    return root
