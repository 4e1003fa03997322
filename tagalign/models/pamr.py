"""Pixel-adaptive mask refinement (PAMR, Araslanov & Roth 2020), the post-processing of TCL's "Post" rows (and a step
inside ResCLIP's encoder, hence its place beside the models).

Affinity between a pixel and each of its 8 neighbours at every dilation:
``-|I_p - I_q| / (1e-8 + 0.1 * std_local(I))`` averaged over colour channels, softmax over all neighbours; the mask
is then propagated ``num_iter`` times as the affinity-weighted sum of its neighbours. Plain torch, no compiled op.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["pamr", "pamr_affinity", "propagate"]

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


def pamr_affinity(image: torch.Tensor, size: tuple[int, int],
                  dilations: Sequence[int] = (1, 2, 4, 8, 12, 24)) -> torch.Tensor:
    """``[B, 1, 8 * len(dilations), h, w]``: each pixel's softmax weights over its dilated neighbours, from the
    colours of ``image`` ``[B, 3, H, W]`` resized to ``size`` (independent of the mask: computed once per image)."""
    image = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=True)
    centre = image.unsqueeze(2)
    local_std = _shifted(image, dilations, with_centre=True).std(dim=2, keepdim=True)
    affinity = -(centre - _shifted(image, dilations, with_centre=False)).abs() / (1e-8 + 0.1 * local_std)
    return affinity.mean(dim=1, keepdim=True).softmax(dim=2)


def propagate(mask: torch.Tensor, affinity: torch.Tensor, num_iter: int = 10,
              dilations: Sequence[int] = (1, 2, 4, 8, 12, 24)) -> torch.Tensor:
    """``num_iter`` rounds of ``mask <- sum over neighbours of affinity * mask`` on ``mask`` ``[B, C, h, w]``.

    Each channel is refined on its own, so a mask may be refined a few channels at a time; the neighbours are
    summed one offset after another, never stacked (memory: two masks, not 48)."""
    height, width = mask.shape[-2:]
    pad = max(dilations)
    offsets = [(d * dy, d * dx) for d in dilations for dy, dx in _NEIGHBOURS]
    mask = mask.float()
    for _ in range(num_iter):
        padded = F.pad(mask, (pad, pad, pad, pad), mode="replicate")
        refined = torch.zeros_like(mask)
        for k, (dy, dx) in enumerate(offsets):
            refined.addcmul_(padded[..., pad + dy : pad + dy + height, pad + dx : pad + dx + width], affinity[:, :, k])
        mask = refined
    return mask


def pamr(image: torch.Tensor, mask: torch.Tensor, num_iter: int = 10,
         dilations: Sequence[int] = (1, 2, 4, 8, 12, 24)) -> torch.Tensor:
    """Refine ``mask`` ``[B, C, h, w]`` with the colours of ``image`` ``[B, 3, H, W]`` (resized to ``h, w``)."""
    return propagate(mask, pamr_affinity(image, tuple(mask.shape[-2:]), dilations), num_iter, dilations)
