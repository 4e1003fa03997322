"""Trident (training-free spec-2 §5, ``YuHengsss/Trident@a93b346``): ProxyCLIP windows spliced into one image-wide
token map, then aggregated by SAM's last attention over the whole image.

1. The image is resized so both sides are multiples of the CLIP patch and at least one window (the authors'
   ``preprocess_image``); its windows (``crop``/``stride``, all at once) go through the encoder (``proxyclip``
   with DINO ViT-B/16; β, γ and the mean over all windows as the authors batch them), giving each window's
   last-block output before CLIP's head.
2. The window maps are placed at their patch coordinates and averaged where they overlap, then resized bilinearly to
   SAM's grid.
3. SAM ViT-B runs once on the whole image (longest side to its input size, its pixel statistics, zero padding to a
   square); its last (global) block gives per-head attention ``A_h`` and values. Per head, ``cos_ij`` of the
   L2-normalised values; each row's threshold ``t_i = cos_fac · mean_{h, j} cos_ij`` (negative ones become 0.6 when
   ``refine_neg_cos`` is off), capped at 0.9; ``A_h`` kept where ``cos_ij > t_i``; the mean over heads, each row
   normalised: one map ``A`` over the valid (unpadded) tokens, shared by all CLIP heads.
4. ``X = A·F`` (no second projection), then the model's dense head (CLIP's ``ln_post·P``, or a trained projector)
   and cosines with the queries on SAM's grid.

Differences from the authors' code, named: their SAM reads the original image file (rounded up to multiples of 16);
ours reads the pipeline's resized image, un-normalised (same aspect; the resampling differs). Their Cityscapes images
go through SAM as two halves; ours whole. Their windows are zero-padded to a multiple of 56 (a no-op for their
336-pixel windows, which is all this path takes: crops are whole windows). Their maps go from SAM's grid to the
original size in one resize; ours pass through the resized image's size. Their optional SAM prompt refinement
(``--sam_refine``) is not implemented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .inference_config import window_grid

__all__ = ["Trident", "TridentSettings", "sam_aggregation", "splice_windows", "trident_size"]


@dataclass(frozen=True)
class TridentSettings:
    cos_fac: float = 1.2
    refine_neg_cos: bool = True


def trident_size(height: int, width: int, stride: int = 16, crop: int = 336) -> tuple[int, int]:
    """The authors' ``preprocess_image`` size: unchanged when both sides are multiples of ``stride``; else the longer
    side rounded up to one, the shorter scaled with it, each rounded up to a multiple, and each at least ``crop``."""
    if height % stride == 0 and width % stride == 0:
        return height, width
    longer = max(height, width)
    target = math.ceil(longer / stride) * stride
    new_h, new_w = int(height * target / longer), int(width * target / longer)
    new_h, new_w = math.ceil(new_h / stride) * stride, math.ceil(new_w / stride) * stride
    return max(new_h, crop), max(new_w, crop)


def splice_windows(maps: torch.Tensor, cells: Sequence[tuple[int, int, int, int]],
                   size: tuple[int, int]) -> torch.Tensor:
    """``[C, size]``: window maps ``[W, C, h, w]`` placed at their ``cells`` ``(y1, y2, x1, x2)`` on the image's
    token grid and averaged where they overlap."""
    total = maps.new_zeros(maps.shape[1], *size)
    count = maps.new_zeros(1, *size)
    for window, (y1, y2, x1, x2) in zip(maps, cells, strict=True):
        total[:, y1:y2, x1:x2] += window
        count[:, y1:y2, x1:x2] += 1
    return total / count


def sam_aggregation(attention: torch.Tensor, values: torch.Tensor, cos_fac: float = 1.2,
                    refine_neg_cos: bool = True) -> torch.Tensor:
    """``[n, n]``: SAM's per-head attention ``[heads, n, n]`` kept where its values ``[heads, n, d]`` agree (see the
    module docstring), averaged over heads, rows normalised."""
    v = F.normalize(values.float(), dim=-1)
    cos = v @ v.transpose(-1, -2)
    threshold = cos_fac * cos.mean(dim=0, keepdim=True).mean(dim=-1, keepdim=True)  # [1, n, 1]
    if not refine_neg_cos:
        threshold = torch.where(threshold < 0, torch.full_like(threshold, 0.6), threshold)
    threshold = threshold.clamp(max=0.9)
    kept = torch.where(cos > threshold, attention.float(), torch.zeros_like(cos)).mean(dim=0)
    return kept / kept.sum(dim=-1, keepdim=True)


class Trident:
    """Trident's image-wide step: ``sam`` (``load_vfm('sam_vitb')``), its settings, and the pixel statistics the
    image was normalised with (SAM re-normalises it)."""

    def __init__(self, sam, settings: TridentSettings = TridentSettings(),
                 input_statistics: tuple[Sequence[float], Sequence[float]] = ((0.485, 0.456, 0.406),
                                                                              (0.229, 0.224, 0.225))):
        self.sam, self.settings, self.input_statistics = sam, settings, input_statistics

    def sam_input(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(SAM's input [1, 3, S, S], its valid token grid)``: longest side to ``S`` (SAM's rounding), SAM's
        statistics, zero padding at the bottom and right."""
        side = self.sam.input_size
        mean, std = (torch.tensor(s, device=image.device, dtype=torch.float32).view(1, 3, 1, 1)
                     for s in self.input_statistics)
        rgb = (image.float() * std + mean).clamp(0, 1)
        scale = side / max(rgb.shape[-2:])
        height, width = int(rgb.shape[-2] * scale + 0.5), int(rgb.shape[-1] * scale + 0.5)
        rgb = F.interpolate(rgb, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        x = (rgb - self.sam.mean.to(rgb)) / self.sam.std.to(rgb)
        x = F.pad(x, (0, side - width, 0, side - height))
        patch = self.sam.patch_size
        return x, (height // patch[0], width // patch[1])

    @torch.no_grad()
    def scores(self, model, image: torch.Tensor, text_emb: torch.Tensor, crop: int, stride: int,
               clip_w: float) -> torch.Tensor:
        """``[1, Q, Hs, Ws]`` cosines on SAM's valid grid for one normalised image ``[1, 3, H, W]``."""
        patch = model.patch_size
        size = trident_size(*image.shape[-2:], patch, crop)
        processed = image if tuple(image.shape[-2:]) == size else F.interpolate(
            image, size=size, mode="bilinear", align_corners=False)
        boxes = window_grid(*size, crop, stride)
        crops = torch.cat([processed[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])
        tokens = model.encode_patches(crops).float()  # [W, C, h', w'], all windows in one batch
        clip_grid = (crop // patch, crop // patch)
        ratio = tokens.shape[-1] // clip_grid[1] if tokens.shape[-1] % clip_grid[1] == 0 else round(
            tokens.shape[-2] / clip_grid[0])
        if tuple(tokens.shape[-2:]) != (clip_grid[0] * ratio, clip_grid[1] * ratio):
            tokens = F.interpolate(tokens, size=(clip_grid[0] * ratio, clip_grid[1] * ratio), mode="bilinear",
                                   align_corners=False)
        cells = [(y1 // patch * ratio, y2 // patch * ratio, x1 // patch * ratio, x2 // patch * ratio)
                 for y1, y2, x1, x2 in boxes]
        spliced = splice_windows(tokens, cells, (size[0] // patch * ratio, size[1] // patch * ratio))
        prepared, (hs, ws) = self.sam_input(image)
        attention, values = self.sam.sam_last_attention(prepared)
        grid = (prepared.shape[-2] // self.sam.patch_size[0], prepared.shape[-1] // self.sam.patch_size[1])
        valid = torch.zeros(grid, dtype=torch.bool, device=image.device)
        valid[:hs, :ws] = True
        valid = valid.flatten()
        aggregated = sam_aggregation(attention[0][:, valid][:, :, valid], values[0][:, valid],
                                     self.settings.cos_fac, self.settings.refine_neg_cos)
        features = F.interpolate(spliced[None], size=(hs, ws), mode="bilinear", align_corners=False)
        mixed = (aggregated @ features[0].flatten(1).t()).t().reshape(1, -1, hs, ws)
        return model.map_cosines(mixed.to(tokens.dtype), text_emb, clip_w)
