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
    folder: str = ""  # Cityscapes keeps images in per-city folders, ImageNet-S in per-synset folders
    rgb_label: bool = False  # ImageNet-S: label = G * 256 + R, ignore = 1000
    large_first_image: bool = False  # ImageNet-S: one image over 1000x1000 pixels (downsampled on load)
    wide_last_image: bool = False  # a 1:6 image, so the long-side cap of the resize binds (ImageNet-S 919: 1024)


LAYOUTS = {
    "voc": Layout("VOCdevkit/VOC2012", "JPEGImages", ".jpg", "SegmentationClass", ".png", 20, True,
                  "ImageSets/Segmentation/val.txt"),
    "context": Layout("VOCdevkit/VOC2010", "JPEGImages", ".jpg", "SegmentationClassContext", ".png", 59, False,
                      "ImageSets/SegmentationContext/val.txt"),
    "coco_stuff164k": Layout("coco_stuff164k", "images/val2017", ".jpg", "annotations/val2017",
                             "_labelTrainIds.png", 170, True),
    "cityscapes": Layout("cityscapes", "leftImg8bit/val", "_leftImg8bit.png", "gtFine/val",
                         "_gtFine_labelTrainIds.png", 18, True, folder="frankfurt"),
    "ade20k": Layout("ADEChallengeData2016", "images/validation", ".jpg", "annotations/validation", ".png", 150,
                     False),
    **{
        f"imagenets{n}": Layout(f"ImageNetS{n}", "validation", ".JPEG", "validation-segmentation", ".png", n, True,
                                folder="n01443537", rgb_label=True, large_first_image=n == 50,
                                wide_last_image=n == 919)
        for n in (50, 300, 919)
    },
}
# the COCO-Object labels live beside COCO-Stuff's, converted by tools/convert_coco_object.py
COCO_OBJECT_SUFFIX = "_instanceTrainIds.png"


def _blocks(rng, height, width, label_max, ignore, ignore_value=255):
    label = np.full((height, width), int(rng.integers(0, label_max + 1)), dtype=np.int64)
    for _ in range(4):
        y, x = int(rng.integers(0, height - 40)), int(rng.integers(0, width - 40))
        block_h, block_w = int(rng.integers(20, 60)), int(rng.integers(20, 80))
        label[y : y + block_h, x : x + block_w] = int(rng.integers(0, label_max + 1))
    if ignore:
        label[:2] = ignore_value
    return label


#: Well-separated colours (channel levels 30/128/225, never all 128); each raw label of a layout gets one, so a test
#: model can read the ground truth back from the normalised pixels. Grey (128, 128, 128) paints ignored pixels.
PALETTE = [(r, g, b) for r in (30, 128, 225) for g in (30, 128, 225) for b in (30, 128, 225) if (r, g, b) != (128,) * 3]
IGNORE_COLOUR = (128, 128, 128)


