"""Converters for the large-vocabulary benchmarks, writing CAT-Seg's layout (training-free spec §8).

* PC459: ``VOC2010/trainval/<id>.mat`` (PASCAL-Context's full annotations, ``LabelMap`` 1..459) ->
  ``VOC2010/annotations_detectron2/pc459_val/<id>.tif``, ``LabelMap - 1`` as uint16 (a 0, unlabelled, becomes
  65535 as in CAT-Seg's uint16 subtraction), for the ids of the validation list.
* ADE847: ``ADE20K_2021_17_01`` (``index_ade20k.pkl``, ``*_seg.png``) -> ``images_detectron2/validation/*.jpg`` and
  ``annotations_detectron2/validation/*.tif``: the object id ``R / 10 * 256 + G`` mapped to the 847 train ids,
  everything else 65535; an image whose sides both exceed 512 is resized so its short side is 512 (image bilinear,
  label nearest), as CAT-Seg's ``prepare_ade20k_full.py`` does.

Both skip outputs that exist (resumable) and write atomically.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from ..atomic import atomic_path, remove_leftover_temporaries
from .large_vocab_classes import ADE847_SOURCE_IDS

logger = logging.getLogger(__name__)

__all__ = ["ade847_labels", "convert_ade847", "convert_pc459", "pc459_labels"]

UNLABELLED = 65535
ADE_SHORT_SIDE = 512


def pc459_labels(label_map: np.ndarray) -> np.ndarray:
    """PASCAL-Context ``LabelMap`` (1..459, 0 unlabelled) -> uint16 labels 0..458, unlabelled 65535."""
    label_map = np.asarray(label_map).astype(np.int64)
    if label_map.min() < 0 or label_map.max() > 459:
        raise ValueError(f"LabelMap values must be 0..459, found {label_map.min()}..{label_map.max()}")
    return np.where(label_map == 0, UNLABELLED, label_map - 1).astype(np.uint16)


def _read_ids(path: Path) -> list[str]:
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{path}: the id list is empty")
    return ids


def convert_pc459(voc2010: str | os.PathLike, ids_file: str | os.PathLike | None = None) -> int:
    """Write the PC459 label maps under ``voc2010``; ``ids_file`` defaults to
    ``ImageSets/SegmentationContext/val.txt`` (CAT-Seg ships its own ``pascalcontext_val.txt``). Returns the count
    written; a listed id without its ``.mat`` is an error naming it."""
    from scipy.io import loadmat

    root = Path(voc2010)
    ids_path = Path(ids_file) if ids_file else root / "ImageSets/SegmentationContext/val.txt"
    ids = _read_ids(ids_path)
    missing = [i for i in ids if not (root / "trainval" / f"{i}.mat").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} ids of {ids_path} have no {root / 'trainval'}/<id>.mat (first: "
                                f"{missing[0]}); unpack PASCAL-Context's trainval.tar.gz there")
    out_dir = root / "annotations_detectron2" / "pc459_val"
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_leftover_temporaries(out_dir, "*.tif")
    written = 0
    for image_id in tqdm(ids, desc="PC459 labels", unit="map"):
        target = out_dir / f"{image_id}.tif"
        if target.exists():
            continue
        source = root / "trainval" / f"{image_id}.mat"
        try:
            labels = pc459_labels(loadmat(source)["LabelMap"])
        except (KeyError, ValueError) as err:
            raise ValueError(f"{source}: expected a 'LabelMap' of values 0..459 ({err})") from err
        with atomic_path(target) as tmp:
            Image.fromarray(labels).save(tmp, format="TIFF")
        written += 1
    logger.info("PC459: wrote %d label maps to %s (%d already present)", written, out_dir, len(ids) - written)
    return written


_TRAIN_ID = {source: train for train, source in enumerate(ADE847_SOURCE_IDS)}


def ade847_labels(seg_rgb: np.ndarray) -> np.ndarray:
    """An ADE20K ``*_seg.png`` (RGB) -> uint16 train ids 0..846, every other object id 65535."""
    red, green = seg_rgb[..., 0].astype(np.int64), seg_rgb[..., 1].astype(np.int64)
    objects = red // 10 * 256 + green
    table_ids = np.unique(objects)
    out = np.full(objects.shape, UNLABELLED, dtype=np.uint16)
    for object_id in table_ids:
        if int(object_id) in _TRAIN_ID:
            out[objects == object_id] = _TRAIN_ID[int(object_id)]
    return out


def _resized(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    if min(height, width) <= ADE_SHORT_SIDE:
        return image, labels
    if width >= height:
        size = (round(width / height * ADE_SHORT_SIDE), ADE_SHORT_SIDE)
    else:
        size = (ADE_SHORT_SIDE, round(height / width * ADE_SHORT_SIDE))
    return (cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
            cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST))


def convert_ade847(ade_root: str | os.PathLike) -> int:
    """Write ADE847's validation images and label maps under ``ade_root`` (``ADE20K_2021_17_01``) from its
    ``index_ade20k.pkl``; returns the count written."""
    root = Path(ade_root)
    index_path = root / "index_ade20k.pkl"
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} not found: point at the unpacked ADE20K_2021_17_01 folder")
    with open(index_path, "rb") as handle:
        index = pickle.load(handle)  # the dataset's own index (a pickle, as ADE20K ships it)
    entries = [(folder, name) for folder, name in zip(index["folder"], index["filename"])
               if name.split("_")[1] == "val"]
    image_dir = root / "images_detectron2" / "validation"
    label_dir = root / "annotations_detectron2" / "validation"
    for folder in (image_dir, label_dir):
        folder.mkdir(parents=True, exist_ok=True)
        remove_leftover_temporaries(folder, "*")
    written = 0
    for folder, name in tqdm(entries, desc="ADE847 images and labels", unit="image"):
        image_out, label_out = image_dir / name, label_dir / Path(name).with_suffix(".tif").name
        if image_out.exists() and label_out.exists():
            continue
        # the index's folders are relative to the dataset's parent (ADE20K_2021_17_01/images/ADE/...)
        source = root.parent / folder / name
        seg_path = source.with_name(source.name.replace(".jpg", "_seg.png"))
        with Image.open(source) as image_file, Image.open(seg_path) as seg_file:
            image = np.asarray(image_file.convert("RGB"))
            labels = ade847_labels(np.asarray(seg_file.convert("RGB")))
        if labels.shape != image.shape[:2]:
            raise ValueError(f"{seg_path}: {labels.shape} does not match its image {source} {image.shape[:2]}")
        image, labels = _resized(image, labels)
        with atomic_path(image_out) as tmp:
            Image.fromarray(image).save(tmp, format="JPEG")
        with atomic_path(label_out) as tmp:
            Image.fromarray(labels).save(tmp, format="TIFF")
        written += 1
    logger.info("ADE847: wrote %d images and label maps under %s (%d already present)", written, root,
                len(entries) - written)
    return written
