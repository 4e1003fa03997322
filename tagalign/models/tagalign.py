"""The TagAlign model: a frozen open_clip CLIP, a dense encoder, a trainable projector and two losses.

The dense encoder is CLIP Surgery's (``surgery``, the reference) or any training-free encoder of
:mod:`tagalign.models.encoders` (``encoder="clearclip"``, ...): the projector trains on that encoder's tokens.

Only the projector and the two loss temperatures train (and, with ``tag_reweight``, RAM++'s re-weighting
temperature): :meth:`TagAlign.trainable_state_dict` is what a checkpoint stores (:mod:`.checkpoint`). How texts are
scored against the dense features is :mod:`.scoring`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Sequence

import torch
from torch import nn

from .checkpoint import CheckpointMismatchError
from .encoders import (
    POS_INTERPOLATIONS,
    as_tower,
    check_encoder,
    encode_tokens,
    needs_text,
    needs_vfm,
    surgery_patch_tokens,
    surgery_streams,
    validate_surgery_depth,
)
from .losses import ImageTextContrastiveLoss, LearnableTemperature, TagClassificationLoss
from .projector import build_projector
from .scoring import DenseScoring
from .text import DescriptionBank, reweighted_cosines

logger = logging.getLogger(__name__)

__all__ = ["TagAlign", "multi_hot"]

_TRAINABLE_PREFIXES = ("projector.", "itc_loss.", "tag_loss.", "reweight_scale.")
_LOSS_DEFAULTS = {"tag_mode": "softmax", "itc_weight": 1.0, "tag_weight": 1.0, "prob_clamp": 1e-8,
                  "shared_temperature": False}
_SURGERY_ENCODERS = ("surgery", "clip_surgery")


def _plain(value):
    """Config values as plain Python containers (mmengine ConfigDicts do not survive weights-only loading)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def multi_hot(tag_ids: Sequence[Sequence[int]], num_tags: int, device=None) -> torch.Tensor:
    """``[B, num_tags]`` float multi-hot targets from per-sample lists of tag indices."""
    targets = torch.zeros(len(tag_ids), num_tags, device=device)
    for row, ids in enumerate(tag_ids):
        ids = list(ids)
        if ids and (min(ids) < 0 or max(ids) >= num_tags):
            raise ValueError(f"sample {row}: tag index outside 0..{num_tags - 1}: {ids}")
        targets[row, ids] = 1.0
    return targets


def _tensor_hash(tensor: torch.Tensor) -> str:
    flat = tensor.detach().to("cpu", torch.float32).contiguous().reshape(-1)
    return hashlib.sha256(memoryview(flat.view(torch.uint8).numpy())).hexdigest()[:16]


def _vocab_hash(tag_names: Sequence[str] | None, tag_embeddings: torch.Tensor | None) -> str | None:
    if tag_names is not None:
        return hashlib.sha256("\n".join(tag_names).encode()).hexdigest()[:16]
    if tag_embeddings is not None:
        return _tensor_hash(tag_embeddings)
    return None


