"""How TagAlign scores texts against its dense features: the reference's sigmoid mix and the paper's options.

:class:`DenseScoring` is the part of :class:`tagalign.models.tagalign.TagAlign` that turns one crop's dense
features and text embeddings into cosine maps and per-text scores (reference spec §6.1, options of spec §7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MIXES", "SCORES", "DenseScoring", "label_set_feature_surgery"]

SCORES = ("sigmoid", "softmax")
MIXES = ("probabilities", "similarities")


class DenseScoring:
    """Scoring methods over ``encode_dense``/``encode_patches``, ``token_map``, ``projector`` and the frozen CLIP
    head ``_clip_projection`` of the class that mixes it in."""

    @torch.no_grad()
    def masks(
        self,
        images: torch.Tensor,
        text_emb: torch.Tensor,
        clip_w: float = 0.3,
        scale: float = 10.0,
        bias: float = -2.5,
        size: tuple[int, int] | None = None,
        score: str = "sigmoid",
        mix: str = "probabilities",
        feature_surgery: bool = False,
    ) -> torch.Tensor:
        """Per-text scores ``[B, N, H, W]`` for one crop (reference spec §6.1), bilinearly upsampled to the input size
        (or to ``size``).

        Reference defaults: ``sigmoid(scale * cos + bias)`` on the projected features, mixed with the frozen CLIP
        branch's probabilities by ``clip_w``. Options (spec §7): ``score="softmax"`` is the paper's Eq. 8,
        ``softmax(scale * cos)`` over the texts; ``mix="similarities"`` mixes the two cosine maps before scoring
        (paper Eq. 7); ``feature_surgery=True`` applies CLIP Surgery's label-set feature surgery to each cosine map.
        """
        probs = self.grid_masks(images, text_emb, clip_w, scale, bias, score, mix, feature_surgery)
        return F.interpolate(probs, size=size or images.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def grid_masks(
        self,
        images: torch.Tensor,
        text_emb: torch.Tensor,
        clip_w: float = 0.3,
        scale: float = 10.0,
        bias: float = -2.5,
        score: str = "sigmoid",
        mix: str = "probabilities",
        feature_surgery: bool = False,
        adjustment=None,
    ) -> torch.Tensor:
        """The scores of :meth:`masks` ``[B, N, h, w]`` on the patch grid, before the upsampling."""
        if score not in SCORES or mix not in MIXES:
            raise ValueError(f"score must be one of {SCORES} and mix one of {MIXES}; got '{score}', '{mix}'")
        projected, clip = self.cosines(images, text_emb, feature_surgery, with_clip=clip_w > 0, adjustment=adjustment)

        def activate(similarity: torch.Tensor) -> torch.Tensor:
            logits = scale * similarity
            return torch.sigmoid(logits + bias) if score == "sigmoid" else logits.softmax(dim=1)

        if clip_w <= 0:
            return activate(projected)
        if mix == "similarities":
            return activate((1 - clip_w) * projected + clip_w * clip)
        return (1 - clip_w) * activate(projected) + clip_w * activate(clip)

    @torch.no_grad()
    def cosines(self, images: torch.Tensor, text_emb: torch.Tensor, feature_surgery: bool = False,
                with_clip: bool = True, adjustment=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cosine maps ``[B, N, h, w]`` on the patch grid: the projected features' and (``with_clip``) the frozen
        CLIP branch's, both from one encoder pass (which reads ``text_emb`` where the encoder needs the queries:
        ``resclip``); ``feature_surgery`` applies CLIP Surgery's label-set step; ``adjustment`` (CASS's
        :class:`~tagalign.segmentation.text_adjustment.ObjectTextAdjustment`) scores each branch with its texts
        adjusted to the window."""
        if adjustment is not None and feature_surgery:
            raise ValueError("CASS's text adjustment and CLIP Surgery's feature surgery are two scoring steps; "
                             "choose one")
        texts = F.normalize(text_emb.to(images.device, torch.float32), dim=-1)
        if feature_surgery:
            global_embedding, patches = self.encode_dense(images, texts)
            cls = F.normalize(global_embedding, dim=-1)
        else:
            patches = self.encode_patches(images, texts)

        def cosine(features: torch.Tensor) -> torch.Tensor:
            if adjustment is not None:
                return adjustment.cosines(features, texts)
            similarity = torch.einsum("bchw,nc->bnhw", F.normalize(features.float(), dim=1), texts)
            return label_set_feature_surgery(similarity, cls.float() @ texts.t()) if feature_surgery else similarity

        clip = cosine(self._clip_projection(patches)) if with_clip else None
        return cosine(self.projector(patches)), clip

    @torch.no_grad()
    def similarities(self, images: torch.Tensor, text_emb: torch.Tensor, clip_w: float = 0.3,
                     feature_surgery: bool = False, adjustment=None) -> torch.Tensor:
        """``(1 - clip_w) * cos_projected + clip_w * cos_clip`` ``[B, N, h, w]`` on the patch grid: the cosine maps
        the SCLIP-family protocol averages over windows before its softmax (for an untrained projector both terms
        are the encoder's own CLIP cosines)."""
        projected, clip = self.cosines(images, text_emb, feature_surgery, with_clip=clip_w > 0, adjustment=adjustment)
        return projected if clip_w <= 0 else (1 - clip_w) * projected + clip_w * clip

    @torch.no_grad()
    def map_cosines(self, patches: torch.Tensor, text_emb: torch.Tensor, clip_w: float = 0.3) -> torch.Tensor:
        """:meth:`similarities` of a token map ``[B, width, h, w]`` the caller built from the encoder's tokens
        (Trident's image-wide map): the projector's and the frozen head's cosines, mixed by ``clip_w``."""
        texts = F.normalize(text_emb.to(patches.device, torch.float32), dim=-1)

        def cosine(features: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bchw,nc->bnhw", F.normalize(features.float(), dim=1), texts)

        projected = cosine(self.projector(patches))
        return projected if clip_w <= 0 else (1 - clip_w) * projected + clip_w * cosine(self._clip_projection(patches))


def label_set_feature_surgery(similarity: torch.Tensor, cls_similarity: torch.Tensor) -> torch.Tensor:
    """CLIP Surgery's feature surgery over a label set (its ``clip_feature_surgery``, training-free spec §6.2).

    ``similarity`` ``[B, N, h, w]``: cosines of each patch with each text; ``cls_similarity`` ``[B, N]``: those of
    the CLS token. ``w = softmax_c(2 * cls)``, ``w /= mean_c(w)``, then ``w_c * sim_c - mean_c'(w_c' * sim_c')``.
    """
    weights = (2 * cls_similarity).softmax(dim=1)
    weights = (weights / weights.mean(dim=1, keepdim=True))[:, :, None, None]
    weighted = weights * similarity
    return weighted - weighted.mean(dim=1, keepdim=True)
