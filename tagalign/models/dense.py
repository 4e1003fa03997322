"""Dense token encoders that read an *unmodified* open_clip ``VisionTransformer``.

The CLIP model is never patched: these are functions over its weights. ``surgery_tokens`` is CLIP Surgery's
architecture surgery as used by TagAlign (reference spec §1): the last ``depth`` blocks get a second,
"v-v" attention path whose outputs accumulate on a new residual stream without FFN; the CLS token comes from the
original path, the patch tokens from the new one. Tokens are returned *before* ``ln_post``/``proj``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["POS_INTERPOLATIONS", "interpolate_pos_embed", "surgery_patch_tokens", "surgery_tokens",
           "validate_surgery_depth"]


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


def _embed(visual: nn.Module, images: torch.Tensor, pos_mode: str = "bicubic") -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch embedding + CLS + (interpolated) positional embedding + ln_pre -> ``[B, 1+h*w, C]``."""
    x = visual.conv1(images)
    batch, channels, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(batch, 1, channels)
    x = torch.cat([cls, x], dim=1)
    x = x + interpolate_pos_embed(visual.positional_embedding, (h, w), tuple(visual.grid_size), pos_mode).to(x.dtype)
    return visual.ln_pre(x), (h, w)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, channels = x.shape
    return x.view(batch, tokens, heads, channels // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def _is_plain_block(block: nn.Module) -> bool:
    """True for open_clip's standard pre-LN block (fused-qkv ``nn.MultiheadAttention``, no extra k/v biases)."""
    attn = getattr(block, "attn", None)
    return (
        isinstance(attn, nn.MultiheadAttention)
        and attn.in_proj_weight is not None
        and attn.bias_k is None
        and all(hasattr(block, name) for name in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"))
    )


def _heads(block: nn.Module, x: torch.Tensor, parts: slice) -> list[torch.Tensor]:
    """The ``parts`` of ``[q, k, v]`` for ``ln_1(x)``, each ``[B, heads, N, head_dim]``; only those are projected."""
    attn, width = block.attn, x.shape[-1]
    rows = slice(parts.start * width, parts.stop * width)
    bias = attn.in_proj_bias[rows] if attn.in_proj_bias is not None else None
    projected = F.linear(block.ln_1(x), attn.in_proj_weight[rows], bias)
    return [_split_heads(t, attn.num_heads) for t in projected.chunk(parts.stop - parts.start, dim=-1)]


def _attend(block: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention, merged heads, the block's ``out_proj`` and layer scale."""
    return block.ls_1(block.attn.out_proj(_merge_heads(F.scaled_dot_product_attention(q, k, v))))


def _feed_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _plain_block(block: nn.Module, x: torch.Tensor, batch_first: bool) -> torch.Tensor:
    """One unmodified CLIP block on ``[B, N, C]``: written out with SDPA for open_clip's plain block, else its forward.

    Under ``no_grad``, ``nn.MultiheadAttention`` takes its native fast path, which on CPU is a separate
    matmul-softmax-matmul; SDPA picks a fused kernel. Same math.
    """
    if _is_plain_block(block):
        x = x + _attend(block, *_heads(block, x, slice(0, 3)))
        return _feed_forward(block, x)
    return block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)


def _surgery(visual: nn.Module, images: torch.Tensor, depth: int, with_cls: bool, pos_mode: str) -> torch.Tensor:
    x, _ = _embed(visual, images, pos_mode)
    blocks = visual.transformer.resblocks
    batch_first = getattr(visual.transformer, "batch_first", True)
    trunk = len(blocks) - depth
    for block in blocks[:trunk]:
        x = _plain_block(block, x, batch_first)

    x_ori = x_new = x
    for index, block in enumerate(blocks[trunk:], start=trunk):
        if not with_cls and index == len(blocks) - 1:
            # The original path's last block only feeds the CLS token: the patch tokens need just its v.
            (v,) = _heads(block, x_ori, slice(2, 3))
            return (x_new + _attend(block, v, v, v))[:, 1:]
        q, k, v = _heads(block, x_ori, slice(0, 3))
        # Both paths share the one qkv projection; the new path uses v as query and key.
        out_vv = _attend(block, v, v, v)
        x_ori = _feed_forward(block, x_ori + _attend(block, q, k, v))
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
