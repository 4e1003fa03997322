"""Label maps at the original image size under both protocols, computed a chunk of classes at a time.

``tagalign`` (reference spec §6): per class the window-averaged probabilities (max over its queries), a constant
``bg_thresh`` channel as class 0 for datasets with background, mmseg's postprocess (padding cut, flip undone,
bilinear resize to ``ori_shape``), argmax.

``sclip`` (training-free spec §3, §10.2): the window-averaged cosines resized to the original size, PAMR there
(NACLIP), ``softmax(logit_scale * cos)`` over all queries, max over a class's queries, ``area_thd``, argmax, and
class 0 where the top probability is below ``prob_thd``. The softmax's normaliser is a running log-sum-exp, so a
class's probability is ``exp(its best logit - lse)`` and its argmax is that of the logits (without ``prob_thd`` the
normaliser is not computed at all). ``area_thd`` needs the
areas of the first argmax: when it drops a class, a second walk finds each pixel's best surviving class.

Each returns the labels ``[1, H, W]`` and, with ``keep_maps``, the per-class maps mmseg calls ``seg_logits`` (then
all classes at full resolution, as the user asked).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..models.pamr import pamr_affinity, propagate
from .class_chunks import ClassChunk, RunningArgmax, class_max, resize_maps
from .inference_config import InferenceConfig
from .windows import WindowScores

__all__ = ["sclip_labels", "small_classes", "tagalign_labels", "to_original_size"]


def to_original_size(maps: torch.Tensor, meta: dict, align_corners: bool = False) -> torch.Tensor:
    """mmseg's postprocess of ``[1, C, H, W]`` maps: cut the padding, undo a flip, bilinear to ``ori_shape``."""
    left, right, top, bottom = meta.get("img_padding_size", meta.get("padding_size", [0] * 4))
    maps = maps[:, :, top : maps.shape[-2] - bottom, left : maps.shape[-1] - right]
    if meta.get("flip"):
        maps = maps.flip(dims=(3,) if meta.get("flip_direction") == "horizontal" else (2,))
    size = tuple(meta.get("ori_shape", maps.shape[-2:]))[:2]
    if align_corners:
        return F.interpolate(maps, size=size, mode="bilinear", align_corners=True)
    return resize_maps(maps, size)


def _class_maps(maps: torch.Tensor, chunk: ClassChunk, query_class: torch.Tensor, with_constant: bool,
                constant: float = 0.0) -> torch.Tensor:
    """The chunk's per-class maps from its query maps; class 0 as the constant channel when ``with_constant``."""
    first = chunk.classes.start + (1 if with_constant else 0)
    per_class = class_max(maps, query_class[chunk.queries] - first, chunk.classes.stop - first)
    if with_constant:
        per_class = torch.cat([torch.full_like(per_class[:, :1], constant), per_class], dim=1)
    return per_class


@torch.no_grad()
def tagalign_labels(scores: WindowScores, chunks: Sequence[ClassChunk], query_class: torch.Tensor,
                    with_background: bool, config: InferenceConfig, meta: dict,
                    keep_maps: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels ``[1, H, W]`` (and the class probabilities ``[C, H, W]`` with ``keep_maps``) at ``ori_shape``."""
    running, kept = RunningArgmax(), []
    for chunk in chunks:
        background = with_background and chunk.classes.start == 0
        per_class = _class_maps(scores.average(chunk.queries), chunk, query_class, background, config.bg_thresh)
        per_class = to_original_size(per_class, meta)[0]
        running.update(per_class, chunk.classes.start)
        if keep_maps:
            kept.append(per_class)
    return running.label[None], torch.cat(kept) if keep_maps else None


def small_classes(labels: torch.Tensor, num_classes: int, area_thd: float) -> torch.Tensor:
    """``[num_classes]`` bool: the classes (never class 0) whose argmax area is ``<= area_thd`` x the area of all
    classes but 0 (SCLIP's rule, compared in float32 as its code does)."""
    areas = torch.bincount(labels.flatten(), minlength=num_classes).float()
    small = areas <= area_thd * areas[1:].sum()
    small[0] = False
    return small


@torch.no_grad()
def sclip_labels(scores: WindowScores, chunks: Sequence[ClassChunk], query_class: torch.Tensor, num_classes: int,
                 config: InferenceConfig, output_size: Sequence[int],
                 keep_maps: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels ``[1, H, W]`` (and the class probabilities ``[C, H, W]`` with ``keep_maps``) at ``output_size``."""
    size = tuple(output_size)[:2]
    affinity = None
    if config.pamr:
        guide = F.interpolate(scores.image.float(), size=size, mode="bilinear", align_corners=False)
        affinity = pamr_affinity(guide, size, config.pamr_dilations)

    def logits_of(chunk: ClassChunk) -> torch.Tensor:
        cosines = resize_maps(scores.average(chunk.queries), size)
        if affinity is not None:
            cosines = propagate(cosines, affinity, config.pamr_iter, config.pamr_dilations)
        return config.logit_scale * cosines

    lse, running, stored = None, RunningArgmax(), []
    store = keep_maps or len(chunks) == 1  # one chunk: keep it for a second walk instead of recomputing it
    normalise = keep_maps or config.prob_thd > 0  # the argmax alone needs no softmax normaliser
    for chunk in chunks:
        logits = logits_of(chunk)
        if normalise:
            part = torch.logsumexp(logits[0], dim=0)
            lse = part if lse is None else torch.logaddexp(lse, part)
        per_class = _class_maps(logits, chunk, query_class, with_constant=False)[0]
        running.update(per_class, chunk.classes.start)
        if store:
            stored.append(per_class)
    dropped = torch.zeros(num_classes, dtype=torch.bool, device=running.label.device)
    if config.area_thd is not None:
        dropped = small_classes(running.label, num_classes, config.area_thd)
        if dropped.any():
            running = RunningArgmax()
            for index, chunk in enumerate(chunks):
                per_class = stored[index] if store else _class_maps(logits_of(chunk), chunk, query_class, False)[0]
                running.update(per_class.masked_fill(dropped[chunk.classes].view(-1, 1, 1), float("-inf")),
                               chunk.classes.start)
    labels = running.label.clone()
    if config.prob_thd > 0:
        labels[torch.exp(running.best - lse) < config.prob_thd] = 0
    if not keep_maps:
        return labels[None], None
    probs = torch.exp(torch.cat(stored) - lse)
    probs[dropped] = 0
    return labels[None], probs
