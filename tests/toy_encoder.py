"""A toy dense encoder, as a contributor would add one: one module in this shape, one registry entry.

``embedding_only``: the patch tokens straight after the patch embedding, positional table and pre-norm, no block.
"""

from __future__ import annotations

import torch
from torch import nn

from tagalign.models.encoders import as_tower


def embedding_only(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    tower = as_tower(visual)
    return tower.patches(tower.embed(images))
