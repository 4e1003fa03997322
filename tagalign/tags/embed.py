"""The embedding stage: ``tag_embeddings.pt`` = "a photo of a {tag}." through a CLIP text tower, ``[T, D]``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .vocab import TagVocab

logger = logging.getLogger(__name__)

__all__ = ["embed_vocab", "load_tag_embeddings"]

TAG_TEMPLATES = ("a photo of a {}.",)


def embed_vocab(out_dir: str | Path, clip: str = "ViT-B-16", pretrained: str | None = "openai",
                templates=TAG_TEMPLATES, device: str = "cpu") -> Path:
    """Encode every vocabulary tag (unnormalised, template mean) and save it with the vocabulary and CLIP identity."""
    import torch

    from ..models.clip import clip_identity, encode_texts, load_clip
    from .merge import finish_interrupted_merge

    out_dir = Path(out_dir)
    finish_interrupted_merge(out_dir)
    vocab = TagVocab.load(out_dir / "vocab.csv")
    model = load_clip(clip, pretrained, device=device)
    logger.info("encoding %d tags with CLIP %s (%s)", len(vocab), clip, pretrained or "random weights")
    embeddings = encode_texts(model, vocab.tags, templates)
    payload = {
        "embeddings": embeddings.float(),
        "tags": vocab.tags,
        "kinds": vocab.kinds,
        "vocab_hash": vocab.hash,
        "templates": list(templates),
        "clip": clip_identity(model).to_dict(),
    }
    target = out_dir / "tag_embeddings.pt"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, target)
    return target


def load_tag_embeddings(path: str | Path) -> dict:
    """The payload written by :func:`embed_vocab` (``embeddings``, ``tags``, ``kinds``, ``vocab_hash``, ``clip``)."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or "embeddings" not in payload:
        raise ValueError(f"{path} is not a tag-embedding file written by tools/parse_tags.py embed")
    return payload
