"""Zero-shot referring segmentation on RefCOCO, RefCOCO+ and RefCOCOg (protocol: docs/referring.md).

Data: the refer layout (``lichengunc/refer``): ``<root>/<dataset>/refs(<split_by>).p`` (pickled refs with their
sentences and split), ``<root>/<dataset>/instances.json`` (COCO annotations: polygon or RLE masks) and the COCO
train2014 images in ``<root>/images/mscoco/images/train2014`` (or ``<root>/train2014``).

Each sentence of each ref is one sample. Its text goes through the same dense path as semantic segmentation
(short side 448, slide 448/224, sigmoid(10*cos - 2.5) mixed 0.3 with CLIP, bilinear resize to the image); all
sentences of an image share one pass of the image through the encoder. The mask is the probability above the
background threshold (``binarize="threshold"``, default, mirroring the semantic protocol), the min-max
normalised map >= 0.5 (``binarize="minmax"``) or the expression against the prompt "background"
(``binarize="background"``). Metrics: mIoU (mean of per-sentence IoU, the paper's Table 2),
oIoU (cumulative intersection over cumulative union) and precision at IoU 0.5.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.transforms import load_image, resize_probs, resize_short_side, to_tensor
from ..errors import MissingDatasetError
from ..models.clip import encode_texts
from .inference import InferenceConfig, predict_probabilities

logger = logging.getLogger(__name__)

__all__ = ["BINARIZE_MODES", "PAPER_REFERRING_MIOU", "REFERRING", "ReferringSample", "evaluate_referring",
           "load_referring", "referring_metrics"]

#: dataset -> (refs pickle split_by, allowed splits)
REFERRING = {
    "refcoco": ("unc", ("val", "testA", "testB")),
    "refcoco+": ("unc", ("val", "testA", "testB")),
    "refcocog": ("umd", ("val", "test")),
    "shapes-ref": ("unc", ("val",)),  # the quickstart world's referring split (tagalign.quickstart)
}

#: TagAlign paper Table 2 (mIoU): object tags / objects + attributes.
PAPER_REFERRING_MIOU = {
    ("refcoco", "val"): (15.87, 18.75), ("refcoco", "testA"): (17.52, 20.31), ("refcoco", "testB"): (15.69, 20.64),
    ("refcoco+", "val"): (16.04, 19.24), ("refcoco+", "testA"): (17.26, 20.88),
    ("refcoco+", "testB"): (16.44, 21.23), ("refcocog", "val"): (18.59, 23.69),
}


@dataclass
class ReferringSample:
    sent_id: int
    ref_id: int
    image_path: Path
    text: str
    annotation: dict  # the referred COCO annotation (segmentation, image size)


def _image_dir(root: Path) -> Path:
    for candidate in (root / "images/mscoco/images/train2014", root / "train2014"):
        if candidate.is_dir():
            return candidate
    raise MissingDatasetError(
        f"COCO train2014 images not found: expected {root / 'images/mscoco/images/train2014'} (refer layout) or "
        f"{root / 'train2014'}; see docs/referring.md"
    )


def load_referring(root: str | os.PathLike, dataset: str, split: str) -> list[ReferringSample]:
    """Every sentence of every ref of ``split``, as samples."""
    if dataset not in REFERRING:
        raise KeyError(f"unknown referring dataset '{dataset}'; choose from {sorted(REFERRING)}")
    split_by, splits = REFERRING[dataset]
    if split not in splits:
        raise ValueError(f"{dataset} has splits {splits} (split_by {split_by}); got '{split}'")
    root = Path(root)
    refs_file = root / dataset / f"refs({split_by}).p"
    instances_file = root / dataset / "instances.json"
    for path in (refs_file, instances_file):
        if not path.is_file():
            raise MissingDatasetError(f"{dataset}: missing {path}; see docs/referring.md for the data layout")
    try:
        with open(refs_file, "rb") as handle:
            refs = pickle.load(handle)
        if not isinstance(refs, list):
            raise TypeError(f"a {type(refs).__name__}")
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{refs_file}: expected the refer API's pickled list of refs; could not read it "
                         f"({type(err).__name__}: {err}). A truncated download? See docs/referring.md.") from err
    try:
        instances = json.loads(instances_file.read_text())
    except ValueError as err:
        raise ValueError(f"{instances_file}: not valid JSON ({err})") from err
    images = {image["id"]: image for image in instances["images"]}
    annotations = {ann["id"]: ann for ann in instances["annotations"]}
    image_dir = _image_dir(root)
    samples = []
    in_split = 0
    for ref in refs:
        if ref["split"] != split:
            continue
        in_split += 1
        ann = annotations.get(ref["ann_id"])
        if ann is None:
            raise ValueError(f"{refs_file}: ref {ref['ref_id']} points to annotation {ref['ann_id']}, which "
                             f"{instances_file} does not contain")
        image = images.get(ref["image_id"])
        if image is None or image["id"] != ann.get("image_id", image["id"]):
            raise ValueError(f"{refs_file}: ref {ref['ref_id']} names image {ref['image_id']}, which "
                             f"{instances_file} does not contain" if image is None else
                             f"{refs_file}: ref {ref['ref_id']} names image {ref['image_id']} but its annotation "
                             f"{ann['id']} belongs to image {ann.get('image_id')}")
        if not ann.get("segmentation"):
            raise ValueError(f"{instances_file}: annotation {ann['id']} (ref {ref['ref_id']}) has an empty "
                             f"segmentation")
        ann = {**ann, "height": image["height"], "width": image["width"]}
        for sentence in ref.get("sentences") or []:
            text = (sentence.get("raw") or sentence.get("sent") or "").strip()
            if not text:
                raise ValueError(f"{refs_file}: ref {ref['ref_id']} has an empty sentence (sent_id "
                                 f"{sentence.get('sent_id')}); expected the expression's text in 'raw' or 'sent'")
            samples.append(ReferringSample(sentence["sent_id"], ref["ref_id"], image_dir / image["file_name"],
                                           text, ann))
    if not samples:
        raise ValueError(f"{refs_file}: split '{split}' has no referring expression to score ({in_split} refs in the "
                         f"split, {len(refs)} in the file, none with a sentence): nothing to evaluate")
    return samples


def annotation_mask(annotation: dict) -> np.ndarray:
    """Binary ``[H, W]`` mask of a COCO annotation: polygons, uncompressed RLE or compressed RLE."""
    from pycocotools import mask as mask_utils

    height, width = annotation["height"], annotation["width"]
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


BINARIZE_MODES = ("threshold", "minmax", "background")


def binarize(probability: torch.Tensor, mode: str, threshold: float,
             background: torch.Tensor | None = None) -> torch.Tensor:
    """The predicted mask of one expression: ``threshold`` (probability above the background threshold), ``minmax``
    (min-max normalised map >= 0.5) or ``background`` (the expression's probability above that of the background
    prompt at the same pixel: the background as a competing class, as in the SCLIP-family with-background
    protocol; for CLIPs whose cosine range the fixed threshold was not calibrated on)."""
    if mode == "threshold":
        return probability > threshold
    if mode == "minmax":
        low, high = probability.min(), probability.max()
        return (probability - low) / (high - low).clamp(min=1e-12) >= 0.5
    if mode == "background":
        if background is None:
            raise ValueError("binarize='background' needs the background prompt's probability map")
        return probability > background
    raise ValueError(f"binarize must be one of {BINARIZE_MODES}, got '{mode}'")


def referring_metrics(intersections: Sequence[float], unions: Sequence[float]) -> dict:
    """mIoU (empty union counts 0), oIoU and precision at IoU 0.5, in percent; at least one expression."""
    inter, union = np.asarray(intersections, float), np.asarray(unions, float)
    if not len(inter):
        raise ValueError("no referring expression was scored: the metrics of an empty split are undefined")
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return {"mIoU": float(iou.mean() * 100), "oIoU": float(inter.sum() / max(union.sum(), 1) * 100),
            "precision@0.5": float((iou >= 0.5).mean() * 100), "num_expressions": len(iou)}


@torch.no_grad()
def evaluate_referring(model, root: str | os.PathLike, dataset: str, split: str, binarize_mode: str = "threshold",
                       templates: Sequence[str] = ("{}",), inference: dict | None = None, short_side: int = 448,
                       progress: bool = True, background_prompt: str = "background") -> dict:
    """Evaluate one dataset split; returns metrics plus the per-sentence IoUs (``{"sent_id", "iou"}``).

    ``binarize_mode="background"`` scores ``background_prompt`` beside the sentences (see :func:`binarize`).

    Under torch.distributed each process takes every world_size-th image; the per-sentence results are gathered
    and every process returns the merged result, in the order of the single-process run.
    """
    if binarize_mode not in BINARIZE_MODES:
        raise ValueError(f"binarize must be one of {BINARIZE_MODES}, got '{binarize_mode}'")
    samples = load_referring(root, dataset, split)
    config = InferenceConfig(**(inference or {}))
    extra = [background_prompt] if binarize_mode == "background" else []
    by_image: dict[Path, list[ReferringSample]] = defaultdict(list)
    for sample in samples:
        by_image[sample.image_path].append(sample)
    rank, world = _rank_and_world()
    mine = [item for index, item in enumerate(by_image.items()) if index % world == rank]
    device = next(model.parameters()).device
    intersections, unions, per_sentence = [], [], []
    for image_path, group in tqdm(mine, desc=f"{dataset} {split}", disable=not progress or rank != 0):
        image = load_image(image_path)
        texts = encode_texts(model.clip, [s.text for s in group] + extra, templates).to(device)
        probs = predict_probabilities(model, to_tensor(resize_short_side(image, short_side)).to(device), texts,
                                      False, config)  # one encoder pass for all sentences of this image
        probs = resize_probs(probs, image.shape[:2])[0].cpu()
        background = probs[-1] if extra else None
        for sample, probability in zip(group, probs):
            prediction = binarize(probability, binarize_mode, config.bg_thresh, background).numpy()
            truth = annotation_mask(sample.annotation)
            if truth.shape != prediction.shape:
                raise ValueError(f"{image_path}: image is {prediction.shape}, annotation {sample.annotation['id']} "
                                 f"is {truth.shape}")
            inter, union = float((prediction & truth).sum()), float((prediction | truth).sum())
            per_sentence.append({"sent_id": sample.sent_id, "ref_id": sample.ref_id, "text": sample.text,
                                 "iou": inter / union if union else 0.0, "intersection": inter, "union": union})
    if world > 1:
        parts: list = [None] * world
        torch.distributed.all_gather_object(parts, per_sentence)
        order = {sample.sent_id: i for i, sample in enumerate(s for _, group in by_image.items() for s in group)}
        per_sentence = sorted((row for part in parts for row in part), key=lambda row: order[row["sent_id"]])
    intersections = [row.pop("intersection") for row in per_sentence]
    unions = [row.pop("union") for row in per_sentence]
    return {"dataset": dataset, "split": split, "binarize": binarize_mode,
            **referring_metrics(intersections, unions), "per_sentence": per_sentence}


def _rank_and_world() -> tuple[int, int]:
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)


def format_referring_table(results: Sequence[dict]) -> str:
    """Paper Table 2 layout: one row per dataset split, ours beside the paper's object / object+attribute mIoU."""
    lines = [f"{'dataset':<10}{'split':<7}{'mIoU':>8}{'oIoU':>8}{'P@0.5':>8}{'paper obj':>11}{'paper +attr':>13}"]
    for r in results:
        paper = PAPER_REFERRING_MIOU.get((r["dataset"], r["split"]))
        obj, attr = (f"{paper[0]:.2f}", f"{paper[1]:.2f}") if paper else ("-", "-")
        lines.append(f"{r['dataset']:<10}{r['split']:<7}{r['mIoU']:>8.2f}{r['oIoU']:>8.2f}{r['precision@0.5']:>8.2f}"
                     f"{obj:>11}{attr:>13}")
    return "\n".join(lines)
