"""The second vision models (VFMs) the VFM-guided encoders read, by name, as timm builds them.

Each entry says which timm model (and hub weights) it is, which feature the methods read from it and how its input is
sized. The features are the ones the methods' code reads (training-free spec-2 §3-§5): DINO/DINOv2/DINOv3, the last
block's tokens after the final norm with the prefix (CLS and register) tokens dropped (DINO's
``get_intermediate_layers(x)[0]``); SAM ViT-B, its image encoder's neck output on the crop squashed to 1024x1024.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["VFM_CATALOG", "VfmSpec"]


@dataclass(frozen=True)
class VfmSpec:
    """One second model: ``timm_name`` (architecture.tag on the Hugging Face hub), its ``readout`` (``tokens`` or
    ``neck``), ``input_size`` (None: the crop as it is; N: squashed bilinearly to N x N), extra timm keyword arguments,
    the shrink used for tiny random test models, and who uses it."""

    timm_name: str
    readout: str = "tokens"
    input_size: int | None = None
    model_kwargs: dict = field(default_factory=dict)
    tiny_kwargs: dict = field(default_factory=dict)
    used_by: str = ""


_TINY = {"embed_dim": 64, "depth": 2, "num_heads": 2}

#: name -> spec, in the order docs/encoders.md lists them.
VFM_CATALOG: dict[str, VfmSpec] = {
    "dino_vitb8": VfmSpec("vit_base_patch8_224.dino", model_kwargs={"dynamic_img_size": True}, tiny_kwargs=_TINY,
                          used_by="ProxyCLIP (default), CASS"),
    "dino_vitb16": VfmSpec("vit_base_patch16_224.dino", model_kwargs={"dynamic_img_size": True}, tiny_kwargs=_TINY,
                           used_by="Trident, LPOSS"),
    "dinov2_vitb14_reg": VfmSpec("vit_base_patch14_reg4_dinov2.lvd142m", model_kwargs={"dynamic_img_size": True},
                                 tiny_kwargs=_TINY, used_by="ProxyCLIP (option)"),
    "sam_vitb": VfmSpec("samvit_base_patch16.sa1b", readout="neck", input_size=1024,
                        tiny_kwargs={**_TINY, "global_attn_indexes": (1,), "window_size": 4, "img_size": 128,
                                     "neck_chans": 32},
                        used_by="ProxyCLIP (option), Trident"),
    "dinov3_vitb16": VfmSpec("vit_base_patch16_dinov3.lvd1689m", tiny_kwargs=_TINY,
                             used_by="none yet: the obvious next proxy"),
}
