"""Dataset converters: COCO-Object label maps from COCO-Stuff-164k (reference spec §6.3, note †)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..atomic import atomic_path, remove_leftover_temporaries

logger = logging.getLogger(__name__)

__all__ = ["COCO_THING_IDS", "coco_object_labels", "convert_coco_object"]

#: The 80 COCO thing category ids (1-based, with the official gaps), in COCO-Stuff train-id order.
COCO_THING_IDS: tuple[int, ...] = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83), *range(84, 91)
)
assert len(COCO_THING_IDS) == 80

_RAW_TO_OBJECT = np.zeros(256, dtype=np.uint8)  # raw stuffthingmaps value (0-based COCO id) -> 0..80
_RAW_TO_OBJECT[[i - 1 for i in COCO_THING_IDS]] = np.arange(1, 81)
_TRAINID_TO_OBJECT = np.zeros(256, dtype=np.uint8)  # mmseg train id (things 0..79, stuff 80..170, 255) -> 0..80
_TRAINID_TO_OBJECT[:80] = np.arange(1, 81)

SOURCE_SUFFIX = {"trainids": "_labelTrainIds.png", "raw": ".png"}
OBJECT_SUFFIX = "_instanceTrainIds.png"


def coco_object_labels(label: np.ndarray, source: str = "trainids") -> np.ndarray:
    """Things -> 1..80; every stuff class and the unlabelled value 255 -> 0 (background, nothing ignored)."""
    if source not in SOURCE_SUFFIX:
        raise ValueError(f"source must be one of {sorted(SOURCE_SUFFIX)}, got '{source}'")
    table = _TRAINID_TO_OBJECT if source == "trainids" else _RAW_TO_OBJECT
    return table[label.astype(np.uint8)]


def _is_source(path: Path, source: str) -> bool:
    if path.name.startswith("."):  # hidden: not a COCO label map
        return False
    if source == "trainids":
        return path.name.endswith(SOURCE_SUFFIX["trainids"])
    return not path.name.endswith((SOURCE_SUFFIX["trainids"], OBJECT_SUFFIX))


def convert_coco_object(ann_dir: str | os.PathLike, source: str = "trainids", overwrite: bool = False) -> int:
    """Write ``<stem>_instanceTrainIds.png`` beside every COCO-Stuff label map in ``ann_dir``; returns the count.

    ``source="trainids"`` reads mmseg's ``*_labelTrainIds.png`` (made by mmseg's coco_stuff164k converter);
    ``source="raw"`` reads the raw ``stuffthingmaps`` PNGs. Existing outputs are skipped (resumable).
    """
    ann_dir = Path(ann_dir)
    remove_leftover_temporaries(ann_dir, f"*{OBJECT_SUFFIX}")  # left by a killed conversion
    inputs = sorted(p for p in ann_dir.glob(f"*{SOURCE_SUFFIX[source]}") if _is_source(p, source))
    if not inputs:
        raise FileNotFoundError(f"no COCO-Stuff label maps (*{SOURCE_SUFFIX[source]}) in {ann_dir}")
    written = 0
    for path in tqdm(inputs, desc="COCO-Object labels", unit="map"):
        target = path.with_name(path.name[: -len(SOURCE_SUFFIX[source])] + OBJECT_SUFFIX)
        if target.exists() and not overwrite:
            continue
        label = np.array(Image.open(path))
        with atomic_path(target) as tmp:
            Image.fromarray(coco_object_labels(label, source)).save(tmp)
        written += 1
    logger.info("wrote %d COCO-Object label maps (%d already present)", written, len(inputs) - written)
    return written
