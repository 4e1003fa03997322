"""Segment and tag your own images: ``tagalign.segment`` and ``tagalign.tag``.

``segment`` follows exactly the evaluation path of ``tools/test.py`` (short side 448, slide 448/224, CLIP mixing,
constant background channel, bilinear resize to the original size, argmax).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .data.transforms import load_image, normalization, resize_probs, resize_short_side, to_tensor
from .models.clip import DEFAULT_TEMPLATES, encode_texts
from .models.text import RAM_REWEIGHT_SCALE, class_text_embeddings, encode_descriptions, reweighted_cosines
from .segmentation.inference import InferenceConfig, check_patch_grid, predict_probabilities

__all__ = ["SegmentationResult", "parse_texts", "segment", "tag"]


@dataclass
class SegmentationResult:
    labels: np.ndarray  # [H, W] int: 0 = background (when background=True), else 1 + class index
    probabilities: np.ndarray  # [N, H, W] per-class probability (max over a class's synonyms)
    classes: list[str]  # the class names (first synonym of each class)
    areas: dict[str, float]  # fraction of the image labelled with each class
    background: bool

    @property
    def names(self) -> list[str]:
        """Label names in label-map order (``"background"`` first when used)."""
        return (["background"] if self.background else []) + self.classes


def parse_texts(texts: str | Sequence[str]) -> list[list[str]]:
    """Classes with their synonyms: a string is comma-separated classes; a list item "tv, television, monitor" is
    one class with three synonyms."""
    if isinstance(texts, str):
        classes = [[t.strip()] for t in texts.split(",")]
    else:
        classes = [[s.strip() for s in str(item).split(",")] for item in texts]
    classes = [[s for s in synonyms if s] for synonyms in classes]
    classes = [synonyms for synonyms in classes if synonyms]
    if not classes:
        raise ValueError("give at least one text to segment")
    first_seen: dict[str, int] = {}
    for index, synonyms in enumerate(classes):
        for text in synonyms:
            if text in first_seen and first_seen[text] != index:
                raise ValueError(f"query '{text}' is given twice (queries {first_seen[text] + 1} and {index + 1}); "
                                 f"each text may name one class only")
            first_seen.setdefault(text, index)
    return classes


def model_statistics(model, norm: str) -> str | tuple:
    """``norm`` itself, or for ``model`` the CLIP's own ``(mean, std)`` (:func:`tagalign.models.clip_normalization`
    of the CLIP the model was loaded with)."""
    if norm != "model":
        return norm
    from .models.clip import clip_identity, clip_normalization

    identity = clip_identity(model.clip)
    return clip_normalization(identity.model_name, identity.pretrained)


@torch.no_grad()
def segment(model, image, texts: str | Sequence[str], background: bool = True, slide: bool = True,
            bg_thresh: float = 0.4, clip_w: float = 0.3, short_side: int = 448,
            templates: Sequence[str] = DEFAULT_TEMPLATES, inference: dict | None = None,
            norm: str = "imagenet", descriptions=None) -> SegmentationResult:
    """Zero-shot segmentation of ``image`` (path, PIL image or array) into ``texts`` (see :func:`parse_texts`).

    ``inference``: further :class:`InferenceConfig` fields (``score``, ``mix``, ``pamr``...); ``norm``: pixel
    statistics, ``imagenet`` (reference), ``clip`` or ``model`` (the CLIP's own, from its weights' config: 0.5/0.5 for
    SigLIP and PE-Core); ``descriptions``: a RAM++ tag-description file (or
    ``{name: [texts]}``) whose texts replace the templates for the names it describes."""
    classes = parse_texts(texts)
    array = load_image(image)
    flat = [s for synonyms in classes for s in synonyms]
    device = next(model.parameters()).device
    text_emb = class_text_embeddings(model.clip, flat, templates, descriptions).to(device)
    config = InferenceConfig(**{"mode": "slide" if slide else "whole", "bg_thresh": bg_thresh, "clip_w": clip_w,
                                **(inference or {})})
    resized = resize_short_side(array, short_side)
    patch = getattr(model, "patch_size", 16)
    check_patch_grid(config, patch)
    if min(resized.shape[:2]) < patch:
        raise ValueError(f"the image is {array.shape[0]}x{array.shape[1]} pixels; resized to short side {short_side} "
                         f"with the long side at most 2048 it is {resized.shape[0]}x{resized.shape[1]}, thinner than "
                         f"one {patch}-pixel patch of the model")
    statistics = model_statistics(model, norm)
    if getattr(model, "vfm", None) is not None:  # the second model un-normalises the windows with these
        model.vfm.input_statistics = normalization(statistics)
    probs = predict_probabilities(model, to_tensor(resized, statistics).to(device), text_emb, False, config)
    probs = resize_probs(probs, array.shape[:2])[0]
    per_class, start = [], 0
    for synonyms in classes:  # a class scores the max over its synonyms
        per_class.append(probs[start : start + len(synonyms)].max(0).values)
        start += len(synonyms)
    class_probs = torch.stack(per_class)
    if background:
        labels = torch.cat([torch.full_like(class_probs[:1], bg_thresh), class_probs]).argmax(0)
    else:
        labels = class_probs.argmax(0)
    labels = labels.cpu().numpy()
    names = [synonyms[0] for synonyms in classes]
    offset = 1 if background else 0
    areas = {name: float((labels == i + offset).mean()) for i, name in enumerate(names)}
    return SegmentationResult(labels, class_probs.cpu().numpy(), names, areas, background)


def _vocabulary(model, vocab) -> tuple[list[str], torch.Tensor]:
    if vocab is None:
        if model.tag_embeddings is None or getattr(model, "tag_names", None) is None:
            raise ValueError("this model has no tag vocabulary: pass vocab= (a tag_embeddings.pt file from "
                             "tools/parse_tags.py embed, or a list of words)")
        return list(model.tag_names), model.tag_embeddings
    if isinstance(vocab, str | os.PathLike):
        from .models.clip import clip_identity
        from .tags.embed import load_tag_embeddings

        payload = load_tag_embeddings(vocab)
        saved, current = payload["clip"], clip_identity(model.clip)
        if saved["weights_hash"] != current.weights_hash:
            raise ValueError(f"{vocab} was embedded with CLIP {saved['model_name']} ({saved['pretrained']}, hash "
                             f"{saved['weights_hash']}), but the model's CLIP is {current.model_name} "
                             f"({current.pretrained}, hash {current.weights_hash}): its tag scores would be "
                             f"meaningless. Run `tools/parse_tags.py embed` with the model's CLIP.")
        return list(payload["tags"]), payload["embeddings"]
    words = [str(w) for w in vocab]
    return words, encode_texts(model.clip, words, ("a photo of a {}.",))


def _description_bank(model, names: list[str], vocab, descriptions):
    """The tags' description bank: from ``descriptions`` (a RAM++ file or mapping), else from a
    ``tag_embeddings.pt`` written with ``embed --text descriptions|both``, else the model's own."""
    if descriptions is not None:
        return encode_descriptions(model.clip, names, descriptions)[0]
    if isinstance(vocab, str | os.PathLike):
        from .models.text import DescriptionBank
        from .tags.embed import load_tag_embeddings

        payload = load_tag_embeddings(vocab)
        if "description_embeddings" in payload:
            return DescriptionBank(payload["description_embeddings"], payload["description_mask"])
    elif vocab is None and getattr(model, "has_descriptions", False):
        return model.description_bank()
    raise ValueError("prompts='descriptions'/'reweighted' need tag descriptions: pass descriptions= (a RAM++ "
                     "description file) or a tag_embeddings.pt written with `embed --text descriptions|both`")


