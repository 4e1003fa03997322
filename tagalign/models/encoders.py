"""Training-free dense CLIP encoders over an unmodified open_clip ViT, chosen by name (training-free spec §1-§6).

Each encoder is a function ``(visual, images, **options) -> [B, h*w, width]`` patch tokens before ``ln_post``; the
shared head ``ln_post(X) @ proj`` turns them into ``[B, output_dim, h, w]`` features in :func:`dense_features`.
All but ``surgery``/``clip_surgery`` change only the last block:

* ``vanilla``: plain CLIP, ``x + attn; + FFN``.
* ``maskclip``: identity attention, ``out_proj(v)``; residual and FFN kept (the official code); ``residual=False``
  gives the re-implementations' ``out_proj(v)`` alone.
* ``sclip``: correlative attention ``softmax(QQᵀs) + softmax(KKᵀs)`` (rows sum to 2), residual and FFN kept.
* ``clearclip``: ``softmax(QQᵀs)``, no residual, no FFN (``residual=True`` keeps both).
* ``naclip``: ``softmax(KKᵀs + Ω)`` with a Gaussian neighbourhood Ω (σ = 5, unnormalised, 0 for CLS), no residual,
  no FFN (the "reduced" architecture).
* ``surgery``: TagAlign's CLIP-Surgery encoder (v-v dual path in the last 6 blocks), the default.
* ``clip_surgery``: the same architecture with CLIP Surgery's own bilinear positional resize; its label-set feature
  surgery acts on similarities (``InferenceConfig(feature_surgery=True)``).

Positional tables are resized with size-based bicubic interpolation for every encoder (TagAlign's); the SCLIP family's
DINO-style ``scale_factor=(n + 0.1) / 14`` variant is not reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .dense import _embed, _feed_forward, _heads, _merge_heads, _plain_block, surgery_patch_tokens

__all__ = ["ENCODERS", "dense_features", "gaussian_neighbourhood", "global_token"]


def _trunk(visual: nn.Module, images: torch.Tensor, depth: int = 1) -> torch.Tensor:
    """Every block but the last ``depth``, unmodified: ``[B, 1 + h*w, width]``."""
    x, _ = _embed(visual, images)
    batch_first = getattr(visual.transformer, "batch_first", True)
    for block in visual.transformer.resblocks[:-depth]:
        x = _plain_block(block, x, batch_first)
    return x


def _out(block: nn.Module, attention: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``out_proj`` of the heads' ``attention @ v`` (with the block's layer scale)."""
    return block.ls_1(block.attn.out_proj(_merge_heads(attention @ v)))


def _softmax_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1])).softmax(dim=-1)


def vanilla(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    x = _trunk(visual, images)
    return _plain_block(visual.transformer.resblocks[-1], x, getattr(visual.transformer, "batch_first", True))[:, 1:]


def maskclip(visual: nn.Module, images: torch.Tensor, residual: bool = True) -> torch.Tensor:
    x = _trunk(visual, images)
    block = visual.transformer.resblocks[-1]
    (v,) = _heads(block, x, slice(2, 3))
    out = block.ls_1(block.attn.out_proj(_merge_heads(v)))
    return (_feed_forward(block, x + out) if residual else out)[:, 1:]


def sclip(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    x = _trunk(visual, images)
    block = visual.transformer.resblocks[-1]
    q, k, v = _heads(block, x, slice(0, 3))
    out = _out(block, _softmax_scores(q, q) + _softmax_scores(k, k), v)
    return _feed_forward(block, x + out)[:, 1:]


def clearclip(visual: nn.Module, images: torch.Tensor, residual: bool = False) -> torch.Tensor:
    x = _trunk(visual, images)
    block = visual.transformer.resblocks[-1]
    q, _, v = _heads(block, x, slice(0, 3))
    out = _out(block, _softmax_scores(q, q), v)
    return (_feed_forward(block, x + out) if residual else out)[:, 1:]


def gaussian_neighbourhood(h: int, w: int, sigma: float = 5.0) -> torch.Tensor:
    """NACLIP's Ω ``[1 + h*w, 1 + h*w]``: ``exp(-d²/2σ²)`` between patch positions, 0 in the CLS row and column."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    positions = torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1).float()
    distance2 = torch.cdist(positions, positions).square()
    omega = torch.zeros(1 + h * w, 1 + h * w)
    omega[1:, 1:] = torch.exp(-distance2 / (2 * sigma**2))
    return omega


def naclip(visual: nn.Module, images: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    x = _trunk(visual, images)
    block = visual.transformer.resblocks[-1]
    _, k, v = _heads(block, x, slice(0, 3))
    patch = visual.conv1.stride
    omega = gaussian_neighbourhood(images.shape[-2] // patch[0], images.shape[-1] // patch[1], sigma)
    scores = k @ k.transpose(-1, -2) / math.sqrt(k.shape[-1]) + omega.to(k)
    return _out(block, scores.softmax(dim=-1), v)[:, 1:]


def surgery(visual: nn.Module, images: torch.Tensor, depth: int = 6) -> torch.Tensor:
    return surgery_patch_tokens(visual, images, depth)


def global_token(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The unmodified CLIP's CLS token ``[B, width]`` before ``ln_post`` (positional table resized bicubically)."""
    x = _trunk(visual, images)
    return _plain_block(visual.transformer.resblocks[-1], x, getattr(visual.transformer, "batch_first", True))[:, 0]


def clip_surgery(visual: nn.Module, images: torch.Tensor, depth: int = 6) -> torch.Tensor:
    return surgery_patch_tokens(visual, images, depth, pos_mode="bilinear")


ENCODERS: dict[str, Callable[..., torch.Tensor]] = {
    "vanilla": vanilla, "maskclip": maskclip, "sclip": sclip, "clearclip": clearclip, "naclip": naclip,
    "surgery": surgery, "clip_surgery": clip_surgery,
}


@torch.no_grad()
def dense_features(clip: nn.Module, images: torch.Tensor, encoder: str = "surgery", **options) -> torch.Tensor:
    """``[B, output_dim, h, w]`` dense features (after ``ln_post``/``proj``, unnormalised) of ImageNet- or
    CLIP-normalised ``images`` ``[B, 3, H, W]`` of any size (``h = H // patch``), from the named encoder."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder '{encoder}'; choose from {sorted(ENCODERS)}")
    visual = clip.visual
    tokens = ENCODERS[encoder](visual, images, **options)
    h, w = images.shape[-2] // visual.conv1.stride[0], images.shape[-1] // visual.conv1.stride[1]
    features = visual.ln_post(tokens) @ visual.proj.to(tokens.dtype)
    return features.transpose(1, 2).reshape(images.shape[0], -1, h, w)
