"""timm vision towers inside open_clip (``TimmModel``): SigLIP/SigLIP2, PE-Core and EVA02 (training-free spec-2 §7).

* ``siglip``: timm ``VisionTransformer`` with an attention-pool ("MAP") head and no CLS token (SigLIP, SigLIP2).
* ``pe_core``: timm ``Eva`` with a MAP head, a CLS token, absolute positions and 2-D RoPE (Perception Encoder).
* ``eva02``: timm ``Eva`` pooled by its CLS token, RoPE, an inner attention norm and SwiGLU (EVA02-CLIP).

Blocks are read through the module's own tensors: q/k/v (fused or separate, with separate biases where the block
has them), ``q_norm``/``k_norm``, RoPE on the patch rows before the scaling (as timm's attention does, also in the
q-q/k-k variants), the inner ``attn.norm``, ``proj``, and the layer scale (``ls1``/``gamma_1``). Positions are
resampled as timm's ``dynamic_img_size`` does (bicubic, antialiased) and the RoPE table is rebuilt for the grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BlockView, Tower, UnsupportedTowerError, split_heads
from .heads import MAP_READOUTS, MapValueHead, TokenHead

__all__ = ["TimmBlock", "TimmTower", "timm_family"]


def _layer_scale(block: nn.Module, first: bool) -> nn.Module | torch.Tensor | None:
    scale = getattr(block, "ls1" if first else "ls2", None)
    return scale if scale is not None else getattr(block, "gamma_1" if first else "gamma_2", None)


def _scaled(scale, x: torch.Tensor) -> torch.Tensor:
    if scale is None:
        return x
    return scale(x) if isinstance(scale, nn.Module) else scale * x


def _check_block(index: int, block: nn.Module, num_prefix: int) -> None:
    attn = getattr(block, "attn", None)
    if attn is None or not all(hasattr(block, name) for name in ("norm1", "norm2", "mlp")):
        raise UnsupportedTowerError(f"block {index} ({type(block).__name__}) is not a pre-norm block with norm1, "
                                    f"attn, norm2 and mlp")
    if "PostNorm" in type(block).__name__ or type(block).__name__ == "ResPostBlock":
        raise UnsupportedTowerError(f"block {index} is a post-norm block ({type(block).__name__}), not supported")
    if getattr(attn, "gate", None) is not None:
        raise UnsupportedTowerError(f"block {index} has gated attention, not supported")
    if getattr(attn, "num_kv_heads", attn.num_heads) != attn.num_heads:
        raise UnsupportedTowerError(f"block {index} uses grouped-query attention, not supported")
    if getattr(attn, "num_prefix_tokens", num_prefix) != num_prefix:
        raise UnsupportedTowerError(f"block {index} rotates from token {attn.num_prefix_tokens}, the tower has "
                                    f"{num_prefix} prefix tokens")


class TimmBlock(BlockView):
    """A timm ``Block`` (ViT) or ``EvaBlock``: ``norm1``, attention, ``ls1``/``gamma_1``, ``norm2``, ``mlp``,
    ``ls2``/``gamma_2``."""

    def __init__(self, block: nn.Module, num_heads: int, num_prefix: int, rope):
        super().__init__(block, num_heads, num_prefix)
        self.rope = rope  # callable grid -> RoPE table, or None

    def _projections(self, y: torch.Tensor, parts: slice) -> list[torch.Tensor]:
        attn = self.block.attn
        if getattr(attn, "qkv", None) is None:
            names = ("q_proj", "k_proj", "v_proj")[parts]
            return [getattr(attn, name)(y) for name in names]
        width = attn.qkv.weight.shape[0] // 3
        rows = slice(parts.start * width, parts.stop * width)
        out = F.linear(y, attn.qkv.weight[rows], None if attn.qkv.bias is None else attn.qkv.bias[rows])
        if getattr(attn, "q_bias", None) is not None:  # Eva's separate q/k/v biases on a fused qkv
            out = out + torch.cat([attn.q_bias, attn.k_bias, attn.v_bias])[rows]
        return list(out.chunk(parts.stop - parts.start, dim=-1))

    def qkv(self, x: torch.Tensor, grid: tuple[int, int], parts: slice = slice(0, 3)) -> list[torch.Tensor]:
        from timm.layers import apply_rot_embed_cat

        attn = self.block.attn
        wanted = range(parts.start, parts.stop)
        heads = [split_heads(t, self.num_heads) for t in self._projections(self.block.norm1(x), parts)]
        table = self.rope(grid) if self.rope is not None else None
        out = []
        for which, t in zip(wanted, heads, strict=True):
            if which < 2:
                t = (attn.q_norm if which == 0 else attn.k_norm)(t)
                if table is not None:
                    npt = self.num_prefix
                    rotated = apply_rot_embed_cat(t[:, :, npt:], table.to(t), half=getattr(attn, "rotate_half", False))
                    t = torch.cat([t[:, :, :npt], rotated], dim=2)
            out.append(t)
        return out

    def project_out(self, mixed: torch.Tensor) -> torch.Tensor:
        attn = self.block.attn
        return _scaled(_layer_scale(self.block, True), attn.proj(attn.norm(mixed)))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _scaled(_layer_scale(self.block, False), self.block.mlp(self.block.norm2(x)))


def timm_family(trunk: nn.Module) -> str:
    """``siglip``, ``pe_core`` or ``eva02`` for a timm trunk of those shapes; a clear error otherwise."""
    kind = type(trunk).__name__
    pool = getattr(trunk, "attn_pool", None)
    prefix = getattr(trunk, "num_prefix_tokens", 0)
    if kind == "VisionTransformer" and pool is not None and prefix == 0:
        return "siglip"
    if kind == "Eva" and pool is not None:
        return "pe_core"
    if kind == "Eva" and getattr(trunk, "global_pool", "") == "token" and prefix >= 1:
        return "eva02"
    raise UnsupportedTowerError(
        f"timm tower {kind} (global_pool '{getattr(trunk, 'global_pool', None)}', {prefix} prefix tokens, "
        f"{'with' if pool is not None else 'no'} attention pool) is not a family tagalign reads: a VisionTransformer "
        f"with a MAP head (SigLIP), an Eva with a MAP head (PE-Core) or an Eva pooled by its CLS token (EVA02)")


class TimmTower(Tower):
    """A timm trunk in open_clip's ``TimmModel`` (``visual.trunk`` + ``visual.head``)."""

    def __init__(self, visual: nn.Module, map_readout: str = "value"):
        trunk = visual.trunk
        self.family = timm_family(trunk)
        if map_readout not in MAP_READOUTS:
            raise ValueError(f"map_readout must be one of {MAP_READOUTS}, got '{map_readout}'")
        if getattr(trunk, "rope_mixed", False):
            raise UnsupportedTowerError("per-depth (mixed) RoPE is not supported")
        pool = getattr(trunk, "attn_pool", None)
        if pool is not None and (getattr(pool, "pos_embed", None) is not None or pool.latent_len != 1):
            raise UnsupportedTowerError("only attention pools with one latent query and no positional table are "
                                        "supported")
        self.map_readout = map_readout if pool is not None else None
        self.net, self.visual = trunk, visual  # the timm model (its name "trunk" is taken by Tower.trunk)
        prefix = trunk.num_prefix_tokens
        rope = self._rope_table if getattr(trunk, "rope", None) is not None else None
        blocks = []
        for index, block in enumerate(trunk.blocks):
            _check_block(index, block, prefix)
            blocks.append(TimmBlock(block, block.attn.num_heads, prefix, rope))
        patch = trunk.patch_embed.patch_size
        reference = trunk.patch_embed.proj.weight
        probe = torch.zeros(1, 1, trunk.embed_dim, device=reference.device, dtype=reference.dtype)
        super().__init__(visual, blocks, num_prefix=prefix, patch_size=(patch[0], patch[1]),
                         width=trunk.embed_dim, output_dim=self._head()(probe).shape[-1])
        self._tables: dict[tuple[int, int], torch.Tensor] = {}

    def _head(self) -> nn.Sequential:
        """What follows pooling: ``fc_norm``, the trunk's ``head`` (the projection when open_clip's ``timm_proj``
        is null) and open_clip's own head."""
        return nn.Sequential(self.net.fc_norm, self.net.head_drop, self.net.head, self.visual.head)

    def _rope_table(self, grid: tuple[int, int]) -> torch.Tensor:
        """The RoPE table ``[h*w, 2*dim]`` for ``grid`` (the tower's cached one on its own grid)."""
        rope = self.net.rope
        if tuple(grid) == tuple(self.net.patch_embed.grid_size) and getattr(rope, "pos_embed", None) is not None:
            return rope.get_embed()
        if tuple(grid) not in self._tables:
            self._tables[tuple(grid)] = rope._build_embed_cat(list(grid), rope.bands)
        return self._tables[tuple(grid)]

    def embed(self, images: torch.Tensor, pos_mode: str = "bicubic") -> torch.Tensor:
        from timm.layers import resample_abs_pos_embed

        self.check_pos_mode(pos_mode)
        trunk = self.net
        x = trunk.patch_embed.proj(images)
        h, w = x.shape[-2:]
        x = trunk.patch_embed.norm(x.flatten(2).transpose(1, 2))
        prefix = [t.expand(x.shape[0], -1, -1) for t in (getattr(trunk, "cls_token", None),
                                                          getattr(trunk, "reg_token", None)) if t is not None]
        pos = trunk.pos_embed
        if pos is not None:
            pos = resample_abs_pos_embed(pos, new_size=(h, w), old_size=trunk.patch_embed.grid_size,
                                         num_prefix_tokens=0 if trunk.no_embed_class else trunk.num_prefix_tokens)
        if pos is not None and trunk.no_embed_class:
            x = x + pos
        x = torch.cat([*prefix, x], dim=1)
        if pos is not None and not trunk.no_embed_class:
            x = x + pos
        return trunk.norm_pre(x)

    def dense_head(self) -> nn.Module:
        if self.net.attn_pool is None:
            return TokenHead(self.net.norm, self._head())
        return MapValueHead(self.net.norm, self.net.attn_pool, self._head(),
                            with_mlp=self.map_readout == "value_mlp")

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.net.norm(tokens)
        x = self.net.attn_pool(x) if self.net.attn_pool is not None else x[:, 0]
        return self._head()(x)
