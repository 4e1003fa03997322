"""Training-free dense CLIP encoders over an unmodified open_clip ViT, one module per family, chosen by name.

- :mod:`.vit`: the shared ViT plumbing (embedding and positional resize, per-head q/k/v, attention output, FFN,
  plain block);
- :mod:`.plain`: ``vanilla`` and ``maskclip``; :mod:`.sclip_family`: ``sclip``, ``clearclip``, ``naclip``;
  :mod:`.surgery`: ``surgery`` (TagAlign's, the default) and ``clip_surgery``;
- :mod:`.options`: each encoder's declared options (type, default, range), validated before a model is built;
- :mod:`.registry`: :data:`ENCODERS`, :func:`check_encoder` and :func:`dense_features`.
"""

from .options import Option, declare_options, describe_options
from .registry import ENCODERS, check_encoder, dense_features, options_table, register_encoder
from .sclip_family import gaussian_neighbourhood
from .surgery import surgery_patch_tokens, surgery_tokens, validate_surgery_depth
from .vit import POS_INTERPOLATIONS, global_token, interpolate_pos_embed

__all__ = ["ENCODERS", "POS_INTERPOLATIONS", "Option", "check_encoder", "declare_options", "dense_features",
           "describe_options", "options_table", "gaussian_neighbourhood", "global_token",
           "interpolate_pos_embed", "register_encoder", "surgery_patch_tokens", "surgery_tokens",
           "validate_surgery_depth"]
