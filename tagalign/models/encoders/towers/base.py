"""What every dense encoder reads from a vision tower, whatever its family: :class:`Tower` and :class:`BlockView`.

A tower adapter reads an *unmodified* open_clip vision tower (never patches it): the patch embedding with its
positional table resized to any grid, each block part by part (per-head q/k/v after the tower's own q/k norms and
rotary embedding, the attention output through the tower's inner norm, projection and layer scale, the FFN with its
residual), the *dense head* that maps every patch token into the text space, and the tower's own pooled image
embedding. Tokens are ``[B, prefix + h*w, width]`` (``prefix`` = 1 for towers with a CLS token, 0 without).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BlockView", "Tower", "UnsupportedTowerError", "merge_heads", "softmax_scores", "split_heads"]


class UnsupportedTowerError(TypeError):
    """A vision tower (or a step of an encoder) that tagalign cannot read on this tower; the message says why."""


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, N, C]`` -> ``[B, heads, N, C / heads]``."""
    batch, tokens, channels = x.shape
    return x.view(batch, tokens, num_heads, channels // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, heads, N, head_dim]`` -> ``[B, N, heads * head_dim]``."""
    batch, num_heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, num_heads * head_dim)


def softmax_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``softmax(a bᵀ / sqrt(head_dim))`` over the last axis."""
    return (a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1])).softmax(dim=-1)


class BlockView(ABC):
    """One pre-norm transformer block ``x + ls1(attn(norm1 x))``, ``x + ls2(mlp(norm2 x))`` read part by part."""

    def __init__(self, block: nn.Module, num_heads: int, num_prefix: int):
        self.block, self.num_heads, self.num_prefix = block, num_heads, num_prefix

    @abstractmethod
    def qkv(self, x: torch.Tensor, grid: tuple[int, int], parts: slice = slice(0, 3)) -> list[torch.Tensor]:
        """The ``parts`` of ``[q, k, v]`` of ``norm1(x)``, each ``[B, heads, N, head_dim]``: q and k after the
        tower's q/k norms and, on RoPE towers, rotated on the patch rows as the block itself does."""

    @abstractmethod
    def project_out(self, mixed: torch.Tensor) -> torch.Tensor:
        """Merged heads ``[B, N, C]`` -> the block's attention branch output (inner norm, projection, layer
        scale), before the residual."""

    @abstractmethod
    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's FFN with its residual: ``x + ls2(mlp(norm2(x)))``."""

    def attention_output(self, attention: torch.Tensor | None, v: torch.Tensor) -> torch.Tensor:
        """The attention branch for given ``attention`` weights ``[B, heads, N, N]`` (None: identity, ``v``)."""
        return self.project_out(merge_heads(v if attention is None else attention @ v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Scaled dot-product attention of per-head ``q, k, v``, through :meth:`project_out`."""
        return self.project_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The unmodified block."""
        return self.feed_forward(x + self.attend(*self.qkv(x, grid)))


class Tower(ABC):
    """A vision tower of one family, read through its modules (see the module docstring).

    Attributes: ``family`` (a key of :data:`tagalign.models.encoders.towers.TOWER_FAMILIES`), ``visual`` (the
    open_clip tower), ``blocks`` (one :class:`BlockView` per block), ``num_prefix``, ``patch_size`` ``(ph, pw)``,
    ``width``, ``output_dim`` and ``pos_modes`` (the positional-resize modes it supports, the first the default).
    """

    family: str = ""
    pos_modes: tuple[str, ...] = ("bicubic",)
    map_readout: str | None = None  # the MAP-head readout (towers with an attention pool), else None

    def __init__(self, visual: nn.Module, blocks: list[BlockView], num_prefix: int, patch_size: tuple[int, int],
                 width: int, output_dim: int):
        self.visual, self.blocks, self.num_prefix = visual, blocks, num_prefix
        self.patch_size, self.width, self.output_dim = patch_size, width, output_dim

    def grid(self, images: torch.Tensor) -> tuple[int, int]:
        """The patch grid ``(h, w)`` of ``images`` ``[B, 3, H, W]``: ``H // patch``, ``W // patch``."""
        return images.shape[-2] // self.patch_size[0], images.shape[-1] // self.patch_size[1]

    def check_pos_mode(self, pos_mode: str) -> None:
        if pos_mode not in self.pos_modes:
            raise UnsupportedTowerError(f"positional resize '{pos_mode}' is not defined on the {self.family} tower "
                                        f"family (it supports {', '.join(self.pos_modes)})")

    @abstractmethod
    def embed(self, images: torch.Tensor, pos_mode: str = "bicubic") -> torch.Tensor:
        """Patch embedding, prefix tokens and the positional table resized to the grid (and the tower's pre-norm):
        the input of block 0, ``[B, prefix + h*w, width]``."""

    @abstractmethod
    def dense_head(self) -> nn.Module:
        """The module that maps tokens ``[..., width]`` (before the tower's final norm) into the text space
        ``[..., output_dim]``; it reads the tower's own parameters (copy it to train it)."""

    @abstractmethod
    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """The tower's own image embedding ``[B, output_dim]`` from the last block's output ``tokens``."""

    def patches(self, tokens: torch.Tensor) -> torch.Tensor:
        """The patch rows of ``[B, prefix + h*w, C]`` tokens."""
        return tokens[:, self.num_prefix:]

    def run(self, x: torch.Tensor, grid: tuple[int, int], start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Blocks ``start:stop``, unmodified."""
        for block in self.blocks[start:stop]:
            x = block.forward(x, grid)
        return x

    def trunk(self, images: torch.Tensor, depth: int = 1, pos_mode: str | None = None
              ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Every block but the last ``depth``, unmodified: ``([B, prefix + h*w, width], grid)``."""
        grid = self.grid(images)
        x = self.embed(images, pos_mode or self.pos_modes[0])
        return self.run(x, grid, 0, len(self.blocks) - depth), grid

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The unmodified tower's image embedding ``[B, output_dim]`` at any input size."""
        x, grid = self.trunk(images, depth=0)
        return self.pooled(x)

    def refuse(self, what: str, why: str) -> None:
        """Raise the error an encoder gives for a step that is not defined on this tower."""
        raise UnsupportedTowerError(f"{what} is not defined on the {self.family} tower family: {why}")
