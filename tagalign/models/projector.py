"""TagAlign's projector (reference spec §3): gated residual conv units + a trainable clone of the tower's dense head.

Each unit is ``x + tanh(g) * Conv3x3(GELU(LN2d(x)))`` with the gate ``g`` initialised to 0, so the projector is
exactly the frozen tower's dense head at step 0 (``ln_post @ proj`` on open_clip ViTs; the MAP value path on
SigLIP/PE-Core; ``head(norm(x))`` on EVA02). For ViT-B/16 (width 768, output 512) it has 21,637,636 parameters.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .encoders.towers import Tower, as_tower

__all__ = ["GatedConvProjector", "GatedConvUnit", "LayerNorm2d", "build_projector"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of a ``[B, C, H, W]`` map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GatedConvUnit(nn.Module):
    """Pre-activation residual conv unit with a tanh gate initialised to zero."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.norm = LayerNorm2d(channels, eps=1e-5)
        self.act = nn.GELU()
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.gate) * self.conv(self.act(self.norm(x)))


class GatedConvProjector(nn.Module):
    """``num_units`` gated conv units on the width-C token map, then a trainable clone of the tower's dense head
    (applied to every pixel)."""

    def __init__(self, visual: nn.Module | Tower, num_units: int = 4, kernel_size: int = 3):
        super().__init__()
        tower = as_tower(visual)
        self.units = nn.Sequential(*[GatedConvUnit(tower.width, kernel_size) for _ in range(num_units)])
        self.head = copy.deepcopy(tower.dense_head()).requires_grad_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.units(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def build_projector(visual: nn.Module | Tower, config: dict | nn.Module | None = None) -> nn.Module:
    """Build the projector from a config dict (``{"type": "gated_conv", "num_units": 4, "kernel_size": 3}``)."""
    if isinstance(config, nn.Module):
        return config
    config = dict(config or {})
    kind = config.pop("type", "gated_conv")
    if kind != "gated_conv":
        raise ValueError(f"unknown projector type '{kind}' (supported: gated_conv)")
    return GatedConvProjector(visual, **config)
