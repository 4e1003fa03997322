"""The embedding stage: ``tag_embeddings.pt``, each vocabulary tag through a CLIP text tower.

``text="template"``: "a photo of a {tag}." (``[T, D]``, unnormalised, as the reference); ``"descriptions"``: the
tag's LLM descriptions (``tools/parse_tags.py describe``), each L2-normalised, as RAM++'s prompt ensemble
(normalise -> mean -> normalise) plus the per-description embeddings for re-weighting; ``"both"``: both.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..atomic import atomic_path
from .vocab import TagVocab

logger = logging.getLogger(__name__)

__all__ = ["TEXT_MODES", "embed_vocab", "load_tag_embeddings"]

TAG_TEMPLATES = ("a photo of a {}.",)


TEXT_MODES = ("template", "descriptions", "both")


def _description_payload(model, tags: list[str], descriptions: str | Path) -> dict:
    """The description fields of ``tag_embeddings.pt`` and their provenance."""
    import hashlib

    from ..models.description_file import load_descriptions
    from ..models.text import encode_descriptions

    texts = load_descriptions(descriptions)
    bank, missing = encode_descriptions(model, tags, texts)
    if missing:
        logger.warning("%d of %d tags have no description in %s and get 'a photo of a {tag}.' only (first: %s)",
                       len(missing), len(tags), descriptions, missing[:5])
    logger.info("encoded %d descriptions of %d tags (at most %d per tag)", int(bank.mask.sum()), len(tags),
                bank.mask.shape[1])
    return {
        "ensemble_embeddings": bank.ensemble(),
        "description_embeddings": bank.embeddings,
        "description_mask": bank.mask,
        "descriptions": {"file": str(descriptions),
                         "sha256": hashlib.sha256(Path(descriptions).read_bytes()).hexdigest(),
                         "per_tag": bank.mask.sum(dim=1).tolist(), "tags_without_descriptions": missing},
    }


def embed_vocab(out_dir: str | Path, clip: str = "ViT-B-16", pretrained: str | None = "openai",
                templates=TAG_TEMPLATES, device: str = "cpu", text: str = "template",
                descriptions: str | Path | None = None) -> Path:
    """Encode every vocabulary tag and save it with the vocabulary, the CLIP identity and how it was made.

    ``embeddings`` is what training uses by default: the template embedding, or the description ensemble when
    ``text="descriptions"``.
    """
    import torch

    from ..models.clip import clip_identity, encode_texts, load_clip
    from .merge_commit import finish_interrupted_merge

    if text not in TEXT_MODES:
        raise ValueError(f"text must be one of {TEXT_MODES}; got {text!r}")
    out_dir = Path(out_dir)
    if text != "template":
        descriptions = Path(descriptions or out_dir / "tag_descriptions.json")
        if not descriptions.is_file():
            raise FileNotFoundError(f"--text {text} needs tag descriptions: {descriptions} does not exist (run "
                                    f"tools/parse_tags.py describe {out_dir}, or pass --descriptions FILE)")
    finish_interrupted_merge(out_dir)
    vocab = TagVocab.load(out_dir / "vocab.csv")
    model = load_clip(clip, pretrained, device=device)
    logger.info("encoding %d tags with CLIP %s (%s), text: %s", len(vocab), clip, pretrained or "random weights", text)
    payload = {"tags": vocab.tags, "kinds": vocab.kinds, "vocab_hash": vocab.hash, "text": text,
               "clip": clip_identity(model).to_dict()}
    if text in ("template", "both"):
        payload["template_embeddings"] = encode_texts(model, vocab.tags, templates).float()
        payload["templates"] = list(templates)
    if text in ("descriptions", "both"):
        payload.update(_description_payload(model, vocab.tags, descriptions))
    payload["embeddings"] = payload.get("template_embeddings", payload.get("ensemble_embeddings"))
    target = out_dir / "tag_embeddings.pt"
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    return target


def load_tag_embeddings(path: str | Path) -> dict:
    """The payload written by :func:`embed_vocab` (``embeddings``, ``tags``, ``kinds``, ``vocab_hash``, ``clip``)."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch/pickle raise many kinds for a truncated or foreign file
        raise ValueError(f"{path}: cannot read the tag embeddings ({type(err).__name__}: {err}). Expected the file "
                         f"tools/parse_tags.py embed writes; a truncated copy? Run the embed stage again.") from err
    if not isinstance(payload, dict) or "embeddings" not in payload:
        raise ValueError(f"{path} is not a tag-embedding file written by tools/parse_tags.py embed")
    return payload
