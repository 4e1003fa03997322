"""The plain path and MaskCLIP (training-free spec §1): the last block unchanged, or its attention made identity.

* ``vanilla``: plain CLIP, ``x + attn; + FFN``.
* ``maskclip``: identity attention, ``out_proj(v)``; residual and FFN kept (the official code); ``residual=False``
  gives the re-implementations' ``out_proj(v)`` alone.
"""

from __future__ import annotations

import torch
from torch import nn

from .options import Option, declare_options
from .vit import feed_forward, heads, merge_heads, plain_block, trunk

__all__ = ["maskclip", "vanilla"]


def vanilla(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The unmodified CLIP's patch tokens ``[B, h*w, width]``."""
    x = trunk(visual, images)
    return plain_block(visual.transformer.resblocks[-1], x, getattr(visual.transformer, "batch_first", True))[:, 1:]


@declare_options(residual=Option(bool, True, "keep the last block's residual and FFN (MaskCLIP's code); "
                                                "false: out_proj(v) alone"))
def maskclip(visual: nn.Module, images: torch.Tensor, residual: bool = True) -> torch.Tensor:
    """MaskCLIP: the last block's attention replaced by ``out_proj(v)``."""
    x = trunk(visual, images)
    block = visual.transformer.resblocks[-1]
    (v,) = heads(block, x, slice(2, 3))
    out = block.ls_1(block.attn.out_proj(merge_heads(v)))
    return (feed_forward(block, x + out) if residual else out)[:, 1:]
