"""open_clip's own ``VisionTransformer`` (OpenAI, LAION OpenCLIP, MetaCLIP, DFN weights): CLS token, learnt absolute
positions, fused-qkv ``nn.MultiheadAttention`` blocks, dense head ``ln_post(x) @ proj`` (training-free spec §0)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BlockView, Tower, UnsupportedTowerError, split_heads
from .heads import ProjectionHead

__all__ = ["POS_INTERPOLATIONS", "OpenClipBlock", "OpenClipViT", "interpolate_pos_embed"]

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


def _unreadable(index: int, block: nn.Module) -> str | None:
    """Why block ``index`` cannot be read part by part (None if it can)."""
    attn = getattr(block, "attn", None)
    plain = (isinstance(attn, nn.MultiheadAttention) and attn.in_proj_weight is not None and attn.bias_k is None
             and all(hasattr(block, name) for name in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2")))
    if not plain:
        return (f"block {index} is not open_clip's pre-norm block with a fused-qkv nn.MultiheadAttention "
                f"(in_proj_weight, out_proj, no bias_k)")
    if not isinstance(getattr(block, "ln_attn", nn.Identity()), nn.Identity):
        return f"block {index} has a scale-attention norm (ln_attn), which the encoders do not read"
    return None


class OpenClipBlock(BlockView):
    """open_clip's ``ResidualAttentionBlock``: ``ln_1``, fused ``in_proj``, ``out_proj``, ``ls_1``, ``ln_2``,
    ``mlp``, ``ls_2``. A block of another kind runs through its own forward and refuses to be read in parts."""

    def __init__(self, block: nn.Module, num_heads: int, unreadable: str | None, batch_first: bool):
        super().__init__(block, num_heads, 1)
        self.unreadable, self.batch_first = unreadable, batch_first

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if self.unreadable is None:
            return super().forward(x, grid)
        return self.block(x) if self.batch_first else self.block(x.transpose(0, 1)).transpose(0, 1)

    def qkv(self, x: torch.Tensor, grid: tuple[int, int], parts: slice = slice(0, 3)) -> list[torch.Tensor]:
        if self.unreadable is not None:
            raise UnsupportedTowerError(self.unreadable)
        attn, width = self.block.attn, x.shape[-1]
        rows = slice(parts.start * width, parts.stop * width)
        bias = attn.in_proj_bias[rows] if attn.in_proj_bias is not None else None
        projected = F.linear(self.block.ln_1(x), attn.in_proj_weight[rows], bias)
        return [split_heads(t, self.num_heads) for t in projected.chunk(parts.stop - parts.start, dim=-1)]

    def project_out(self, mixed: torch.Tensor) -> torch.Tensor:
        return self.block.ls_1(self.block.attn.out_proj(mixed))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block.ls_2(self.block.mlp(self.block.ln_2(x)))


class OpenClipViT(Tower):
    """An open_clip ``VisionTransformer`` with a CLS token and ``proj``."""

    family = "open_clip_vit"
    pos_modes = POS_INTERPOLATIONS

    def __init__(self, visual: nn.Module):
        blocks = list(visual.transformer.resblocks)
        batch_first = getattr(visual.transformer, "batch_first", True)
        if getattr(visual, "proj", None) is None:
            raise UnsupportedTowerError("this open_clip VisionTransformer has no output projection 'proj'")
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise UnsupportedTowerError("only open_clip VisionTransformers pooled by their CLS token are supported "
                                        f"(pool_type 'tok', no attn_pool); got pool_type "
                                        f"'{getattr(visual, 'pool_type', None)}'")
        views = [OpenClipBlock(b, b.attn.num_heads, _unreadable(i, b), batch_first) for i, b in enumerate(blocks)]
        super().__init__(visual, views, num_prefix=1,
                         patch_size=tuple(visual.conv1.stride), width=visual.conv1.out_channels,
                         output_dim=visual.proj.shape[1])

    def embed(self, images: torch.Tensor, pos_mode: str = "bicubic") -> torch.Tensor:
        self.check_pos_mode(pos_mode)
        visual = self.visual
        x = visual.conv1(images)
        batch, channels, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(batch, 1, channels)
        x = torch.cat([cls, x], dim=1)
        pos = interpolate_pos_embed(visual.positional_embedding, (h, w), tuple(visual.grid_size), pos_mode)
        return visual.ln_pre(x + pos.to(x.dtype))

    def dense_head(self) -> nn.Module:
        return ProjectionHead(self.visual.ln_post, self.visual.proj)

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.visual.ln_post(tokens[:, 0]) @ self.visual.proj.to(tokens.dtype)
