"""Tiny random timm towers of the SigLIP2, PE-Core and EVA02 families, for tests and the CPU quickstart.

Each is the family's own timm model function (``vit_base_patch16_siglip_224``, ``vit_pe_core_base_patch16_224``,
``eva02_base_patch16_clip_224``) with the same block, pooling, RoPE and head settings, shrunk to width 64 and 8
blocks (as tagalign-tiny), with ``dynamic_img_size`` on, so their own forward runs at any size and tests can compare
against it. The open_clip configs ``tagalign-tiny-mapvit``, ``tagalign-tiny-pe-core`` and ``tagalign-tiny-eva02``
(``model_configs/``) use them; the SigLIP2-style one is not named "siglip" because open_clip picks the SigLIP
tokenizer (and a download) for any model name that contains it.
"""

from __future__ import annotations

import timm
from timm.models import register_model
from torch import nn

__all__ = ["TINY_TOWERS"]

_SHRINK = {"embed_dim": 64, "depth": 8, "num_heads": 2, "dynamic_img_size": True}

#: tiny timm model name -> (the family's timm model it shrinks, extra settings)
TINY_TOWERS = {
    "tagalign_tiny_siglip2": ("vit_base_patch16_siglip_224", {}),
    "tagalign_tiny_pe_core": ("vit_pe_core_base_patch16_224", {"attn_pool_num_heads": 2}),
    "tagalign_tiny_eva02": ("eva02_base_patch16_clip_224", {}),
}


def _shrunk(family_model: str, extra: dict, kwargs: dict) -> nn.Module:
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    return timm.create_model(family_model, pretrained=False, **{**_SHRINK, **extra, **kwargs})


@register_model
def tagalign_tiny_siglip2(pretrained: bool = False, **kwargs) -> nn.Module:
    """SigLIP2-style: ViT, no CLS token, MAP head."""
    return _shrunk(*TINY_TOWERS["tagalign_tiny_siglip2"], kwargs)


@register_model
def tagalign_tiny_pe_core(pretrained: bool = False, **kwargs) -> nn.Module:
    """PE-Core-style: Eva with CLS token, pre-norm, 2-D RoPE ('xy', offset 1), MAP head, trunk head projection."""
    return _shrunk(*TINY_TOWERS["tagalign_tiny_pe_core"], kwargs)


@register_model
def tagalign_tiny_eva02(pretrained: bool = False, **kwargs) -> nn.Module:
    """EVA02-style: Eva with CLS pooling, RoPE, separate q/k/v (k without bias), inner attention norm, SwiGLU."""
    return _shrunk(*TINY_TOWERS["tagalign_tiny_eva02"], kwargs)
