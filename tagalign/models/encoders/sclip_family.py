"""The SCLIP family (training-free spec §2-§4): self-correlation attention in the last block.

* ``sclip``: correlative attention ``softmax(QQᵀs) + softmax(KKᵀs)`` (rows sum to 2), residual and FFN kept.
* ``clearclip``: ``softmax(QQᵀs)``, no residual, no FFN (``residual=True`` keeps both).
* ``naclip``: ``softmax(KKᵀs + Ω)`` with a Gaussian neighbourhood Ω (σ = 5, unnormalised, 0 for CLS), no residual,
  no FFN (the "reduced" architecture).

On RoPE towers (EVA02, PE-Core) q and k are rotated before the products, as the tower's own attention does
(training-free spec-2 §7.5: which is better is unverified).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .options import Option, declare_options
from .towers import Tower, as_tower, softmax_scores

__all__ = ["clearclip", "gaussian_neighbourhood", "naclip", "sclip"]


def sclip(visual: nn.Module | Tower, images: torch.Tensor) -> torch.Tensor:
    """SCLIP's correlative self-attention, residual and FFN kept."""
    tower = as_tower(visual)
    x, grid = tower.trunk(images)
    block = tower.blocks[-1]
    q, k, v = block.qkv(x, grid)
    out = block.attention_output(softmax_scores(q, q) + softmax_scores(k, k), v)
    return tower.patches(block.feed_forward(x + out))


@declare_options(residual=Option(bool, False, "keep the last block's residual and FFN"))
def clearclip(visual: nn.Module | Tower, images: torch.Tensor, residual: bool = False) -> torch.Tensor:
    """ClearCLIP: q-q attention; the residual and FFN dropped unless ``residual``."""
    tower = as_tower(visual)
    x, grid = tower.trunk(images)
    block = tower.blocks[-1]
    q, _, v = block.qkv(x, grid)
    out = block.attention_output(softmax_scores(q, q), v)
    return tower.patches(block.feed_forward(x + out) if residual else out)


def gaussian_neighbourhood(h: int, w: int, sigma: float = 5.0, prefix: int = 1) -> torch.Tensor:
    """NACLIP's Ω ``[prefix + h*w, prefix + h*w]``: ``exp(-d²/2σ²)`` between patch positions, 0 in the rows and
    columns of the ``prefix`` tokens (the CLS token; none on towers without one)."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    positions = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).float()
    distance2 = torch.cdist(positions, positions).square()
    omega = torch.zeros(prefix + h * w, prefix + h * w)
    omega[prefix:, prefix:] = torch.exp(-distance2 / (2 * sigma**2))
    return omega


@declare_options(sigma=Option(float, 5.0, "the Gaussian neighbourhood's standard deviation, in patches", minimum=0.0,
                               above=True))
def naclip(visual: nn.Module | Tower, images: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """NACLIP: k-k attention plus a Gaussian neighbourhood, the reduced architecture (no residual, no FFN)."""
    tower = as_tower(visual)
    x, grid = tower.trunk(images)
    block = tower.blocks[-1]
    _, k, v = block.qkv(x, grid)
    omega = gaussian_neighbourhood(*grid, sigma, prefix=tower.num_prefix)
    scores = k @ k.transpose(-1, -2) / math.sqrt(k.shape[-1]) + omega.to(k)
    return tower.patches(block.attention_output(scores.softmax(dim=-1), v))
