"""TagAlign checkpoints: the trainable state, the model config and the identity of the frozen CLIP it needs.

A checkpoint holds just the projector and the loss temperatures plus the model config, the CLIP identity (name,
weights source, activation, weights hash) and the tag-vocabulary hash; the CLIP weights are reloaded from their
original source and checked against the hash. Reading refuses a file of another CLIP, encoder or positional resize.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from ..atomic import atomic_path
from .clip import ClipIdentity, clip_identity

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_FORMAT", "CheckpointMismatchError", "load_checkpoint", "read_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "tagalign-checkpoint/1"
_ACTIVATION_NAMES = {"quick_gelu": "QuickGELU", "gelu": "GELU (nn.GELU)", None: "an unrecorded activation"}


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not belong to this CLIP model (or this projector architecture)."""


def save_checkpoint(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write the trainable state, config, CLIP identity and tag-vocabulary hash atomically to ``path``."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": model.trainable_state_dict(),
        "config": model.config,
        "clip": clip_identity(model.clip).to_dict(),
        "tag_vocab_hash": model.tag_vocab_hash,
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, checking its format."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch/pickle raise many kinds for a file that is not a torch checkpoint
        raise CheckpointMismatchError(
            f"{path} is not a tagalign checkpoint: torch cannot read it ({type(err).__name__}: {err}). Expected a "
            f"file written by tools/train.py (WORK_DIR/tagalign_latest.pth or tagalign_iter_N.pth)."
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"{path} is not a tagalign checkpoint (expected format {CHECKPOINT_FORMAT})")
    return payload


def load_checkpoint(model: nn.Module, path: str | os.PathLike, check_clip: bool = True) -> dict:
    """Load a checkpoint into ``model``; refuse one trained on different CLIP weights. Returns the payload."""
    payload = read_checkpoint(path)
    saved = ClipIdentity(**payload["clip"])
    current = clip_identity(model.clip)
    if check_clip and saved.activation and saved.activation != current.activation:
        raise CheckpointMismatchError(
            f"{path} was trained on CLIP '{saved.model_name}' with {_ACTIVATION_NAMES[saved.activation]}, but the "
            f"model's CLIP '{current.model_name}' uses {_ACTIVATION_NAMES[current.activation]}: the same weights "
            f"give different features. Load the CLIP with the checkpoint's activation (for QuickGELU: the "
            f"'-quickgelu' model name, e.g. --clip {saved.model_name.removesuffix('-quickgelu')}-quickgelu)."
        )
    if saved.family and current.family and saved.family != current.family:
        raise CheckpointMismatchError(
            f"{path} trained its projector on a tower of the {saved.family} family (CLIP '{saved.model_name}'), but "
            f"the model's CLIP '{current.model_name}' is of the {current.family} family: the projector reads that "
            f"tower's tokens and dense head. Load a CLIP of the checkpoint's family, e.g. --clip {saved.model_name}."
        )
    if saved.map_readout != current.map_readout and saved.family == current.family and saved.family is not None:
        raise CheckpointMismatchError(
            f"{path} was trained with the '{saved.map_readout}' MAP-head readout, the model's CLIP reads "
            f"'{current.map_readout}': load the CLIP with load_clip(..., map_readout='{saved.map_readout}')."
        )
    if check_clip and saved.weights_hash != current.weights_hash:
        raise CheckpointMismatchError(
            f"{path} was trained on CLIP '{saved.model_name}' (weights {saved.pretrained or 'random init'}, hash "
            f"{saved.weights_hash}), but the model holds CLIP '{current.model_name}' (weights "
            f"{current.pretrained or 'random init'}, hash {current.weights_hash}). Load the same CLIP, e.g. "
            f"--clip {saved.model_name} --pretrained {saved.pretrained or '<the same weights file>'}."
        )
    saved_encoder = payload["config"].get("encoder", "surgery")
    saved_options = payload["config"].get("encoder_options", {})
    if (saved_encoder, saved_options) != (model.encoder, model.encoder_options):
        raise CheckpointMismatchError(
            f"{path} trained its projector on the '{saved_encoder}' encoder (options {saved_options}), but the "
            f"model uses '{model.encoder}' (options {model.encoder_options}): "
            f"the projector reads that encoder's tokens. Evaluate with --encoder {saved_encoder} (or leave it out)."
        )
    saved_vfm = payload["config"].get("vfm")
    current_vfm = model.vfm.identity() if getattr(model, "vfm", None) is not None else None
    if saved_vfm and current_vfm and (saved_vfm["name"], saved_vfm["weights_hash"]) != (
            current_vfm["name"], current_vfm["weights_hash"]):
        raise CheckpointMismatchError(
            f"{path} trained its projector beside second model '{saved_vfm['name']}' (weights {saved_vfm['source']}, "
            f"hash {saved_vfm['weights_hash']}), but the model reads '{current_vfm['name']}' (weights "
            f"{current_vfm['source']}, hash {current_vfm['weights_hash']}): load the same one (--vfm "
            f"{saved_vfm['name']} --vfm-weights <its file>)."
        )
    if payload["config"].get("surgery_layers") != model.surgery_layers:
        raise CheckpointMismatchError(
            f"{path} used surgery_layers={payload['config'].get('surgery_layers')}, the model has "
            f"{model.surgery_layers}"
        )
    saved_interpolation = payload["config"].get("pos_interpolation", "bicubic")
    if saved_interpolation != model.pos_interpolation:
        raise CheckpointMismatchError(
            f"{path} was trained with {saved_interpolation} positional resizing, the model uses "
            f"{model.pos_interpolation}"
        )
    saved_vocab = payload.get("tag_vocab_hash")
    if saved_vocab and model.tag_vocab_hash and saved_vocab != model.tag_vocab_hash:
        logger.warning("%s was trained with a different tag vocabulary (hash %s, model has %s)",
                       path, saved_vocab, model.tag_vocab_hash)
    model.load_trainable_state_dict(payload["state_dict"])
    return payload
