"""Model components: CLIP loading, the dense surgery encoder, the projector, the losses and TagAlign."""

from .clip import DEFAULT_TEMPLATES, ClipIdentity, ClipWeightsUnavailableError, encode_texts, get_tokenizer, load_clip
from .dense import interpolate_pos_embed, surgery_patch_tokens, surgery_tokens
from .encoders import ENCODERS, dense_features
from .losses import ImageTextContrastiveLoss, TagClassificationLoss
from .projector import GatedConvProjector, build_projector
from .tagalign import CheckpointMismatchError, TagAlign, load_checkpoint, multi_hot, read_checkpoint, save_checkpoint

__all__ = [
    "DEFAULT_TEMPLATES",
    "ENCODERS",
    "CheckpointMismatchError",
    "ClipIdentity",
    "ClipWeightsUnavailableError",
    "GatedConvProjector",
    "ImageTextContrastiveLoss",
    "TagAlign",
    "TagClassificationLoss",
    "build_projector",
    "dense_features",
    "encode_texts",
    "get_tokenizer",
    "interpolate_pos_embed",
    "load_checkpoint",
    "load_clip",
    "multi_hot",
    "read_checkpoint",
    "save_checkpoint",
    "surgery_patch_tokens",
    "surgery_tokens",
]
