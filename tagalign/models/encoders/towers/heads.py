"""Dense heads: the map from a tower's tokens (before its final norm) into the text space, one per head kind.

* :class:`ProjectionHead`: ``ln_post(x) @ proj`` (open_clip's ``VisionTransformer``: OpenAI, LAION, MetaCLIP, DFN).
* :class:`TokenHead`: ``head(norm(x))`` (timm towers pooled by their CLS token, e.g. EVA02).
* :class:`MapValueHead`: the value path of an attention-pool ("MAP") head per token,
  ``head(proj(W_v norm(x) + b_v))`` (SigLIP/SigLIP2, PE-Core), TextRegion's dense readout; ``with_mlp`` adds the
  pool's ``z + mlp(norm(z))``, which makes a one-token image's readout equal its pooled embedding.

Parameter names are part of checkpoints (the projector trains a copy of its tower's head): keep them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MAP_READOUTS", "MapValueHead", "ProjectionHead", "TokenHead"]

#: Dense readouts through a MAP head: ``value`` (TextRegion's, the default) or ``value_mlp`` (with the pool's MLP).
MAP_READOUTS = ("value", "value_mlp")


class ProjectionHead(nn.Module):
    """``ln_post(x) @ proj``."""

    def __init__(self, ln_post: nn.Module, proj: nn.Parameter):
        super().__init__()
        self.ln_post = ln_post
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_post(x) @ self.proj.to(x.dtype)


class TokenHead(nn.Module):
    """``head(norm(x))``: a timm trunk's final norm and its classifier head (the CLIP projection)."""

    def __init__(self, norm: nn.Module, head: nn.Module):
        super().__init__()
        self.norm = norm
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x))


class MapValueHead(nn.Module):
    """Per token, the attention pool's value path: ``head(proj(v(norm(x))))`` (+ ``mlp`` residual if kept)."""

    def __init__(self, norm: nn.Module, pool: nn.Module, head: nn.Module, with_mlp: bool = False):
        super().__init__()
        if with_mlp and getattr(pool, "mlp", None) is None:
            raise ValueError("this attention pool has no MLP: use the 'value' readout")
        self.norm = norm
        self.kv = pool.kv
        self.proj = pool.proj
        self.pool_norm = pool.norm if with_mlp else None
        self.mlp = pool.mlp if with_mlp else None
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        bias = None if self.kv.bias is None else self.kv.bias[width:]
        z = self.proj(F.linear(self.norm(x), self.kv.weight[width:], bias))
        if self.mlp is not None:
            z = z + self.mlp(self.pool_norm(z))
        return self.head(z)
