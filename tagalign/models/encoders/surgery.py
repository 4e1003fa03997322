"""CLIP Surgery's architecture surgery as TagAlign uses it (reference spec §1; training-free spec §6).

The last ``depth`` blocks get a second, "v-v" attention path whose outputs accumulate on a new residual stream
without FFN; the CLS token comes from the original path, the patch tokens from the new one. Tokens are returned
*before* ``ln_post``/``proj``.

* ``surgery``: TagAlign's encoder (v-v dual path in the last 6 blocks, bicubic positional resize), the default.
* ``clip_surgery``: the same architecture with CLIP Surgery's own bilinear positional resize; its label-set feature
  surgery acts on similarities (``InferenceConfig(feature_surgery=True)``).
"""

from __future__ import annotations

import torch
from torch import nn

from .options import Option, declare_options
from .vit import attend, embed, feed_forward, heads, plain_block

__all__ = ["clip_surgery", "surgery", "surgery_patch_tokens", "surgery_tokens", "validate_surgery_depth"]


def validate_surgery_depth(visual: nn.Module, depth: int) -> None:
    """Raise a clear error if ``visual`` is not a ViT this encoder supports or ``depth`` does not fit it."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None or not hasattr(visual, "conv1"):
        raise TypeError(f"surgery needs an open_clip VisionTransformer; got {type(visual).__name__}")
    if not 1 <= depth <= len(blocks):
        raise ValueError(f"surgery depth must be in 1..{len(blocks)} for this ViT ({len(blocks)} blocks); got {depth}")
    for index in range(len(blocks) - depth, len(blocks)):
        attn = getattr(blocks[index], "attn", None)
        if getattr(attn, "in_proj_weight", None) is None or not hasattr(attn, "out_proj"):
            raise TypeError(f"block {index}: surgery needs a fused-qkv attention with in_proj_weight and out_proj")


def _surgery(visual: nn.Module, images: torch.Tensor, depth: int, with_cls: bool, pos_mode: str) -> torch.Tensor:
    x, _ = embed(visual, images, pos_mode)
    blocks = visual.transformer.resblocks
    batch_first = getattr(visual.transformer, "batch_first", True)
    first = len(blocks) - depth
    for block in blocks[:first]:
        x = plain_block(block, x, batch_first)

    x_ori = x_new = x
    for index, block in enumerate(blocks[first:], start=first):
        if not with_cls and index == len(blocks) - 1:
            # The original path's last block only feeds the CLS token: the patch tokens need just its v.
            (v,) = heads(block, x_ori, slice(2, 3))
            return (x_new + attend(block, v, v, v))[:, 1:]
        q, k, v = heads(block, x_ori, slice(0, 3))
        # Both paths share the one qkv projection; the new path uses v as query and key.
        out_vv = attend(block, v, v, v)
        x_ori = feed_forward(block, x_ori + attend(block, q, k, v))
        x_new = x_new + out_vv
    return torch.cat([x_ori[:, :1], x_new[:, 1:]], dim=1)


def surgery_tokens(visual: nn.Module, images: torch.Tensor, depth: int = 6, pos_mode: str = "bicubic") -> torch.Tensor:
    """Surgery tokens ``[B, 1 + h*w, width]`` before ``ln_post``; any input size (``h = H // patch``)."""
    return _surgery(visual, images, depth, with_cls=True, pos_mode=pos_mode)


def surgery_patch_tokens(visual: nn.Module, images: torch.Tensor, depth: int = 6,
                         pos_mode: str = "bicubic") -> torch.Tensor:
    """The patch tokens of :func:`surgery_tokens`, ``[B, h*w, width]``, without computing the CLS token.

    Skips the original path's last attention and MLP, which only the CLS token reads (~7% of a ViT-B/16 forward).
    """
    return _surgery(visual, images, depth, with_cls=False, pos_mode=pos_mode)


_DEPTH = Option(int, 6, "how many final blocks get the v-v path (model.surgery_layers)", minimum=1, maximum="blocks")


@declare_options(depth=_DEPTH)
def surgery(visual: nn.Module, images: torch.Tensor, depth: int = 6) -> torch.Tensor:
    """TagAlign's surgery encoder (bicubic positional resize)."""
    return surgery_patch_tokens(visual, images, depth)


@declare_options(depth=_DEPTH)
def clip_surgery(visual: nn.Module, images: torch.Tensor, depth: int = 6) -> torch.Tensor:
    """CLIP Surgery's own variant (bilinear positional resize)."""
    return surgery_patch_tokens(visual, images, depth, pos_mode="bilinear")
