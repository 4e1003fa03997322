"""A toy dense encoder, as a contributor would add one: one module in this shape, one registry entry.

``embedding_only``: the patch tokens straight after the patch embedding, positional table and ``ln_pre``, no block.
"""

from __future__ import annotations

import torch
from torch import nn

from tagalign.models.encoders.vit import embed


def embedding_only(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    tokens, _ = embed(visual, images)
    return tokens[:, 1:]