def write_layout(data_root: Path, name: str, num_images: int = 2, seed: int = 0,
                 special_sizes: bool = True) -> dict[int, tuple[int, int, int]]:
    """Write images + label PNGs (+ split file) for one layout under ``data_root``.

    Each image paints every pixel in its raw label's palette colour (ignored pixels grey). Returns the palette:
    raw label -> RGB.
    """
    layout = LAYOUTS[name]
    rng = np.random.default_rng(seed)
    root = data_root / layout.subdir
    img_dir, seg_dir = root / layout.img_dir / layout.folder, root / layout.seg_dir / layout.folder
    img_dir.mkdir(parents=True, exist_ok=True)
    seg_dir.mkdir(parents=True, exist_ok=True)
    ignore_value = 1000 if layout.rgb_label else 255
    labels = []
    for index in range(num_images):
        height, width = int(rng.integers(100, 160)), int(rng.integers(170, 260))
        if special_sizes and layout.large_first_image and index == 0:
            height, width = 1010, 1100
        if special_sizes and layout.wide_last_image and index == num_images - 1:
            height, width = 100, 600
        labels.append(_blocks(rng, height, width, layout.label_max, layout.ignore, ignore_value))
    present = sorted({int(v) for label in labels for v in np.unique(label)} - {ignore_value})
    assert len(present) <= len(PALETTE)
    palette = dict(zip(present, PALETTE))
    ids = []
    for index, label in enumerate(labels):
        image = np.zeros((*label.shape, 3), dtype=np.uint8)
        image[:] = IGNORE_COLOUR
        for value, colour in palette.items():
            image[label == value] = colour
        if layout.folder == "frankfurt":
            image_id = f"frankfurt_{index:06d}_000019"
        elif layout.rgb_label:
            image_id = f"ILSVRC2012_val_{index + 1:08d}"
        else:
            image_id = f"img_{index:06d}"
        Image.fromarray(image).save(img_dir / f"{image_id}{layout.img_suffix}", quality=95, subsampling=0)
        if layout.rgb_label:
            encoded = np.stack([label % 256, label // 256, np.zeros_like(label)], axis=-1).astype(np.uint8)
            Image.fromarray(encoded).save(seg_dir / f"{image_id}{layout.seg_suffix}")
        else:
            Image.fromarray(label.astype(np.uint8)).save(seg_dir / f"{image_id}{layout.seg_suffix}")
        if name == "coco_stuff164k":
            things = np.where(label < 80, label + 1, 0).astype(np.uint8)  # COCO-Object: stuff and 255 -> 0
            Image.fromarray(things).save(seg_dir / f"{image_id}{COCO_OBJECT_SUFFIX}")
        ids.append(image_id)
    if layout.split_file:
        (root / layout.split_file).parent.mkdir(parents=True, exist_ok=True)
        (root / layout.split_file).write_text("\n".join(ids) + "\n")
    return palette


# CAT-Seg's converted layouts of the large vocabularies: 16-bit TIFF labels, listed by the label maps present.
# (subdir, image dir, label dir, labels drawn: the highest class, 255 (a class in both), unlabelled values)
LARGE_LAYOUTS = {
    "pc459": ("VOCdevkit/VOC2010", "JPEGImages", "annotations_detectron2/pc459_val", (0, 7, 255, 458), (459, 65535)),
    "ade847": ("ADE20K_2021_17_01", "images_detectron2/validation", "annotations_detectron2/validation",
               (0, 12, 255, 846), (65535,)),
}


def write_large_vocab_layout(data_root: Path, key: str, num_images: int = 2,
                             seed: int = 0) -> dict[int, tuple[int, int, int]]:
    """Images + uint16 TIFF labels for ``pc459`` or ``ade847``: blocks of the drawn classes and of every unlabelled
    value (painted grey); returns the palette class -> RGB."""
    subdir, img_dir, seg_dir, classes, unlabelled = LARGE_LAYOUTS[key]
    rng = np.random.default_rng(seed)
    palette = dict(zip(classes, PALETTE))
    for folder in (img_dir, seg_dir):
        (data_root / subdir / folder).mkdir(parents=True, exist_ok=True)
    for index in range(num_images):
        height, width = int(rng.integers(100, 160)), int(rng.integers(170, 260))
        label = np.full((height, width), classes[index % len(classes)], dtype=np.int64)
        values = [*classes, *unlabelled]
        for block, value in enumerate(values):
            x = block * width // len(values)
            label[height // 3 : 2 * height // 3, x : x + width // (len(values) + 1)] = value
        image = np.zeros((height, width, 3), dtype=np.uint8)
        image[:] = IGNORE_COLOUR
        for value, colour in palette.items():
            image[label == value] = colour
        image_id = f"2008_{index:06d}" if key == "pc459" else f"ADE_val_{index + 1:08d}"
        Image.fromarray(image).save(data_root / subdir / img_dir / f"{image_id}.jpg", quality=95, subsampling=0)
        Image.fromarray(label.astype(np.uint16)).save(data_root / subdir / seg_dir / f"{image_id}.tif")
    return palette
