"""CLIP Surgery's architecture surgery as TagAlign uses it (reference spec §1; training-free spec §6).

The last ``depth`` blocks get a second, "v-v" attention path whose outputs accumulate on a new residual stream
without FFN; the prefix (CLS) tokens come from the original path, the patch tokens from the new one. Tokens are
returned *before* the tower's dense head.

* ``surgery``: TagAlign's encoder (v-v dual path in the last 6 blocks, bicubic positional resize), the default.
* ``clip_surgery``: the same architecture with CLIP Surgery's own bilinear positional resize (open_clip ViTs only:
  timm towers resample their tables themselves); its label-set feature surgery acts on similarities
  (``InferenceConfig(feature_surgery=True)``).
"""

from __future__ import annotations

import torch
from torch import nn

from .options import Option, declare_options
from .towers import Tower, as_tower

__all__ = ["clip_surgery", "surgery", "surgery_patch_tokens", "surgery_streams", "surgery_tokens",
           "validate_surgery_depth"]


def validate_surgery_depth(visual: nn.Module | Tower, depth: int) -> None:
    """Raise a clear error if ``visual`` is not a tower tagalign reads or ``depth`` does not fit it."""
    blocks = len(as_tower(visual).blocks)
    if not 1 <= depth <= blocks:
        raise ValueError(f"surgery depth must be in 1..{blocks} for this ViT ({blocks} blocks); got {depth}")


def surgery_streams(visual: nn.Module | Tower, images: torch.Tensor, depth: int = 6, pos_mode: str = "bicubic",
                    with_original: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(original tokens [B, prefix + h*w, width] or None, surgery patch tokens [B, h*w, width])``.

    The original path is the unmodified tower (its output gives the pooled image embedding); without
    ``with_original`` its last attention and MLP, which only that output reads, are skipped (~7% of a ViT-B/16).
    """
    tower = as_tower(visual)
    validate_surgery_depth(tower, depth)
    first = len(tower.blocks) - depth
    x, grid = tower.trunk(images, depth, pos_mode)
    x_ori = x_new = x
    for index, block in enumerate(tower.blocks[first:], start=first):
        if not with_original and index == len(tower.blocks) - 1:
            (v,) = block.qkv(x_ori, grid, slice(2, 3))
            return None, tower.patches(x_new + block.attend(v, v, v))
        q, k, v = block.qkv(x_ori, grid)
        # Both paths share the one qkv projection; the new path uses v as query and key.
        out_vv = block.attend(v, v, v)
        x_ori = block.feed_forward(x_ori + block.attend(q, k, v))
        x_new = x_new + out_vv
    return x_ori, tower.patches(x_new)


def surgery_tokens(visual: nn.Module | Tower, images: torch.Tensor, depth: int = 6,
                   pos_mode: str = "bicubic") -> torch.Tensor:
    """Surgery tokens ``[B, prefix + h*w, width]`` (prefix from the original path) before the dense head."""
    tower = as_tower(visual)
    original, patches = surgery_streams(tower, images, depth, pos_mode)
    return torch.cat([original[:, :tower.num_prefix], patches], dim=1)


def surgery_patch_tokens(visual: nn.Module | Tower, images: torch.Tensor, depth: int = 6,
                         pos_mode: str = "bicubic") -> torch.Tensor:
    """The patch tokens of :func:`surgery_tokens`, ``[B, h*w, width]``, without the original path's last block."""
    return surgery_streams(visual, images, depth, pos_mode, with_original=False)[1]


_DEPTH = Option(int, 6, "how many final blocks get the v-v path (model.surgery_layers)", minimum=1, maximum="blocks")


@declare_options(depth=_DEPTH)
def surgery(visual: nn.Module | Tower, images: torch.Tensor, depth: int = 6) -> torch.Tensor:
    """TagAlign's surgery encoder (bicubic positional resize)."""
    return surgery_patch_tokens(visual, images, depth)


@declare_options(depth=_DEPTH)
def clip_surgery(visual: nn.Module | Tower, images: torch.Tensor, depth: int = 6) -> torch.Tensor:
    """CLIP Surgery's own variant (bilinear positional resize)."""
    return surgery_patch_tokens(visual, images, depth, pos_mode="bilinear")


def _bilinear_positions(tower: Tower) -> None:
    tower.check_pos_mode("bilinear")


clip_surgery.tower_check = _bilinear_positions
