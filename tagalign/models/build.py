"""Build a ready TagAlign model from a checkpoint, a CLIP name or both (what ``tagalign.load`` does)."""

from __future__ import annotations

import logging
import os

import torch

from .checkpoint import load_checkpoint, read_checkpoint
from .clip import load_clip
from .tagalign import TagAlign
from .vfm import vfm_for

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CLIP", "DEFAULT_PRETRAINED", "load_model"]

DEFAULT_CLIP = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"


def load_model(
    checkpoint: str | os.PathLike | None = None,
    clip: str | None = None,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    encoder: str | None = None,
    encoder_options: dict | None = None,
    vfm: str | None = None,
    vfm_weights: str | None = None,
) -> TagAlign:
    """A TagAlign model in eval mode.

    With a checkpoint, the CLIP it was trained on is taken from the checkpoint unless ``clip``/``pretrained`` are
    given (a local weights file, for instance); the CLIP weights hash is checked. Without a checkpoint the projector
    is untrained, i.e. the encoder's training-free baseline (CLIP surgery by default). With neither ``clip`` nor a
    checkpoint, the reference's OpenAI ViT-B/16 is loaded. ``encoder`` names the dense encoder (default: the
    checkpoint's, else ``surgery``); a checkpoint trained on another encoder is refused. ``vfm``/``vfm_weights``:
    the second vision model of a VFM-guided encoder (``proxyclip``) and its weights (a file, ``tiny``, or None: the
    checkpoint's source or the hub); see :func:`tagalign.models.vfm.vfm_for`.
    """
    config: dict = {}
    quick_gelu = None
    map_readout = "value"
    if checkpoint is not None:
        payload = read_checkpoint(checkpoint)
        config = payload["config"]
        clip = clip or payload["clip"]["model_name"]
        pretrained = pretrained if pretrained is not None else payload["clip"]["pretrained"]
        if payload["clip"].get("activation") == "quick_gelu":
            quick_gelu = True  # the checkpoint's CLIP used QuickGELU: any weights file for it gets QuickGELU too
        map_readout = payload["clip"].get("map_readout") or map_readout  # a MAP-head tower's dense readout
    elif clip is None:
        clip, pretrained = DEFAULT_CLIP, pretrained or DEFAULT_PRETRAINED
    if pretrained is None:
        logger.warning("CLIP '%s' gets random weights (no --pretrained given)", clip)
    saved_encoder = config.get("encoder", "surgery")
    if encoder_options is None and encoder in (None, saved_encoder):
        encoder_options = config.get("encoder_options")  # the checkpoint's options belong to its own encoder only
    encoder = encoder or saved_encoder
    second_model = vfm_for(encoder, vfm, vfm_weights, config.get("vfm"), device)
    model = TagAlign(
        load_clip(clip, pretrained, device=device, force_quick_gelu=quick_gelu, map_readout=map_readout),
        surgery_layers=config.get("surgery_layers", 6),
        pos_interpolation=config.get("pos_interpolation", "bicubic"),
        projector=config.get("projector"),
        encoder=encoder,
        encoder_options=encoder_options,
        tag_reweight=config.get("tag_reweight", False),  # its learned re-weighting temperature is in the checkpoint
        vfm=second_model,
    ).to(device)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()
