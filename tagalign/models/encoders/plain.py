"""The plain path and MaskCLIP (training-free spec §1): the last block unchanged, or its attention made identity.

* ``vanilla``: the unmodified tower, ``x + attn; + FFN``.
* ``maskclip``: identity attention, the attention branch on ``v`` alone (``out_proj(v)``; on EVA02 through its inner
  norm); residual and FFN kept (the official code); ``residual=False`` gives the re-implementations'
  ``out_proj(v)`` alone.
"""

from __future__ import annotations

import torch
from torch import nn

from .options import Option, declare_options
from .towers import Tower, as_tower

__all__ = ["maskclip", "vanilla"]


def vanilla(visual: nn.Module | Tower, images: torch.Tensor) -> torch.Tensor:
    """The unmodified tower's patch tokens ``[B, h*w, width]``."""
    tower = as_tower(visual)
    x, grid = tower.trunk(images)
    return tower.patches(tower.blocks[-1].forward(x, grid))


@declare_options(residual=Option(bool, True, "keep the last block's residual and FFN (MaskCLIP's code); "
                                                "false: out_proj(v) alone"))
def maskclip(visual: nn.Module | Tower, images: torch.Tensor, residual: bool = True) -> torch.Tensor:
    """MaskCLIP: the last block's attention replaced by identity (the branch reads ``v``)."""
    tower = as_tower(visual)
    x, grid = tower.trunk(images)
    block = tower.blocks[-1]
    (v,) = block.qkv(x, grid, slice(2, 3))
    out = block.attention_output(None, v)
    return tower.patches(block.feed_forward(x + out) if residual else out)
