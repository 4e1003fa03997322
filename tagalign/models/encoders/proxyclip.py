"""ProxyCLIP (training-free spec-2 §3; spec-1 §7): the last block's attention taken from a second vision model.

``Ê`` = the VFM's features L2-normalised per token; ``S = ÊᵀÊ``; ``M = γ·(S − β·mean(S))`` with entries below 0 set to
−∞; ``A = softmax_row(M)``, the same for every CLIP head. The CLIP last block's values of the patch tokens (no CLS)
are resized bilinearly from the CLIP grid to the VFM grid, and ``out_proj(A·V)`` is the output: no residual, no FFN,
on the **VFM's grid** (42x42 for a 336 window with DINO ViT-B/8, where CLIP's is 21x21). β = 1.2 and γ = 3.0 for
every VFM (the authors' code).

Differences from the authors' code, named: ``mean(S)`` spans the whole batch there (their slide loop feeds one window
at a time, so it is the window's mean); here it is each window's own unless ``batch_mean``. A row whose every entry is
negative (its own similarity 1 is below β·mean(S)) is all −∞ there and gives NaN; here it keeps its diagonal. Their
code takes square windows only (``token_size`` built from a swapped shape); any window works here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .options import Option, declare_options
from .towers import Tower, as_tower

__all__ = ["proxy_attention", "proxyclip"]


def proxy_attention(features: torch.Tensor, beta: float = 1.2, gamma: float = 3.0,
                    batch_mean: bool = False) -> torch.Tensor:
    """``[B, n, n]`` attention from VFM features ``[B, C, h', w']`` (``n = h'·w'``)."""
    e = F.normalize(features.flatten(2).float(), dim=1)
    similarity = e.transpose(1, 2) @ e
    mean = similarity.mean() if batch_mean else similarity.mean(dim=(1, 2), keepdim=True)
    logits = gamma * (similarity - beta * mean)
    keep = logits >= 0
    empty = ~keep.any(dim=-1, keepdim=True)  # the authors' code gives these rows NaN; they keep their diagonal here
    keep = keep | (empty & torch.eye(logits.shape[-1], dtype=torch.bool, device=logits.device))
    return logits.masked_fill(~keep, float("-inf")).softmax(dim=-1)


def _values_on_grid(v: torch.Tensor, grid: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """Per-head patch values ``[B, heads, h*w, d]`` resized bilinearly to ``target`` -> ``[B, heads, h'*w', d]``."""
    batch, heads, _, dim = v.shape
    maps = v.reshape(batch * heads, grid[0], grid[1], dim).permute(0, 3, 1, 2)
    maps = F.interpolate(maps, size=target, mode="bilinear", align_corners=False)
    return maps.permute(0, 2, 3, 1).reshape(batch, heads, target[0] * target[1], dim)


@declare_options(beta=Option(float, 1.2, "β: similarities below β·mean(S) get no attention"),
                 gamma=Option(float, 3.0, "γ: the attention temperature", minimum=0.0, above=True),
                 batch_mean=Option(bool, False, "take mean(S) over the whole batch of windows, as the authors' code "
                                                "writes it (their loop feeds one window at a time)"))
def proxyclip(visual: nn.Module | Tower, images: torch.Tensor, vfm: nn.Module, beta: float = 1.2,
              gamma: float = 3.0, batch_mean: bool = False) -> tuple[torch.Tensor, tuple[int, int]]:
    """ProxyCLIP: ``(tokens [B, h'*w', width], (h', w'))`` on the VFM's grid."""
    tower = as_tower(visual)
    x, grid = tower.trunk(images)
    block = tower.blocks[-1]
    (v,) = block.qkv(x, grid, slice(2, 3))
    features = vfm.features(images)
    target = tuple(features.shape[-2:])
    attention = proxy_attention(features, beta, gamma, batch_mean).to(v.dtype)
    values = _values_on_grid(v[:, :, tower.num_prefix:], grid, target)
    return block.attention_output(attention[:, None], values), target


proxyclip.needs_vfm = "dino_vitb8"  # the second model it reads, and the authors' default one
