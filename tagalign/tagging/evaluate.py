"""Score a tagging benchmark: one encoder pass per image gives every scoring choice; RAM's metrics per row.

Scoring choices (tagging spec §6):
- ``clip``: the frozen CLIP's global image embedding (CLS -> ln_post -> proj), the CLIP baseline;
- ``pooled``: TagAlign's image feature, the mean of the projected dense map (its training-time scorer);
- ``max`` / ``mean``: the max / mean over patches of each projected patch's cosine with the tag.
Prompts: ``template`` (RAM's processed tag name in each template, normalise -> mean -> normalise), ``descriptions``
(the same ensemble over the tag's LLM descriptions) and ``reweighted`` (RAM++'s per-image re-weighting of the
descriptions, queried with the image feature of the scoring choice: the global embedding for ``clip``, the pooled
projected feature otherwise). Scores are fp32 cosines; images are squashed to ``image_size`` squared (default: the
CLIP's input size) and normalised with ImageNet's statistics by default, as TagAlign trains and evaluates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..models.text import (
    RAM_REWEIGHT_SCALE,
    DescriptionBank,
    encode_descriptions,
    reweighted_cosines,
    reweighted_embeddings,
)
from .benchmark import TaggingBenchmark
from .metrics import tagging_metrics

logger = logging.getLogger(__name__)

__all__ = ["PROMPTS", "SCORINGS", "TagTexts", "build_tag_texts", "evaluate_tagging", "format_tagging_table",
           "processed_name", "score_images"]

SCORINGS = ("clip", "pooled", "max", "mean")
PROMPTS = ("template", "descriptions", "reweighted")
DEFAULT_TEMPLATES = ("a photo of a {}.",)
_TAG_CHUNK = 512


def processed_name(tag: str) -> str:
    """RAM's class-name clean-up for hand-written prompts: "_" -> " ", "/" -> " or ", lower case, no final "."."""
    return tag.replace("_", " ").replace("/", " or ").lower().rstrip(".")


@dataclass
class TagTexts:
    """Per prompt mode, ``[T, D]`` tag embeddings or (``reweighted``) a description bank and its temperature."""

    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    bank: DescriptionBank | None = None
    scale: float = RAM_REWEIGHT_SCALE
    tags_without_descriptions: list[str] = field(default_factory=list)

    @property
    def prompts(self) -> list[str]:
        return [*self.embeddings, *(["reweighted"] if self.bank is not None else [])]


def build_tag_texts(model, tags: Sequence[str], prompts: Sequence[str],
                    descriptions: Mapping[str, Sequence[str]] | None = None,
                    templates: Sequence[str] = DEFAULT_TEMPLATES, scale: float | None = None) -> TagTexts:
    """Encode the tag texts each prompt mode needs with the model's CLIP text tower."""
    from ..models.clip import encode_texts

    unknown = sorted(set(prompts) - set(PROMPTS))
    if unknown:
        raise ValueError(f"unknown prompt mode(s) {unknown}; choose from {PROMPTS}")
    texts = TagTexts()
    if "template" in prompts:
        names = [processed_name(t) for t in tags]
        texts.embeddings["template"] = F.normalize(encode_texts(model.clip, names, templates, normalize_each=True),
                                                   dim=-1)
    if {"descriptions", "reweighted"} & set(prompts):
        if descriptions is None:
            raise ValueError("the descriptions and reweighted prompts need a description file (--descriptions)")
        bank, texts.tags_without_descriptions = encode_descriptions(model.clip, tags, descriptions)
        if texts.tags_without_descriptions:
            logger.warning("%d of %d tags have no description and use 'a photo of a {tag}.' only (first: %s)",
                           len(texts.tags_without_descriptions), len(tags), texts.tags_without_descriptions[:5])
        if "descriptions" in prompts:
            texts.embeddings["descriptions"] = bank.ensemble()
        if "reweighted" in prompts:
            texts.bank = bank
        learned = getattr(model, "reweight_scale", None)
        texts.scale = float(scale if scale is not None else learned() if learned is not None else RAM_REWEIGHT_SCALE)
    return texts


