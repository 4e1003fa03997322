"""The one registry of dense encoders, and :func:`dense_features`, the shared head over any of them.

Each encoder is a function ``(visual, images, **options) -> [B, h*w, width]`` patch tokens before ``ln_post``, its
options declared with :func:`.options.declare_options`; the shared head ``ln_post(X) @ proj`` turns them into
``[B, output_dim, h, w]`` features. To add an encoder, write one module in this package and add one line to
:data:`ENCODERS` (or, from outside, call :func:`register_encoder`).

Positional tables are resized with size-based bicubic interpolation for every encoder (TagAlign's); the SCLIP family's
DINO-style ``scale_factor=(n + 0.1) / 14`` variant is not reproduced.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .options import describe_options, validate_options
from .plain import maskclip, vanilla
from .sclip_family import clearclip, naclip, sclip
from .surgery import clip_surgery, surgery
from .vit import patch_grid

__all__ = ["ENCODERS", "check_encoder", "dense_features", "options_table", "register_encoder"]

#: Encoder name -> patch-token function, in the order ``--encoder all`` runs them.
ENCODERS: dict[str, Callable[..., torch.Tensor]] = {
    "vanilla": vanilla,
    "maskclip": maskclip,
    "sclip": sclip,
    "clearclip": clearclip,
    "naclip": naclip,
    "surgery": surgery,
    "clip_surgery": clip_surgery,
}


def register_encoder(name: str, function: Callable[..., torch.Tensor]) -> None:
    """Add an encoder under ``name`` (refused if the name is taken)."""
    if name in ENCODERS:
        raise ValueError(f"an encoder named '{name}' is already registered")
    ENCODERS[name] = function


def check_encoder(encoder: str, options: dict | None = None, visual: nn.Module | None = None) -> dict:
    """The encoder's options, checked against its declaration (``encoders/options.py``); a clear error for an
    unknown encoder, an option it does not have, a value of the wrong type or out of range."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder '{encoder}'; choose from {sorted(ENCODERS)}")
    return validate_options(encoder, ENCODERS[encoder], options, visual)


def options_table() -> str:
    """Every encoder's declared options as a Markdown table (docs/encoders.md holds this text verbatim)."""
    rows = [f"| `{name}` | {describe_options(function)} |" for name, function in ENCODERS.items()]
    return "\n".join(["| encoder | options (type, default): meaning |", "|---|---|", *rows])


@torch.no_grad()
def dense_features(clip: nn.Module, images: torch.Tensor, encoder: str = "surgery", **options) -> torch.Tensor:
    """``[B, output_dim, h, w]`` dense features (after ``ln_post``/``proj``, unnormalised) of ImageNet- or
    CLIP-normalised ``images`` ``[B, 3, H, W]`` of any size (``h = H // patch``), from the named encoder."""
    visual = clip.visual
    options = check_encoder(encoder, options, visual)
    tokens = ENCODERS[encoder](visual, images, **options)
    h, w = patch_grid(visual, images)
    features = visual.ln_post(tokens) @ visual.proj.to(tokens.dtype)
    return features.transpose(1, 2).reshape(images.shape[0], -1, h, w)
