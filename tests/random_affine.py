"""Give a freshly initialised CLIP what trained weights have: non-zero biases and non-identity LayerNorms.

open_clip initialises every attention/MLP bias to 0 and every LayerNorm to (1, 0). A formula that drops a bias or
swaps one LayerNorm for another then gives the same numbers, and a test cannot tell. Both towers are perturbed.
"""

from __future__ import annotations

import torch
from torch import nn

from tagalign.models.clip import ClipIdentity, clip_identity, weights_hash


@torch.no_grad()
def randomize_affine_(model: nn.Module, seed: int = 0, scale: float = 0.2) -> nn.Module:
    """Random biases and LayerNorm scales/shifts, in place; the CLIP identity hash is recomputed."""
    generator = torch.Generator().manual_seed(seed)

    def noise(tensor: torch.Tensor) -> torch.Tensor:
        return torch.randn(tensor.shape, generator=generator).to(tensor.dtype)

    for name, param in model.named_parameters():
        if name.endswith("bias") and param.ndim == 1:  # Linear, conv, attention in/out projections, LayerNorm
            param.copy_(scale * noise(param))
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            module.weight.copy_(1 + scale * noise(module.weight))
    if hasattr(model, "tagalign_identity"):
        old = clip_identity(model)
        model.tagalign_identity = ClipIdentity(**{**old.to_dict(), "weights_hash": weights_hash(model)})
    return model