@torch.no_grad()
def _features(model, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(global CLIP embedding [B, D], projected dense map [B, D, h, w])`` from one encoder pass."""
    global_emb, patches = model.encode_dense(pixels)
    dense = model.projector(patches)
    return global_emb.float(), dense.float()


def _dense_scores(patches: torch.Tensor, tag_emb: torch.Tensor, reduce: str) -> torch.Tensor:
    """``[B, T]`` max or mean over patches of cos(patch, tag); ``tag_emb`` is ``[T, D]`` or per image ``[B, T, D]``."""
    equation = "bpd,td->bpt" if tag_emb.ndim == 2 else "bpd,btd->bpt"
    cos = torch.einsum(equation, patches, F.normalize(tag_emb, dim=-1))
    return cos.amax(dim=1) if reduce == "max" else cos.mean(dim=1)


@torch.no_grad()
def score_images(model, pixels: torch.Tensor, texts: TagTexts, scorings: Sequence[str]) -> dict[str, torch.Tensor]:
    """``{"<scoring>/<prompt>": [B, T] fp32 scores}`` for a batch of normalised images."""
    global_emb, dense = _features(model, pixels)
    pooled = dense.mean(dim=(2, 3))
    patches = F.normalize(dense.flatten(2).transpose(1, 2), dim=-1)
    scores: dict[str, torch.Tensor] = {}
    for scoring in scorings:
        query = global_emb if scoring == "clip" else pooled
        for prompt, tag_emb in texts.embeddings.items():
            tag_emb = tag_emb.to(query.device)
            if scoring in ("clip", "pooled"):
                scores[f"{scoring}/{prompt}"] = F.normalize(query, dim=-1) @ tag_emb.t()
            else:
                scores[f"{scoring}/{prompt}"] = _dense_scores(patches, tag_emb, scoring)
        if texts.bank is None:
            continue
        bank = texts.bank.to(query.device)
        if scoring in ("clip", "pooled"):
            scores[f"{scoring}/reweighted"] = reweighted_cosines(query, bank, texts.scale)
            continue
        parts = []
        for start in range(0, len(bank), _TAG_CHUNK):  # [B, T, D] per chunk of tags bounds memory
            chunk = DescriptionBank(bank.embeddings[start : start + _TAG_CHUNK], bank.mask[start : start + _TAG_CHUNK])
            parts.append(_dense_scores(patches, reweighted_embeddings(query, chunk, texts.scale), scoring))
        scores[f"{scoring}/reweighted"] = torch.cat(parts, dim=1)
    return scores


def _model_image_size(model) -> int:
    size = getattr(model.clip.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


class _Images(torch.utils.data.Dataset):
    """Squashed, normalised images; an unreadable file becomes a 10x10 black image (as RAM's harness does)."""

    def __init__(self, paths: Sequence, indices: Sequence[int], size: int, norm: str):
        self.paths, self.indices, self.size, self.norm = paths, list(indices), size, norm

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        from ..data.transforms import load_image, to_tensor

        index = self.indices[position]
        try:
            array, readable = load_image(self.paths[index]), True
        except (ValueError, FileNotFoundError):
            array, readable = np.zeros((10, 10, 3), dtype=np.uint8), False
        tensor = to_tensor(array, self.norm)
        tensor = F.interpolate(tensor, size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        return index, tensor, readable


def _gather(local: dict[str, np.ndarray], indices: np.ndarray, unreadable: list[int]) -> tuple:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return local, indices, unreadable
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, (local, indices, unreadable))
    merged = {key: np.concatenate([g[0][key] for g in gathered]) for key in local}
    return merged, np.concatenate([g[1] for g in gathered]), sorted(i for g in gathered for i in g[2])


def evaluate_tagging(model, benchmark: TaggingBenchmark, texts: TagTexts, scorings: Sequence[str] = ("pooled",),
                     image_size: int | None = None, norm: str = "imagenet", threshold: float | np.ndarray = 0.25,
                     batch_size: int = 32, num_workers: int = 2, device: str | torch.device | None = None) -> dict:
    """Score every image (split across ranks under torch.distributed) and compute RAM's metrics per row."""
    unknown = sorted(set(scorings) - set(SCORINGS))
    if unknown:
        raise ValueError(f"unknown scoring(s) {unknown}; choose from {SCORINGS}")
    device = device or next(model.parameters()).device
    size = image_size or _model_image_size(model)
    texts.embeddings = {prompt: emb.to(device) for prompt, emb in texts.embeddings.items()}  # moved once
    texts.bank = texts.bank.to(device) if texts.bank is not None else None
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) \
        if torch.distributed.is_available() and torch.distributed.is_initialized() else (0, 1)
    dataset = _Images(benchmark.images, range(rank, len(benchmark.images), world), size, norm)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    chunks: dict[str, list[np.ndarray]] = {}
    order: list[int] = []
    unreadable: list[int] = []
    start = last_log = time.monotonic()
    for indices, pixels, readable in loader:
        for key, value in score_images(model, pixels.to(device), texts, scorings).items():
            chunks.setdefault(key, []).append(value.float().cpu().numpy())
        order.extend(indices.tolist())
        unreadable.extend(int(i) for i, ok in zip(indices, readable) if not ok)
        now = time.monotonic()
        if now - last_log > 10 or len(order) == len(dataset):
            last_log = now
            logger.info("%s: %d/%d images scored on this process (%.1f images/s)", benchmark.name, len(order),
                        len(dataset), len(order) / max(now - start, 1e-9))
    local = {key: np.concatenate(value) for key, value in chunks.items()}
    merged, order_all, unreadable = _gather(local, np.asarray(order, dtype=np.int64), unreadable)
    rank_of = np.argsort(order_all, kind="stable")
    if unreadable:
        logger.warning("%d images could not be read and were scored as black images (first: %s)", len(unreadable),
                       [str(benchmark.images[i]) for i in unreadable[:3]])
    rows = {key: tagging_metrics(value[rank_of], benchmark.targets, threshold) for key, value in merged.items()}
    spec = benchmark.spec
    return {
        "benchmark": benchmark.name,
        "rows": rows,
        "images": len(benchmark.images),
        "unreadable_images": [str(benchmark.images[i]) for i in unreadable],
        "tags_without_descriptions": texts.tags_without_descriptions,
        "settings": {"scorings": list(scorings), "prompts": texts.prompts, "image_size": size, "norm": norm,
                     "threshold": threshold if np.isscalar(threshold) else "per class",
                     "reweight_scale": texts.scale if texts.bank is not None else None, "scores": "fp32 cosine",
                     "ties": "earlier image in the annotation file ranks first"},
        "paper": dict(spec.paper) if spec else {},
        "caveat": spec.caveat if spec else "",
    }


def format_tagging_table(result: dict) -> str:
    """Markdown: one row per scoring/prompt, then the RAM++ paper's numbers with their caveat."""
    threshold = result["settings"]["threshold"]
    lines = [f"### {result['benchmark']} ({result['images']} images)", "",
             f"| scoring / prompt | mAP (all classes) | mAP (classes with positives) | CP@{threshold} | "
             f"CR@{threshold} | F1@{threshold} |", "|---|---:|---:|---:|---:|---:|"]
    for key, row in result["rows"].items():
        lines.append(f"| {key} | {row['mAP']:.2f} | {row['mAP_classes_with_positives']:.2f} | {row['CP']:.2f} | "
                     f"{row['CR']:.2f} | {row['F1']:.2f} |")
    first = next(iter(result["rows"].values()))
    lines.append("")
    lines.append(f"{first['classes_with_positives']} of {first['classes']} classes have a positive; "
                 f"{first['images_without_tags']} images have no tag. 'all classes' counts a class without positives "
                 f"as AP 0 (RAM's mAP).")
    if result["paper"]:
        lines.append("RAM++ paper (arXiv 2310.15200) mAP: " + ", ".join(f"{k} {v}" for k, v in result["paper"].items()))
    if result["caveat"]:
        lines.append(f"Caveat: {result['caveat']}")
    return "\n".join(lines)
