"""Training-free dense encoders over an unmodified open_clip vision tower, one module per family, chosen by name.

- :mod:`.towers`: the tower adapters every encoder reads (open_clip ViTs, SigLIP/SigLIP2, PE-Core, EVA02): embedding
  with a resized positional table, blocks part by part, the dense head into the text space, the pooled embedding;
- :mod:`.plain`: ``vanilla`` and ``maskclip``; :mod:`.sclip_family`: ``sclip``, ``clearclip``, ``naclip``;
  :mod:`.surgery`: ``surgery`` (TagAlign's, the default) and ``clip_surgery``; :mod:`.proxyclip`: ``proxyclip``
  (attention from a second vision model, :mod:`tagalign.models.vfm`); :mod:`.sc_clip`: ``sc_clip``;
  :mod:`.resclip`: ``resclip`` (RCS and SFR on a base encoder; SFR reads the text queries); :mod:`.cass`: ``cass``
  (CLIP's last attention blended with DINO's keys, heads paired by their spectra);
- :mod:`.options`: each encoder's declared options (type, default, range), validated before a model is built;
- :mod:`.registry`: :data:`ENCODERS`, :func:`check_encoder` and :func:`dense_features`.
"""

from .options import Option, declare_options, describe_options
from .proxyclip import proxy_attention
from .registry import (
    ENCODERS,
    check_encoder,
    dense_features,
    encode_tokens,
    needs_text,
    needs_vfm,
    options_table,
    register_encoder,
)
from .sclip_family import gaussian_neighbourhood
from .surgery import surgery_patch_tokens, surgery_streams, surgery_tokens, validate_surgery_depth
from .towers import (
    MAP_READOUTS,
    POS_INTERPOLATIONS,
    TOWER_FAMILIES,
    Tower,
    UnsupportedTowerError,
    as_tower,
    interpolate_pos_embed,
    tower_family,
)

__all__ = ["ENCODERS", "MAP_READOUTS", "POS_INTERPOLATIONS", "TOWER_FAMILIES", "Option", "Tower",
           "UnsupportedTowerError", "as_tower", "check_encoder", "declare_options", "dense_features",
           "describe_options", "encode_tokens", "gaussian_neighbourhood", "interpolate_pos_embed", "needs_text",
           "needs_vfm", "options_table", "proxy_attention", "register_encoder", "surgery_patch_tokens",
           "surgery_streams", "surgery_tokens", "tower_family", "validate_surgery_depth"]
