"""Tiny generated datasets in the real on-disk layouts of the zero-shot benchmarks (docs/datasets.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Layout:
    subdir: str
    img_dir: str
    img_suffix: str
    seg_dir: str
    seg_suffix: str
    label_max: int  # labels 0..label_max written
    ignore: bool  # also write 255 pixels
    split_file: str | None = None
    city: str = ""  # Cityscapes keeps images in per-city folders


LAYOUTS = {
    "voc": Layout("VOCdevkit/VOC2012", "JPEGImages", ".jpg", "SegmentationClass", ".png", 20, True,
                  "ImageSets/Segmentation/val.txt"),
    "context": Layout("VOCdevkit/VOC2010", "JPEGImages", ".jpg", "SegmentationClassContext", ".png", 59, False,
                      "ImageSets/SegmentationContext/val.txt"),
    "coco_stuff164k": Layout("coco_stuff164k", "images/val2017", ".jpg", "annotations/val2017",
                             "_labelTrainIds.png", 170, True),
    "cityscapes": Layout("cityscapes", "leftImg8bit/val", "_leftImg8bit.png", "gtFine/val",
                         "_gtFine_labelTrainIds.png", 18, True, city="frankfurt"),
    "ade20k": Layout("ADEChallengeData2016", "images/validation", ".jpg", "annotations/validation", ".png", 150,
                     False),
}
# the COCO-Object labels live beside COCO-Stuff's, converted by tools/convert_coco_object.py
COCO_OBJECT_SUFFIX = "_instanceTrainIds.png"


def _blocks(rng, height, width, label_max, ignore):
    label = np.full((height, width), int(rng.integers(0, label_max + 1)), dtype=np.uint8)
    for _ in range(4):
        y, x = int(rng.integers(0, height - 40)), int(rng.integers(0, width - 40))
        block_h, block_w = int(rng.integers(20, 60)), int(rng.integers(20, 80))
        label[y : y + block_h, x : x + block_w] = int(rng.integers(0, label_max + 1))
    if ignore:
        label[:2] = 255
    return label


def write_layout(data_root: Path, name: str, num_images: int = 2, seed: int = 0) -> list[str]:
    """Write images + label PNGs (+ split file) for one layout under ``data_root``; returns the image ids."""
    layout = LAYOUTS[name]
    rng = np.random.default_rng(seed)
    root = data_root / layout.subdir
    img_dir, seg_dir = root / layout.img_dir / layout.city, root / layout.seg_dir / layout.city
    img_dir.mkdir(parents=True, exist_ok=True)
    seg_dir.mkdir(parents=True, exist_ok=True)
    ids = []
    for index in range(num_images):
        height, width = int(rng.integers(100, 160)), int(rng.integers(170, 260))
        label = _blocks(rng, height, width, layout.label_max, layout.ignore)
        image = (rng.integers(0, 255, size=(1, 1, 3)) + label[..., None].astype(int) * 7) % 255
        image_id = f"{layout.city}_{index:06d}_000019" if layout.city else f"img_{index:06d}"
        Image.fromarray(image.astype(np.uint8)).save(img_dir / f"{image_id}{layout.img_suffix}")
        Image.fromarray(label).save(seg_dir / f"{image_id}{layout.seg_suffix}")
        if name == "coco_stuff164k":
            things = np.where(label < 80, label + 1, 0).astype(np.uint8)  # COCO-Object: stuff and 255 -> 0
            Image.fromarray(things).save(seg_dir / f"{image_id}{COCO_OBJECT_SUFFIX}")
        ids.append(image_id)
    if layout.split_file:
        (root / layout.split_file).parent.mkdir(parents=True, exist_ok=True)
        (root / layout.split_file).write_text("\n".join(ids) + "\n")
    return ids
