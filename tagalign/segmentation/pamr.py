"""Pixel-adaptive mask refinement (PAMR, Araslanov & Roth 2020), the post-processing of TCL's "Post" rows.

Affinity between a pixel and each of its 8 neighbours at every dilation:
``-|I_p - I_q| / (1e-8 + 0.1 * std_local(I))`` averaged over colour channels, softmax over all neighbours; the mask
is then propagated ``num_iter`` times as the affinity-weighted sum of its neighbours. Plain torch, no compiled op.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["pamr"]

_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _shifted(x: torch.Tensor, dilations: Sequence[int], with_centre: bool) -> torch.Tensor:
    """``[B, C, P, H, W]``: x at every (dilated) neighbour offset, replicate-padded at the borders."""
    height, width = x.shape[-2:]
    pad = max(dilations)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    offsets = ([(0, 0)] if with_centre else []) + _NEIGHBOURS
    views = [
        padded[..., pad + dy * d : pad + dy * d + height, pad + dx * d : pad + dx * d + width]
        for d in dilations
        for dy, dx in offsets
    ]
    return torch.stack(views, dim=2)


def pamr(image: torch.Tensor, mask: torch.Tensor, num_iter: int = 10,
         dilations: Sequence[int] = (1, 2, 4, 8, 12, 24)) -> torch.Tensor:
    """Refine ``mask`` ``[B, C, h, w]`` with the colours of ``image`` ``[B, 3, H, W]`` (resized to ``h, w``)."""
    image = F.interpolate(image.float(), size=mask.shape[-2:], mode="bilinear", align_corners=True)
    centre = image.unsqueeze(2)
    local_std = _shifted(image, dilations, with_centre=True).std(dim=2, keepdim=True)
    affinity = -(centre - _shifted(image, dilations, with_centre=False)).abs() / (1e-8 + 0.1 * local_std)
    affinity = affinity.mean(dim=1, keepdim=True).softmax(dim=2)
    mask = mask.float()
    for _ in range(num_iter):
        mask = (_shifted(mask, dilations, with_centre=False) * affinity).sum(dim=2)
    return mask
