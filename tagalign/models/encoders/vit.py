"""Shared plumbing for reading an *unmodified* open_clip ``VisionTransformer`` block by block.

Every encoder family builds on these: the patch embedding with a resized positional table, the per-head q/k/v of a
block, its attention output, FFN and the plain (unmodified) block. Tokens are ``[B, N, C]`` (batch first) and stay
before ``ln_post``; :func:`tagalign.models.encoders.dense_features` applies the shared head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["POS_INTERPOLATIONS", "attend", "attention_output", "embed", "feed_forward", "global_token", "heads",
           "interpolate_pos_embed", "is_plain_block", "merge_heads", "patch_grid", "plain_block", "softmax_scores",
           "split_heads", "trunk"]


POS_INTERPOLATIONS = ("bicubic", "bilinear")


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], source_grid: tuple[int, int],
                          mode: str = "bicubic") -> torch.Tensor:
    """Resize a learnt ``[1 + gh*gw, C]`` positional table to a ``grid = (h, w)`` token grid.

    ``mode``: bicubic (TCL/TagAlign, the default) or bilinear (CLIP Surgery's own code); ``align_corners=False``,
    CLS row kept as is, row-major flattening; the parameter is not modified.
    """
    if mode not in POS_INTERPOLATIONS:
        raise ValueError(f"positional interpolation must be one of {POS_INTERPOLATIONS}, got '{mode}'")
    if tuple(grid) == tuple(source_grid):
        return pos_embed
    cls_row, table = pos_embed[:1], pos_embed[1:]
    channels = table.shape[-1]
    table = table.reshape(1, source_grid[0], source_grid[1], channels).permute(0, 3, 1, 2)
    table = F.interpolate(table.float(), size=tuple(grid), mode=mode, align_corners=False)
    table = table.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], channels).to(pos_embed.dtype)
    return torch.cat([cls_row, table], dim=0)


def patch_grid(visual: nn.Module, images: torch.Tensor) -> tuple[int, int]:
    """The token grid ``(h, w)`` of ``images`` ``[B, 3, H, W]``: ``H // patch``, ``W // patch``."""
    stride = visual.conv1.stride
    return images.shape[-2] // stride[0], images.shape[-1] // stride[1]


def embed(visual: nn.Module, images: torch.Tensor, pos_mode: str = "bicubic") -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch embedding + CLS + (interpolated) positional embedding + ln_pre -> ``([B, 1+h*w, C], (h, w))``."""
    x = visual.conv1(images)
    batch, channels, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(batch, 1, channels)
    x = torch.cat([cls, x], dim=1)
    x = x + interpolate_pos_embed(visual.positional_embedding, (h, w), tuple(visual.grid_size), pos_mode).to(x.dtype)
    return visual.ln_pre(x), (h, w)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, N, C]`` -> ``[B, heads, N, C / heads]``."""
    batch, tokens, channels = x.shape
    return x.view(batch, tokens, num_heads, channels // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, heads, N, head_dim]`` -> ``[B, N, heads * head_dim]``."""
    batch, num_heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, num_heads * head_dim)


def is_plain_block(block: nn.Module) -> bool:
    """True for open_clip's standard pre-LN block (fused-qkv ``nn.MultiheadAttention``, no extra k/v biases)."""
    attn = getattr(block, "attn", None)
    return (
        isinstance(attn, nn.MultiheadAttention)
        and attn.in_proj_weight is not None
        and attn.bias_k is None
        and all(hasattr(block, name) for name in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"))
    )


def heads(block: nn.Module, x: torch.Tensor, parts: slice) -> list[torch.Tensor]:
    """The ``parts`` of ``[q, k, v]`` for ``ln_1(x)``, each ``[B, heads, N, head_dim]``; only those are projected."""
    attn, width = block.attn, x.shape[-1]
    rows = slice(parts.start * width, parts.stop * width)
    bias = attn.in_proj_bias[rows] if attn.in_proj_bias is not None else None
    projected = F.linear(block.ln_1(x), attn.in_proj_weight[rows], bias)
    return [split_heads(t, attn.num_heads) for t in projected.chunk(parts.stop - parts.start, dim=-1)]


def attention_output(block: nn.Module, attention: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``out_proj`` of the heads' ``attention @ v`` (with the block's layer scale)."""
    return block.ls_1(block.attn.out_proj(merge_heads(attention @ v)))


def attend(block: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention, merged heads, the block's ``out_proj`` and layer scale."""
    return block.ls_1(block.attn.out_proj(merge_heads(F.scaled_dot_product_attention(q, k, v))))


def softmax_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``softmax(a bᵀ / sqrt(head_dim))`` over the last axis."""
    return (a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1])).softmax(dim=-1)


def feed_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block's FFN with its residual: ``x + ls_2(mlp(ln_2(x)))``."""
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def plain_block(block: nn.Module, x: torch.Tensor, batch_first: bool = True) -> torch.Tensor:
    """One unmodified CLIP block on ``[B, N, C]``: written out with SDPA for open_clip's plain block, else its forward.

    Under ``no_grad``, ``nn.MultiheadAttention`` takes its native fast path, which on CPU is a separate
    matmul-softmax-matmul; SDPA picks a fused kernel. Same math.
    """
    if is_plain_block(block):
        x = x + attend(block, *heads(block, x, slice(0, 3)))
        return feed_forward(block, x)
    return block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)


def trunk(visual: nn.Module, images: torch.Tensor, depth: int = 1, pos_mode: str = "bicubic") -> torch.Tensor:
    """Every block but the last ``depth``, unmodified: ``[B, 1 + h*w, width]``."""
    x, _ = embed(visual, images, pos_mode)
    batch_first = getattr(visual.transformer, "batch_first", True)
    for block in visual.transformer.resblocks[:-depth]:
        x = plain_block(block, x, batch_first)
    return x


def global_token(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The unmodified CLIP's CLS token ``[B, width]`` before ``ln_post`` (positional table resized bicubically)."""
    x = trunk(visual, images)
    return plain_block(visual.transformer.resblocks[-1], x, getattr(visual.transformer, "batch_first", True))[:, 0]
