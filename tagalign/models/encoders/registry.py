"""The one registry of dense encoders, and :func:`dense_features`, the shared head over any of them.

Each encoder is a function ``(visual, images, **options) -> [B, h*w, width]`` patch tokens before the tower's dense
head, its options declared with :func:`.options.declare_options`; ``visual`` is an open_clip vision tower or its
:class:`.towers.Tower` adapter, which the encoder reads (never patches). The tower's dense head (``ln_post(X) @ proj``
on open_clip ViTs; see :mod:`.towers`) turns the tokens into ``[B, output_dim, h, w]`` features. To add an encoder,
write one module in this package and add one line to :data:`ENCODERS` (or, from outside, call
:func:`register_encoder`). A step the encoder cannot take on some tower family is refused by the function's
``tower_check`` (called by :func:`check_encoder`).

Positional tables are resized with size-based bicubic interpolation for every encoder (TagAlign's; timm towers as
timm's ``dynamic_img_size`` does); the SCLIP family's DINO-style ``scale_factor=(n + 0.1) / 14`` variant is not
reproduced.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .cass import cass
from .options import describe_options, validate_options
from .plain import maskclip, vanilla
from .proxyclip import proxyclip
from .resclip import resclip
from .sc_clip import sc_clip
from .sclip_family import clearclip, naclip, sclip
from .surgery import clip_surgery, surgery
from .towers import Tower, as_tower

__all__ = ["ENCODERS", "check_encoder", "dense_features", "encode_tokens", "needs_text", "needs_vfm",
           "options_table", "register_encoder"]

#: Encoder name -> patch-token function, in the order ``--encoder all`` runs them.
ENCODERS: dict[str, Callable[..., torch.Tensor]] = {
    "vanilla": vanilla,
    "maskclip": maskclip,
    "sclip": sclip,
    "clearclip": clearclip,
    "naclip": naclip,
    "surgery": surgery,
    "clip_surgery": clip_surgery,
    "sc_clip": sc_clip,
    "resclip": resclip,
    "proxyclip": proxyclip,
    "cass": cass,
}


def register_encoder(name: str, function: Callable[..., torch.Tensor]) -> None:
    """Add an encoder under ``name`` (refused if the name is taken)."""
    if name in ENCODERS:
        raise ValueError(f"an encoder named '{name}' is already registered")
    ENCODERS[name] = function


def check_encoder(encoder: str, options: dict | None = None, visual: nn.Module | None = None) -> dict:
    """The encoder's options, checked against its declaration (``encoders/options.py``); a clear error for an
    unknown encoder, an option it does not have, a value of the wrong type or out of range. With ``visual``, also
    whether the encoder is defined on that tower (an encoder function's ``tower_check``; UnsupportedTowerError)."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder '{encoder}'; choose from {sorted(ENCODERS)}")
    checked = validate_options(encoder, ENCODERS[encoder], options, visual)
    tower_check = getattr(ENCODERS[encoder], "tower_check", None)
    if visual is not None and tower_check is not None:
        tower_check(as_tower(visual))  # an encoder step this tower family does not define: UnsupportedTowerError
    return checked


def needs_vfm(encoder: str) -> str | None:
    """The name of the second vision model the encoder reads by default (:mod:`tagalign.models.vfm`), or None."""
    return getattr(ENCODERS[encoder], "needs_vfm", None)


def needs_text(encoder: str) -> bool:
    """Whether the encoder reads the text queries of the segmentation (``resclip``'s SFR)."""
    return bool(getattr(ENCODERS[encoder], "needs_text", False))


def encode_tokens(encoder: str, visual: nn.Module | Tower, images: torch.Tensor, vfm: nn.Module | None = None,
                  text: torch.Tensor | None = None, **options) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(tokens [B, h*w, width] before the dense head, (h, w))``: the encoder's patch tokens and their grid, the
    tower's patch grid, or for VFM-guided encoders (``proxyclip``) the second model's. ``text``: the text queries
    ``[Q, D]``, passed to the encoders that read them (:func:`needs_text`) and ignored by the others."""
    function = ENCODERS[encoder]
    if needs_text(encoder):
        options["text"] = text
    if needs_vfm(encoder):
        if vfm is None:
            raise ValueError(f"encoder '{encoder}' reads a second vision model: pass "
                             f"vfm=load_vfm('{needs_vfm(encoder)}') (tools: --vfm NAME; docs/encoders.md)")
        out = function(visual, images, vfm=vfm, **options)
    else:
        out = function(visual, images, **options)
    return out if isinstance(out, tuple) else (out, as_tower(visual).grid(images))


def options_table() -> str:
    """Every encoder's declared options as a Markdown table (docs/encoders.md holds this text verbatim)."""
    rows = [f"| `{name}` | {describe_options(function)} |" for name, function in ENCODERS.items()]
    return "\n".join(["| encoder | options (type, default): meaning |", "|---|---|", *rows])


@torch.no_grad()
def dense_features(clip: nn.Module, images: torch.Tensor, encoder: str = "surgery", vfm: nn.Module | None = None,
                   text_emb: torch.Tensor | None = None, **options) -> torch.Tensor:
    """``[B, output_dim, h, w]`` dense features (after the tower's dense head, unnormalised) of normalised
    ``images`` ``[B, 3, H, W]`` of any size (``h = H // patch``; a VFM-guided encoder's grid is its second
    model's), from the named encoder; ``vfm``: the second model, for the encoders that read one; ``text_emb``: the
    text queries ``[Q, D]``, for the encoders that read them (``resclip``)."""
    tower = as_tower(clip.visual)
    options = check_encoder(encoder, options, tower)  # one adapter per call: options and tower checks reuse it
    tokens, (h, w) = encode_tokens(encoder, tower, images, vfm, text_emb, **options)
    features = tower.dense_head()(tokens)
    return features.transpose(1, 2).reshape(images.shape[0], -1, h, w)
