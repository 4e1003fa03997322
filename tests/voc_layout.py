"""Write a small dataset in the exact Pascal VOC 2012 on-disk layout (JPEG images, palette PNG labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: Well-separated RGB colours; class c's pixels are painted PALETTE[c] so a colour rule can segment them.
PALETTE = np.array([[0, 0, 0], [230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], dtype=np.uint8)


def voc_palette() -> list[int]:
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(PALETTE)] = PALETTE
    return palette.reshape(-1).tolist()


def write_voc(root: Path, num_images: int = 3, seed: int = 0) -> list[str]:
    """VOC2012 layout: JPEGImages/*.jpg, SegmentationClass/*.png (P mode, 255 = ignore), val.txt. Returns ids."""
    rng = np.random.default_rng(seed)
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = []
    for index in range(num_images):
        height, width = int(rng.integers(200, 300)), int(rng.integers(300, 400))
        label = np.zeros((height, width), dtype=np.uint8)
        for cls in range(1, len(PALETTE)):
            y, x = int(rng.integers(0, height - 80)), int(rng.integers(0, width - 80))
            label[y : y + 80, x : x + 80] = cls
        label[:3] = 255  # an ignored border row band, as VOC's object outlines
        image = PALETTE[np.where(label == 255, 0, label)]
        image_id = f"2007_{index:06d}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        png = Image.fromarray(label, mode="P")
        png.putpalette(voc_palette())
        png.save(root / "SegmentationClass" / f"{image_id}.png")
        ids.append(image_id)
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    return ids
