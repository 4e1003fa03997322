"""Tower adapters: every dense encoder reads a vision tower through one :class:`Tower`, whatever its family.

========================  ==========================================================  =====================
family                    open_clip towers                                            dense head
========================  ==========================================================  =====================
``open_clip_vit``         ``VisionTransformer``: OpenAI, LAION, MetaCLIP, DFN          ``ln_post(x) @ proj``
``siglip``                timm ViT, MAP head, no CLS: SigLIP, SigLIP2                  MAP value path
``pe_core``               timm Eva, MAP head, CLS, RoPE: PE-Core                       MAP value path, head
``eva02``                 timm Eva, CLS pool, RoPE: EVA02                              ``head(norm(x))``
========================  ==========================================================  =====================

:func:`as_tower` picks the adapter from the module's structure (never from a model name). A new family is one adapter
module here and one line in :func:`as_tower`.
"""

from __future__ import annotations

from torch import nn

from .base import BlockView, Tower, UnsupportedTowerError, merge_heads, softmax_scores, split_heads
from .heads import MAP_READOUTS, MapValueHead, ProjectionHead, TokenHead
from .open_clip_vit import POS_INTERPOLATIONS, OpenClipViT, interpolate_pos_embed
from .timm_towers import TimmTower

__all__ = ["MAP_READOUTS", "POS_INTERPOLATIONS", "TOWER_FAMILIES", "BlockView", "MapValueHead", "ProjectionHead",
           "TokenHead", "Tower", "UnsupportedTowerError", "as_tower", "interpolate_pos_embed", "merge_heads",
           "softmax_scores", "split_heads", "tower_family"]

#: Every family an adapter reads, in the order of docs/backbones.md.
TOWER_FAMILIES = ("open_clip_vit", "siglip", "pe_core", "eva02")


def as_tower(visual: nn.Module | Tower) -> Tower:
    """The adapter for an open_clip vision tower (``model.visual``); a :class:`Tower` is returned as it is.

    A MAP-head tower reads its dense head as ``visual.tagalign_map_readout`` says (set by
    :func:`tagalign.models.load_clip`; ``value`` when unset).
    """
    if isinstance(visual, Tower):
        return visual
    if hasattr(visual, "trunk"):
        return TimmTower(visual, getattr(visual, "tagalign_map_readout", "value"))
    if hasattr(visual, "transformer") and hasattr(visual, "conv1"):
        return OpenClipViT(visual)
    raise UnsupportedTowerError(
        f"{type(visual).__name__} is not a vision tower tagalign reads: dense encoders need an open_clip "
        f"VisionTransformer or a timm tower of the families {', '.join(TOWER_FAMILIES)} (docs/backbones.md); "
        f"ResNet (ModifiedResNet) towers have no patch tokens")


def tower_family(visual: nn.Module) -> str:
    """The family name of ``visual`` (see the table above)."""
    return as_tower(visual).family