class TagAlign(DenseScoring, nn.Module):
    """Frozen CLIP + surgery dense encoder + trainable projector, trained with tag classification and InfoNCE.

    Args:
        clip_model: an open_clip CLIP (see :func:`tagalign.models.clip.load_clip`); it is frozen and kept in eval.
        tag_embeddings: ``[T, D]`` text embeddings of the tag vocabulary (needed for the tag loss only).
        surgery_layers: how many final ViT blocks get the v-v surgery path (reference: 6).
        projector: projector config dict (see :func:`build_projector`) or a module.
        loss: ``{"tag_mode", "itc_weight", "tag_weight", "prob_clamp", "tag_frequency", "shared_temperature",
            ...}``; extra keys go to :class:`TagClassificationLoss`. A weight of 0 skips that loss entirely.
            ``shared_temperature=True`` gives both losses one learnable temperature (the paper's single tau, Eq. 1);
            the reference code has two.
        tag_names: the tag vocabulary, used for the vocabulary hash stored in checkpoints.
        pos_interpolation: how the positional table is resized for other input sizes: ``bicubic`` (TCL/TagAlign,
            reference) or ``bilinear`` (CLIP Surgery's own code); for the ``surgery`` encoder.
        encoder: the dense encoder the projector reads (a name in :data:`tagalign.models.encoders.ENCODERS`);
            ``surgery`` is the reference. ``surgery_layers`` is the depth of ``surgery``/``clip_surgery``.
        encoder_options: keyword options of that encoder (e.g. ``{"sigma": 3.0}`` for ``naclip``).
        vfm: the second vision model (:func:`tagalign.models.vfm.load_vfm`) of a VFM-guided encoder (``proxyclip``);
            frozen, recorded in checkpoints by name and weights hash.
        tag_descriptions: a :class:`tagalign.models.text.DescriptionBank` of the tags' description embeddings.
        tag_reweight: score tags in the tag loss with RAM++'s automatic re-weighting of ``tag_descriptions`` (per
            image, queried with the image feature; a learnable temperature ``reweight_scale``, initially 1/0.07).
    """

    def __init__(
        self,
        clip_model: nn.Module,
        tag_embeddings: torch.Tensor | None = None,
        surgery_layers: int = 6,
        projector: dict | nn.Module | None = None,
        loss: dict | None = None,
        tag_names: Sequence[str] | None = None,
        pos_interpolation: str = "bicubic",
        encoder: str = "surgery",
        encoder_options: dict | None = None,
        tag_descriptions=None,
        tag_reweight: bool = False,
        vfm: nn.Module | None = None,
    ):
        super().__init__()
        encoder_options = check_encoder(encoder, encoder_options, clip_model.visual)
        if encoder in _SURGERY_ENCODERS and "depth" in encoder_options:
            # the surgery encoders' depth is the model's surgery_layers: one setting, recorded once in checkpoints
            depth = encoder_options.pop("depth")
            if depth != surgery_layers and surgery_layers != 6:
                raise ValueError(f"encoder option depth={depth} contradicts surgery_layers={surgery_layers}")
            surgery_layers = depth
        validate_surgery_depth(clip_model.visual, surgery_layers if encoder in _SURGERY_ENCODERS else 1)
        if pos_interpolation not in POS_INTERPOLATIONS:
            raise ValueError(f"pos_interpolation must be one of {POS_INTERPOLATIONS}, got '{pos_interpolation}'")
        if encoder != "surgery" and pos_interpolation != "bicubic":
            raise ValueError(f"pos_interpolation applies to the surgery encoder only; '{encoder}' has its own")
        if needs_vfm(encoder) and vfm is None:
            raise ValueError(f"encoder '{encoder}' reads a second vision model: pass vfm=load_vfm("
                             f"'{needs_vfm(encoder)}') (config: model.vfm)")
        if vfm is not None and not needs_vfm(encoder):
            raise ValueError(f"encoder '{encoder}' reads no second vision model; leave out vfm")
        self.vfm = vfm.eval().requires_grad_(False) if vfm is not None else None
        self.pos_interpolation = pos_interpolation
        self.encoder = encoder
        self.encoder_options = dict(encoder_options or {})
        self.clip = clip_model.eval().requires_grad_(False)
        self.tower = as_tower(clip_model.visual)
        self.surgery_layers = surgery_layers
        self.projector = build_projector(
            self.tower, projector if isinstance(projector, nn.Module) else copy.deepcopy(projector)
        )
        loss_cfg = {**_LOSS_DEFAULTS, **(loss or {})}
        tag_frequency = loss_cfg.pop("tag_frequency", None)
        self.itc_weight = float(loss_cfg.pop("itc_weight"))
        self.tag_weight = float(loss_cfg.pop("tag_weight"))
        self.itc_loss = ImageTextContrastiveLoss()
        shared_temperature = bool(loss_cfg.pop("shared_temperature"))
        self.tag_loss = TagClassificationLoss(mode=loss_cfg.pop("tag_mode"), tag_frequency=tag_frequency, **loss_cfg)
        if shared_temperature:
            self.tag_loss.temperature = self.itc_loss.temperature  # one parameter, as the paper's single tau
        # A loss weighted 0 is never computed: its temperature would get no gradient, which DDP rejects.
        self.itc_loss.requires_grad_(bool(self.itc_weight) or (shared_temperature and bool(self.tag_weight)))
        self.tag_loss.requires_grad_(bool(self.tag_weight) or (shared_temperature and bool(self.itc_weight)))
        if tag_embeddings is not None:
            tag_embeddings = torch.as_tensor(tag_embeddings, dtype=torch.float32)
            embed_dim = self.tower.output_dim
            if tag_embeddings.ndim != 2 or tag_embeddings.shape[1] != embed_dim:
                raise ValueError(f"tag_embeddings must be [T, {embed_dim}]; got {list(tag_embeddings.shape)}")
            if tag_names is not None and len(tag_names) != len(tag_embeddings):
                raise ValueError(f"{len(tag_names)} tag names for {len(tag_embeddings)} tag embeddings")
        self.register_buffer("tag_embeddings", tag_embeddings, persistent=False)
        self.tag_reweight = bool(tag_reweight)
        self.reweight_scale = LearnableTemperature() if self.tag_reweight else None
        self.has_descriptions = tag_descriptions is not None
        if tag_descriptions is not None:
            if tag_embeddings is not None and len(tag_descriptions) != len(tag_embeddings):
                raise ValueError(f"{len(tag_descriptions)} tags with descriptions for {len(tag_embeddings)} tag "
                                 f"embeddings")
            self.register_buffer("description_embeddings", tag_descriptions.embeddings.float(), persistent=False)
            self.register_buffer("description_mask", tag_descriptions.mask, persistent=False)
        self.tag_vocab_hash = _vocab_hash(tag_names, tag_embeddings)
        self.tag_names = list(tag_names) if tag_names is not None else None
        self.config = _plain({
            "surgery_layers": surgery_layers,
            "pos_interpolation": pos_interpolation,
            "encoder": encoder,
            "encoder_options": self.encoder_options,
            "tag_reweight": self.tag_reweight,
            "vfm": vfm.identity() if vfm is not None else None,
            "projector": None if isinstance(projector, nn.Module) else dict(projector or {}),
            "loss": {k: v for k, v in {**_LOSS_DEFAULTS, **(loss or {})}.items() if k != "tag_frequency"},
        })

    # ------------------------------------------------------------------ modes and state
    def train(self, mode: bool = True) -> TagAlign:
        super().train(mode)
        self.clip.eval()
        return self

    @property
    def encoder_config(self) -> dict:
        """The keyword arguments that build this model's dense encoder (for a second model on the same tokens)."""
        return {"encoder": self.encoder, "encoder_options": dict(self.encoder_options),
                "surgery_layers": self.surgery_layers, "pos_interpolation": self.pos_interpolation, "vfm": self.vfm}

    @property
    def reads_text(self) -> bool:
        """Whether the encoder's tokens depend on the text queries (``resclip``'s SFR)."""
        return needs_text(self.encoder) and self.encoder_options.get("sfr", True)

    @property
    def patch_size(self) -> int:
        return self.tower.patch_size[0]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The projector and the temperatures: everything a checkpoint needs to store."""
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k.startswith(_TRAINABLE_PREFIXES)}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        expected = set(self.trainable_state_dict())
        missing, unexpected = expected - set(state_dict), set(state_dict) - expected
        if missing or unexpected:
            raise CheckpointMismatchError(
                f"trainable state does not match this model: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        self.load_state_dict(state_dict, strict=False)

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def encode_dense(self, images: torch.Tensor, text_emb: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image embedding [B, D], patch token map [B, width, h, w])``, frozen, no gradient: the unmodified
        tower's own pooled embedding (CLS -> ln_post -> proj on CLIP ViTs; the MAP head on SigLIP/PE-Core) and the
        encoder's patch tokens (the surgery encoders' original path gives the first for free)."""
        if self.encoder in _SURGERY_ENCODERS:
            pos_mode = self.pos_interpolation if self.encoder == "surgery" else "bilinear"
            original, patches = surgery_streams(self.tower, images, self.surgery_layers, pos_mode)
            return self.tower.pooled(original), self.token_map(patches, images)
        return self.tower.encode(images), self.encode_patches(images, text_emb)

    def _patch_tokens(self, images: torch.Tensor, text_emb: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(tokens [B, h*w, width], (h, w))``: the tower's patch grid, or the second model's (``proxyclip``)."""
        if self.encoder == "surgery":
            tokens = surgery_patch_tokens(self.tower, images, self.surgery_layers, self.pos_interpolation)
            return tokens, self.tower.grid(images)
        options = {"depth": self.surgery_layers} if self.encoder == "clip_surgery" else {}
        return encode_tokens(self.encoder, self.tower, images, self.vfm, text_emb, **options, **self.encoder_options)

    @torch.no_grad()
    def encode_patches(self, images: torch.Tensor, text_emb: torch.Tensor | None = None) -> torch.Tensor:
        """The frozen encoder's patch tokens as a map ``[B, width, h, w]`` (before the dense head); no CLS token.
        ``text_emb``: the text queries ``[Q, D]`` of a segmentation, read by the encoders that need them
        (``resclip``'s SFR)."""
        tokens, grid = self._patch_tokens(images, text_emb)
        return self.token_map(tokens, grid)

    def token_map(self, patch_tokens: torch.Tensor, grid: tuple[int, int] | torch.Tensor) -> torch.Tensor:
        """Patch tokens ``[B, h*w, C]`` as a map ``[B, C, h, w]``; ``grid`` is ``(h, w)`` or the images (their patch
        grid)."""
        h, w = self.tower.grid(grid) if torch.is_tensor(grid) else grid
        return patch_tokens.transpose(1, 2).reshape(patch_tokens.shape[0], patch_tokens.shape[-1], h, w)

    def _clip_projection(self, patches: torch.Tensor) -> torch.Tensor:
        """The frozen tower's dense head on every pixel of a ``[B, width, h, w]`` token map."""
        return self.tower.dense_head()(patches.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """Projected, unnormalised dense features ``[B, D, h, w]`` (gradient flows into the projector)."""
        return self.projector(self.encode_patches(images))

    @torch.no_grad()
    def clip_dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen CLIP branch: the frozen dense head on the same encoder tokens, ``[B, D, h, w]``."""
        return self._clip_projection(self.encode_patches(images))

    # ------------------------------------------------------------------ training objective
    def description_bank(self):
        """The tags' description embeddings as a :class:`~tagalign.models.text.DescriptionBank` (or None)."""
        if not self.has_descriptions:
            return None
        return DescriptionBank(self.description_embeddings, self.description_mask)

    def _reweighted_tag_cosines(self, image_emb: torch.Tensor) -> torch.Tensor | None:
        """``[B, T]`` cosines with the per-image re-weighted descriptions (``tag_reweight``), else None."""
        if not self.tag_reweight:
            return None
        bank = self.description_bank()
        if bank is None:
            raise ValueError("tag_reweight needs tag_descriptions (tag_embeddings.pt written with embed --text "
                             "descriptions or both)")
        return reweighted_cosines(image_emb, bank, self.reweight_scale())

    def loss(
        self,
        images: torch.Tensor,
        text_tokens: torch.Tensor | None,
        tag_targets: torch.Tensor | Sequence[Sequence[int]] | None,
    ) -> dict[str, torch.Tensor]:
        """``{"loss_itc", "loss_tag"}`` (each already multiplied by its weight) plus the two temperatures.

        ``tag_targets`` is a multi-hot ``[B, T]`` tensor or per-sample lists of tag indices.
        """
        image_emb = self.dense_features(images).mean(dim=(2, 3))
        losses: dict[str, torch.Tensor] = {}
        if self.itc_weight:
            if text_tokens is None:
                raise ValueError("the image-text loss needs caption tokens")
            with torch.no_grad():
                text_emb = self.clip.encode_text(text_tokens.to(images.device))
            losses["loss_itc"] = self.itc_weight * self.itc_loss(image_emb, text_emb)
            losses["itc_scale"] = self.itc_loss.temperature().detach()
        if self.tag_weight:
            if self.tag_embeddings is None:
                raise ValueError("the tag loss needs tag_embeddings; build TagAlign with them or set tag_weight=0")
            if not torch.is_tensor(tag_targets):
                tag_targets = multi_hot(tag_targets, len(self.tag_embeddings), device=images.device)
            losses["loss_tag"] = self.tag_weight * self.tag_loss(image_emb, self.tag_embeddings, tag_targets,
                                                                 cosines=self._reweighted_tag_cosines(image_emb))
            losses["tag_scale"] = self.tag_loss.temperature().detach()
        if not any(k.startswith("loss_") for k in losses):
            raise ValueError("both loss weights are 0: nothing to train")
        return losses
