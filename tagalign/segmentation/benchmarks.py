"""The zero-shot benchmarks: where each dataset lives, how it is read, and the paper's number for it.

Data layout and preparation for every key: docs/datasets.md (anchors are the keys).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingDatasetError

logger = logging.getLogger(__name__)

__all__ = ["BENCHMARKS", "EXTRA_BENCHMARKS", "LARGE_BENCHMARKS", "PAPER_MIOU", "PUBLISHED_MIOU", "BenchmarkSpec",
           "published_reference", "resolve_data_root"]


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
    load_image: str = "LoadRGBImageFromFile"
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

#: The large vocabularies (training-free spec §8), in CAT-Seg's converted layout: ``--dataset all+large`` adds them.
LARGE_BENCHMARKS: dict[str, BenchmarkSpec] = {
    "pc459": BenchmarkSpec("pc459", "PascalContext459Dataset", "VOCdevkit/VOC2010", "JPEGImages",
                           "annotations_detectron2/pc459_val", load_annotations="LoadPC459Annotations",
                           ignore_index=459),
    "ade847": BenchmarkSpec("ade847", "ADE20K847Dataset", "ADE20K_2021_17_01", "images_detectron2/validation",
                            "annotations_detectron2/validation", load_annotations="LoadADE847Annotations",
                            ignore_index=65535),
}

#: Not part of ``--dataset all``: the generated shapes world of the quickstart (Pascal VOC layout). ``shapes``:
#: each shape by its colour, background ignored; ``shapes_bg``: each object by its shape, background scored.
EXTRA_BENCHMARKS: dict[str, BenchmarkSpec] = {
    "shapes": BenchmarkSpec("shapes", "ShapesDataset", "shapes_voc", "JPEGImages", "SegmentationClass",
                            ann_file="ImageSets/Segmentation/val.txt", short_side=224),
    "shapes_bg": BenchmarkSpec("shapes_bg", "ShapesWithBackgroundDataset", "shapes_bg_voc", "JPEGImages",
                               "SegmentationClass", ann_file="ImageSets/Segmentation/val.txt", short_side=224),
}

#: TagAlign paper, Table 1, no post-processing.
PAPER_MIOU = {"voc": 55.3, "context": 32.7, "coco_object": 35.1, "imagenets50": 52.8, "imagenets300": 34.4,
              "voc20": 83.8, "context59": 35.1, "coco_stuff": 23.1, "cityscapes": 27.3, "ade20k": 16.9}
WITH_BACKGROUND = ("voc", "context", "coco_object", "imagenets50", "imagenets300")

_PUBLISHED_KEYS = ("voc", "context", "coco_object", "voc20", "context59", "coco_stuff", "cityscapes", "ade20k")


def _row(*values: float | None) -> dict[str, float]:
    return {key: value for key, value in zip(_PUBLISHED_KEYS, values) if value is not None}


#: Published ViT-B/16 mIoU of the training-free methods (training-free spec §9): (source, numbers). Third-party
#: numbers are marked; they come from other papers' tables, under those papers' protocols.
PUBLISHED_MIOU: dict[str, tuple[str, dict[str, float]]] = {
    "vanilla": ("CLIP, ClearCLIP's table (bg columns: ResCLIP, 3rd-party)",
                _row(16.2, 7.7, 5.5, 41.8, 9.2, 4.4, 5.5, 2.1)),
    "maskclip": ("MaskCLIP re-implemented, ClearCLIP's table (bg columns: ResCLIP, 3rd-party)",
                 _row(38.8, 23.6, 20.6, 74.9, 26.4, 16.4, 12.6, 9.8)),
    "sclip": ("SCLIP README, its default setup", _row(59.63, 31.74, 33.52, 81.54, 34.46, 22.77, 32.34, 16.45)),
    "clearclip": ("ClearCLIP README (bg columns: ResCLIP, 3rd-party)",
                  _row(51.8, 32.6, 33.0, 80.9, 35.9, 23.9, 30.0, 16.7)),
    "naclip": ("NACLIP README, PAMR on", _row(64.07, 34.99, 36.19, 83.03, 38.35, 25.69, 38.27, 19.05)),
    "proxyclip": ("ProxyCLIP + DINO ViT-B/8 (Trident's table, 3rd-party; its README gives only averages)",
                  _row(61.3, 35.3, 37.5, 80.3, 39.1, 26.5, 38.1, 20.2)),
    "resclip": ("ResCLIP on NACLIP, its README's figure (figs/main_results_wo.png)",
                _row(61.1, 33.5, 35.0, 86.0, 36.8, 24.7, 35.9, 18.0)),
    "resclip_sclip": ("ResCLIP on SCLIP, its README's figure", _row(60.7, 32.9, 34.3, 84.6, 35.8, 23.9, 34.4, 17.6)),
    "resclip_clearclip": ("ResCLIP on ClearCLIP, its README's figure",
                          _row(59.0, 32.9, 34.0, 87.1, 36.4, 24.3, 34.5, 17.8)),
    "cass": ("CASS, its README's figure (with its object-level text adjustment)",
             _row(65.8, 36.7, 37.8, 87.8, 40.2, 26.7, 39.4, 20.4)),
    "trident": ("Trident, its README's figure (assets/data_result.png; whether with --sam_refine is unverified)",
                _row(67.1, 38.6, 41.1, 84.5, 42.2, 28.3, 42.9, 21.9)),
    "naclip_no_pamr": ("NACLIP without PAMR (ResCLIP and Trident, 3rd-party)",
                       _row(58.9, 32.2, 33.2, 79.7, 35.2, 23.3, 35.5, 17.4)),
    "clip_surgery": ("CLIP Surgery paper Table 6 (Context column: 59 or 60 unverified)",
                     _row(None, 29.3, None, None, None, 21.9, 31.4, None)),
    "tagalign": ("TagAlign paper Table 1", PAPER_MIOU),
}


def published_reference(encoder: str | None, trained: bool, pamr: bool, encoder_options: dict | None = None,
                        trident: bool = False) -> tuple[str, dict[str, float]] | None:
    """The published row to print beside a run: TagAlign's paper for a trained surgery projector, else the
    training-free method's own numbers (NACLIP's with or without PAMR, ResCLIP's on its base); None where nothing
    was published."""
    encoder = encoder or "surgery"
    if trained:
        return PUBLISHED_MIOU["tagalign"] if encoder == "surgery" else None
    if encoder == "naclip" and not pamr:
        return PUBLISHED_MIOU["naclip_no_pamr"]
    if trident:
        return PUBLISHED_MIOU["trident"]
    if encoder == "resclip" and (encoder_options or {}).get("base", "naclip") != "naclip":
        return PUBLISHED_MIOU.get(f"resclip_{encoder_options['base']}")
    return PUBLISHED_MIOU.get(encoder)


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
