"""The model layer: CLIP loading, the dense encoders, the text side, the projector, the losses and TagAlign.

Names are loaded on first use (``from tagalign.models import dense_features`` works as usual), so that the
standard-library modules of this package (:mod:`.description_file`, :mod:`.templates`) also import in an environment
without torch and open_clip, such as the separate vLLM environment of the describe stage.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "DEFAULT_TEMPLATES": "clip", "ClipIdentity": "clip", "ClipWeightsUnavailableError": "clip",
    "encode_texts": "clip", "get_tokenizer": "clip", "load_clip": "clip", "clip_normalization": "clip",
    "ENCODERS": "encoders", "dense_features": "encoders", "interpolate_pos_embed": "encoders",
    "register_encoder": "encoders", "surgery_patch_tokens": "encoders", "surgery_tokens": "encoders",
    "ImageTextContrastiveLoss": "losses", "TagClassificationLoss": "losses",
    "GatedConvProjector": "projector", "build_projector": "projector",
    "TagAlign": "tagalign", "multi_hot": "tagalign",
    "CheckpointMismatchError": "checkpoint", "load_checkpoint": "checkpoint", "read_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_model": "build",
    "DescriptionBank": "text", "class_text_embeddings": "text",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
