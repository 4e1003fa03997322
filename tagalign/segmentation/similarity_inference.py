"""The SCLIP-family decoding (training-free spec §3, §10.2): window-averaged cosines, softmax over all queries.

Per window (optionally zero-padded symmetrically to a multiple of ``pad_to``) the model's cosine maps on the patch
grid are bilinearly upsampled to the window, the padding is cut off, and overlapping windows are averaged. The
average is bilinearly resized to the original image, optionally refined by PAMR against the image resized to that
size (NACLIP), then ``softmax(logit_scale * cos)`` runs over all queries, a class takes the max over its queries,
``area_thd`` zeroes small classes (SCLIP on VOC), and pixels whose top probability is below ``prob_thd`` become
class 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .inference import InferenceConfig, _autocast, window_grid
from .pamr import pamr

__all__ = ["class_probabilities", "labels_from_probabilities", "window_similarities"]


def _pad_amounts(size: int, multiple: int) -> tuple[int, int]:
    if multiple <= 0 or size % multiple == 0:
        return 0, 0
    pad = multiple - size % multiple
    return pad // 2, pad - pad // 2


@torch.no_grad()
def window_similarities(model, image: torch.Tensor, text_emb: torch.Tensor, config: InferenceConfig) -> torch.Tensor:
    """``[1, N, H, W]`` query cosines of one normalised image ``[1, 3, H, W]``, averaged over the windows."""
    height, width = image.shape[-2:]

    def cosines(crop: torch.Tensor) -> torch.Tensor:
        top, bottom = _pad_amounts(crop.shape[-2], config.pad_to)
        left, right = _pad_amounts(crop.shape[-1], config.pad_to)
        padded = F.pad(crop, (left, right, top, bottom))
        with _autocast(crop.device, config.precision):
            grid = model.similarities(padded, text_emb, clip_w=config.clip_w, feature_surgery=config.feature_surgery)
        logits = F.interpolate(grid.float(), size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[:, :, top : padded.shape[-2] - bottom, left : padded.shape[-1] - right]

    if config.mode == "whole":
        return cosines(image)
    total = image.new_zeros((1, len(text_emb), height, width), dtype=torch.float32)
    counts = image.new_zeros((1, 1, height, width), dtype=torch.float32)
    for y1, y2, x1, x2 in window_grid(height, width, config.crop, config.stride):
        total[:, :, y1:y2, x1:x2] += cosines(image[:, :, y1:y2, x1:x2])
        counts[:, :, y1:y2, x1:x2] += 1
    return total / counts


def class_probabilities(cosines: torch.Tensor, query_class: torch.Tensor, num_classes: int, config: InferenceConfig,
                        image: torch.Tensor | None = None) -> torch.Tensor:
    """``[1, C, H, W]`` class probabilities from query cosines at the output size; PAMR (when on) refines the
    cosines against ``image`` resized to that size first."""
    if config.pamr:
        guide = F.interpolate(image.float(), size=cosines.shape[-2:], mode="bilinear", align_corners=False)
        cosines = pamr(guide, cosines, config.pamr_iter, config.pamr_dilations)
    probs = (config.logit_scale * cosines).softmax(dim=1)
    per_class = probs.new_zeros((probs.shape[0], num_classes, *probs.shape[-2:]))
    index = query_class.to(probs.device).view(1, -1, 1, 1).expand_as(probs)
    return per_class.scatter_reduce(1, index, probs, reduce="amax", include_self=False)


def labels_from_probabilities(probs: torch.Tensor, config: InferenceConfig) -> torch.Tensor:
    """``[1, H, W]`` labels: ``area_thd`` on the foreground classes, argmax, class 0 below ``prob_thd``.

    ``probs`` is modified in place by ``area_thd`` (as the seg_logits the authors' code returns).
    """
    if config.area_thd is not None:
        num_classes = probs.shape[1]
        areas = F.one_hot(probs[0].argmax(0), num_classes).sum((0, 1))[1:].to(probs.dtype)
        keep = (areas > config.area_thd * areas.sum()).to(probs.dtype)
        probs[0, 1:] *= keep.view(-1, 1, 1)
    labels = probs[0].argmax(0, keepdim=True)
    labels[probs[0].max(0, keepdim=True)[0] < config.prob_thd] = 0
    return labels
