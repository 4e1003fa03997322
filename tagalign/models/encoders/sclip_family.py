"""The SCLIP family (training-free spec §2-§4): self-correlation attention in the last block.

* ``sclip``: correlative attention ``softmax(QQᵀs) + softmax(KKᵀs)`` (rows sum to 2), residual and FFN kept.
* ``clearclip``: ``softmax(QQᵀs)``, no residual, no FFN (``residual=True`` keeps both).
* ``naclip``: ``softmax(KKᵀs + Ω)`` with a Gaussian neighbourhood Ω (σ = 5, unnormalised, 0 for CLS), no residual,
  no FFN (the "reduced" architecture).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .options import Option, declare_options
from .vit import attention_output, feed_forward, heads, patch_grid, softmax_scores, trunk

__all__ = ["clearclip", "gaussian_neighbourhood", "naclip", "sclip"]


def sclip(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """SCLIP's correlative self-attention, residual and FFN kept."""
    x = trunk(visual, images)
    block = visual.transformer.resblocks[-1]
    q, k, v = heads(block, x, slice(0, 3))
    out = attention_output(block, softmax_scores(q, q) + softmax_scores(k, k), v)
    return feed_forward(block, x + out)[:, 1:]


@declare_options(residual=Option(bool, False, "keep the last block's residual and FFN"))
def clearclip(visual: nn.Module, images: torch.Tensor, residual: bool = False) -> torch.Tensor:
    """ClearCLIP: q-q attention; the residual and FFN dropped unless ``residual``."""
    x = trunk(visual, images)
    block = visual.transformer.resblocks[-1]
    q, _, v = heads(block, x, slice(0, 3))
    out = attention_output(block, softmax_scores(q, q), v)
    return (feed_forward(block, x + out) if residual else out)[:, 1:]


def gaussian_neighbourhood(h: int, w: int, sigma: float = 5.0) -> torch.Tensor:
    """NACLIP's Ω ``[1 + h*w, 1 + h*w]``: ``exp(-d²/2σ²)`` between patch positions, 0 in the CLS row and column."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    positions = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).float()
    distance2 = torch.cdist(positions, positions).square()
    omega = torch.zeros(1 + h * w, 1 + h * w)
    omega[1:, 1:] = torch.exp(-distance2 / (2 * sigma**2))
    return omega


@declare_options(sigma=Option(float, 5.0, "the Gaussian neighbourhood's standard deviation, in patches", minimum=0.0,
                               above=True))
def naclip(visual: nn.Module, images: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """NACLIP: k-k attention plus a Gaussian neighbourhood, the reduced architecture (no residual, no FFN)."""
    x = trunk(visual, images)
    block = visual.transformer.resblocks[-1]
    _, k, v = heads(block, x, slice(0, 3))
    omega = gaussian_neighbourhood(*patch_grid(visual, images), sigma)
    scores = k @ k.transpose(-1, -2) / math.sqrt(k.shape[-1]) + omega.to(k)
    return attention_output(block, scores.softmax(dim=-1), v)[:, 1:]