@torch.no_grad()
def tag(model, image, top_k: int = 20, vocab=None, size: int = 224, descriptions=None,
        prompts: str = "template") -> list[tuple[str, float]]:
    """Open-vocabulary image tagging: the ``top_k`` tags by cosine similarity between the image feature (mean of
    the projected dense features at the training resolution) and the tag texts.

    ``prompts``: ``template`` (the vocabulary's embeddings), ``descriptions`` (the tags' description ensemble) or
    ``reweighted`` (RAM++'s re-weighting of the descriptions for this image, with the model's learned temperature
    if it was trained with ``tag_text="reweighted"``, else 1/0.07). ``descriptions``: a RAM++ description file;
    without it, ``vocab``'s description embeddings. With only ``descriptions``, its tags are the vocabulary."""
    if prompts not in ("template", "descriptions", "reweighted"):
        raise ValueError(f"prompts must be template, descriptions or reweighted; got {prompts!r}")
    if descriptions is not None and not isinstance(descriptions, dict):
        from .models.description_file import load_descriptions

        descriptions = load_descriptions(descriptions)
    if vocab is None and descriptions is not None:
        vocab = list(descriptions)
    names, embeddings = _vocabulary(model, vocab)
    array = load_image(image)
    device = next(model.parameters()).device
    pixels = F.interpolate(to_tensor(array), size=(size, size), mode="bilinear", align_corners=False).to(device)
    feature = F.normalize(model.dense_features(pixels).mean(dim=(2, 3)), dim=-1)[0]
    if prompts == "template":
        scores = F.normalize(embeddings.to(device, feature.dtype), dim=-1) @ feature
    else:
        bank = _description_bank(model, names, vocab, descriptions).to(device)
        if prompts == "descriptions":
            scores = bank.ensemble() @ feature.float()
        else:
            learned = getattr(model, "reweight_scale", None)
            scale = learned() if learned is not None else RAM_REWEIGHT_SCALE
            scores = reweighted_cosines(feature[None], bank, scale)[0]
    top = scores.topk(min(top_k, len(names)))
    return [(names[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]
