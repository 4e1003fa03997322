"""The mmengine model: TagAlign + its tag vocabulary; its state dict is the trainable state only."""

from __future__ import annotations

import logging

import numpy as np
import torch
from mmengine.model import BaseModel
from mmengine.registry import MODELS

from ..models.clip import clip_identity, load_clip
from ..models.tagalign import TagAlign
from ..models.vfm import vfm_for
from ..tags.embed import load_tag_embeddings

logger = logging.getLogger(__name__)

__all__ = ["TagAlignTrainModel"]


def _check_frequency_vocab(tag_frequency: str, vocab_hash: str | None, tag_embeddings: str) -> None:
    """``tag_frequency.npy`` is written beside its ``labels.sqlite``: both must come from the embeddings' vocabulary."""
    from pathlib import Path

    from ..tags.labels import LabelStore

    labels = Path(tag_frequency).with_name("labels.sqlite")
    if vocab_hash and labels.is_file():
        store_hash = LabelStore(labels).vocab_hash
        if store_hash != vocab_hash:
            raise ValueError(
                f"{tag_frequency} (and {labels}) come from vocabulary {store_hash}, but {tag_embeddings} was "
                f"embedded from vocabulary {vocab_hash}: tag i would mean different tags. Rerun "
                f"`tools/parse_tags.py embed` after the merge that wrote them."
            )


TAG_TEXTS = ("template", "descriptions", "reweighted")


def _tag_text(payload: dict, tag_text: str, path: str):
    """``(tag embeddings [T, D], description bank or None)`` for the chosen tag text."""
    if tag_text not in TAG_TEXTS:
        raise ValueError(f"model.tag_text must be one of {TAG_TEXTS}; got {tag_text!r}")
    if tag_text == "template":
        if payload.get("text", "template") == "descriptions":
            raise ValueError(f"{path} holds description embeddings only (embed --text descriptions): set "
                             f"model.tag_text=descriptions, or rerun tools/parse_tags.py embed with --text both")
        return payload.get("template_embeddings", payload["embeddings"]), None
    if "description_embeddings" not in payload:
        raise ValueError(f"model.tag_text={tag_text!r} needs description embeddings, but {path} was written with "
                         f"--text {payload.get('text', 'template')}: rerun tools/parse_tags.py embed with --text "
                         f"descriptions (or both)")
    from ..models.text import DescriptionBank

    bank = DescriptionBank(payload["description_embeddings"], payload["description_mask"])
    logger.info("tag classifier text: %s (%d descriptions of %d tags from %s)", tag_text, int(bank.mask.sum()),
                len(bank), payload["descriptions"]["file"])
    return payload["ensemble_embeddings"], bank if tag_text == "reweighted" else None


@MODELS.register_module(force=True)
class TagAlignTrainModel(BaseModel):
    """Args:
        clip, pretrained: the frozen CLIP (see :func:`tagalign.models.clip.load_clip`).
        tag_embeddings: ``tag_embeddings.pt`` from ``tools/parse_tags.py embed`` (must come from the same CLIP).
        tag_frequency: ``tag_frequency.npy`` (needed by the ``balanced`` and ``weighted`` tag losses).
        surgery_layers, projector, loss, pos_interpolation, encoder, encoder_options: see
            :class:`tagalign.models.TagAlign` (``encoder="clearclip"`` trains the projector on ClearCLIP's tokens).
        tag_text: the tag classifier's text (RAM++'s tag description supervision, adapted): ``template`` ("a photo
            of a {tag}.", the reference), ``descriptions`` (the LLM-description ensemble) or ``reweighted`` (RAM++'s
            per-image re-weighting of the descriptions, learnable temperature). The last two need
            ``tag_embeddings.pt`` from ``tools/parse_tags.py embed --text descriptions`` (or ``both``).
        vfm, vfm_weights: the second vision model of a VFM-guided encoder (``encoder="proxyclip"``) and its weights
            (a file, ``tiny``, or None for the hub's); it sees the training images as normalised (ImageNet's
            statistics, the training default).
    """

    def __init__(self, clip: str, pretrained: str | None, tag_embeddings: str, tag_frequency: str | None = None,
                 surgery_layers: int = 6, projector: dict | None = None, loss: dict | None = None,
                 pos_interpolation: str = "bicubic", encoder: str = "surgery", encoder_options: dict | None = None,
                 tag_text: str = "template", vfm: str | None = None, vfm_weights: str | None = None,
                 data_preprocessor: dict | None = None):
        super().__init__(data_preprocessor=data_preprocessor or dict(type="BaseDataPreprocessor"))
        clip_model = load_clip(clip, pretrained)
        payload = load_tag_embeddings(tag_embeddings)
        identity = clip_identity(clip_model)
        if payload["clip"]["weights_hash"] != identity.weights_hash:
            raise ValueError(
                f"{tag_embeddings} was encoded with CLIP {payload['clip']['model_name']} "
                f"({payload['clip']['pretrained']}, hash {payload['clip']['weights_hash']}) but training uses "
                f"{identity.model_name} ({identity.pretrained}, hash {identity.weights_hash}); rerun "
                f"tools/parse_tags.py embed with the training CLIP"
            )
        self.vocab_hash = payload.get("vocab_hash")
        loss = dict(loss or {})
        if tag_frequency is not None:
            _check_frequency_vocab(tag_frequency, self.vocab_hash, tag_embeddings)
            loss["tag_frequency"] = torch.from_numpy(np.load(tag_frequency)).float()
            if len(loss["tag_frequency"]) != len(payload["embeddings"]):
                raise ValueError(f"{tag_frequency} has {len(loss['tag_frequency'])} tags, "
                                 f"{tag_embeddings} has {len(payload['embeddings'])}")
        embeddings, bank = _tag_text(payload, tag_text, tag_embeddings)
        self.tagalign = TagAlign(clip_model, embeddings, surgery_layers, projector, loss,
                                 tag_names=payload["tags"], pos_interpolation=pos_interpolation, encoder=encoder,
                                 encoder_options=encoder_options, tag_descriptions=bank,
                                 tag_reweight=tag_text == "reweighted",
                                 vfm=vfm_for(encoder, vfm, vfm_weights))

    def forward(self, images: torch.Tensor, text_tokens=None, tag_ids=None, mode: str = "loss", **unused):
        if mode != "loss":
            raise ValueError(f"TagAlignTrainModel supports mode='loss' only (got '{mode}'); evaluate with "
                             f"tools/test.py")
        return self.tagalign.loss(images, text_tokens, tag_ids)

    def train(self, mode: bool = True) -> TagAlignTrainModel:
        super().train(mode)
        self.tagalign.train(mode)
        return self

    # checkpoints hold the trainable state only; CLIP weights are reloaded from their source
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        from collections import OrderedDict

        state = OrderedDict((f"{prefix}tagalign.{k}", v) for k, v in self.tagalign.trainable_state_dict().items())
        state._metadata = OrderedDict()  # mmengine's weights_to_cpu copies it
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        inner = {k.removeprefix("tagalign."): v for k, v in state_dict.items()}
        self.tagalign.load_trainable_state_dict(inner)
        return torch.nn.modules.module._IncompatibleKeys([], [])
