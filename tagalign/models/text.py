"""Tag text embeddings from descriptions: RAM++'s prompt ensemble and its automatic re-weighting (spec §2).

A :class:`DescriptionBank` holds every tag's description embeddings, each L2-normalised, padded to the longest
tag's count with a mask (after filtering, tags have different numbers of descriptions).

- ensemble: ``t_c = normalize(mean_k normalize(E(d_ck)))`` over the tag's descriptions;
- re-weighting for an image query ``q``: ``w_ck = softmax_k(tau * q/|q| . D_ck)`` over the tag's descriptions,
  ``e_c = sum_k w_ck D_ck`` (not re-normalised, as in RAM++). Scored here as the cosine ``q/|q| . e_c/|e_c|``:
  RAM++ feeds ``e_c`` to a decoder instead, so the dot-product scoring is this library's choice (spec §2.4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .clip import encode_texts
from .description_file import load_descriptions, photo_prompt

__all__ = ["RAM_REWEIGHT_SCALE", "DescriptionBank", "class_text_embeddings", "encode_descriptions",
           "reweighted_cosines", "reweighted_embeddings"]

#: RAM++'s initial re-weighting temperature, exp(ln(1/0.07)).
RAM_REWEIGHT_SCALE = 1 / 0.07


@dataclass
class DescriptionBank:
    """``embeddings`` ``[T, K, D]`` (unit rows, zeros where ``mask`` ``[T, K]`` is False)."""

    embeddings: torch.Tensor
    mask: torch.Tensor
    _gram: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 3 or self.mask.shape != self.embeddings.shape[:2]:
            raise ValueError(f"description embeddings must be [T, K, D] with a [T, K] mask; got "
                             f"{list(self.embeddings.shape)} and {list(self.mask.shape)}")
        if not bool(self.mask.any(dim=1).all()):
            raise ValueError("every tag needs at least one description")

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def to(self, device) -> DescriptionBank:
        if self.embeddings.device == torch.device(device):
            return self
        return DescriptionBank(self.embeddings.to(device), self.mask.to(device))

    def gram(self) -> torch.Tensor:
        """``[T, K, K]`` each tag's description Gram matrix (computed once per bank)."""
        if self._gram is None:
            emb = self.embeddings.float()
            self._gram = emb @ emb.transpose(1, 2)
        return self._gram

    def ensemble(self) -> torch.Tensor:
        """``[T, D]``: normalize(mean of the tag's normalised descriptions)."""
        total = (self.embeddings * self.mask[..., None]).sum(dim=1)
        return F.normalize(total / self.mask.sum(dim=1, keepdim=True), dim=-1)


def encode_descriptions(model, tags: Sequence[str], descriptions: Mapping[str, Sequence[str]],
                        chunk_size: int = 1024) -> tuple[DescriptionBank, list[str]]:
    """Encode each tag's descriptions (CLIP tokenizer truncates at the context length, as RAM++ does).

    A tag with no description in ``descriptions`` gets RAM++'s entry 0 only, "a photo of a {tag}."; those tags are
    returned as the second value.
    """
    missing = [tag for tag in tags if not descriptions.get(tag)]
    per_tag = [list(descriptions.get(tag) or [photo_prompt(tag)]) for tag in tags]
    flat = [text for texts in per_tag for text in texts]
    encoded = F.normalize(encode_texts(model, flat, ("{}",), chunk_size=chunk_size), dim=-1)
    width = max(len(texts) for texts in per_tag)
    embeddings = encoded.new_zeros(len(tags), width, encoded.shape[1])
    mask = torch.zeros(len(tags), width, dtype=torch.bool)
    start = 0
    for index, texts in enumerate(per_tag):
        embeddings[index, : len(texts)] = encoded[start : start + len(texts)]
        mask[index, : len(texts)] = True
        start += len(texts)
    return DescriptionBank(embeddings, mask), missing


def class_text_embeddings(model, names: Sequence[str], templates: Sequence[str], descriptions=None,
                          normalize_each: bool = False) -> torch.Tensor:
    """``[N, D]`` text embeddings of class names: a name found in ``descriptions`` (a RAM++ description file or a
    ``{name: [texts]}`` mapping) gets its description ensemble, any other name its template embedding."""
    embeddings = encode_texts(model, names, templates, normalize_each=normalize_each)
    if descriptions is None:
        return embeddings
    if not isinstance(descriptions, Mapping):
        descriptions = load_descriptions(descriptions)
    described = [i for i, name in enumerate(names) if descriptions.get(name)]
    if described:
        bank, _ = encode_descriptions(model, [names[i] for i in described], descriptions)
        embeddings = F.normalize(embeddings, dim=-1)  # both kinds on the unit sphere: cosines only use directions
        embeddings[described] = bank.ensemble()
    return embeddings


def _weights(query: torch.Tensor, bank: DescriptionBank, scale: float | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(w [B, T, K], cos [B, T, K])``: the softmax over each tag's descriptions and the raw cosines."""
    query = F.normalize(query.float(), dim=-1)
    cos = torch.einsum("bd,tkd->btk", query, bank.embeddings.float())
    logits = (scale * cos).masked_fill(~bank.mask, -math.inf)
    return logits.softmax(dim=-1), cos


def reweighted_embeddings(query: torch.Tensor, bank: DescriptionBank,
                          scale: float | torch.Tensor = RAM_REWEIGHT_SCALE) -> torch.Tensor:
    """``e [B, T, D]``: each image's re-weighted description sum per tag (RAM++ Eq. 1, not re-normalised)."""
    weights, _ = _weights(query, bank, scale)
    return torch.einsum("btk,tkd->btd", weights, bank.embeddings.float())


def reweighted_cosines(query: torch.Tensor, bank: DescriptionBank,
                       scale: float | torch.Tensor = RAM_REWEIGHT_SCALE) -> torch.Tensor:
    """``cos(q, e_c)`` ``[B, T]`` without building ``e``: ``sum_k w_k cos_k / sqrt(w^T G w)`` with ``G`` each tag's
    description Gram matrix, so memory stays ``O(B T K)``."""
    weights, cos = _weights(query, bank, scale)
    norm_sq = (torch.einsum("btk,tkl->btl", weights, bank.gram()) * weights).sum(dim=-1)
    return (weights * cos).sum(dim=-1) / norm_sq.clamp(min=1e-12).sqrt()
