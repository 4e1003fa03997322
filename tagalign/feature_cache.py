"""Remember the frozen encoder's output for recent inputs, so new words for the same image skip the encoder.

The frozen CLIP dominates the cost of a query and does not depend on the words. :class:`PatchFeatureCache` wraps the
``encode_patches`` of one or more TagAlign models that share a CLIP (e.g. a trained model and its untrained
CLIP-surgery baseline), keyed by the exact input tensor, so a second request with the same image and other words
only runs the projector and the scoring. An encoder that reads the words themselves (``resclip``) is keyed by them
too.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

__all__ = ["PatchFeatureCache"]


class PatchFeatureCache:
    """An LRU of ``encode_patches`` results; ``hits``/``misses`` count lookups."""

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self.entries: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def attach(self, *models) -> PatchFeatureCache:
        for model in models:
            encode = type(model).encode_patches.__get__(model)
            model.encode_patches = self._cached(model, encode)
        return self

    def _cached(self, model, encode):
        def digest_of(tensor: torch.Tensor) -> str:
            return hashlib.sha1(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()

        def encode_patches(images: torch.Tensor, text_emb: torch.Tensor | None = None) -> torch.Tensor:
            encoder = tuple(sorted((k, repr(v.identity() if hasattr(v, "identity") else v))
                                   for k, v in model.encoder_config.items()))
            # an encoder that reads the words (resclip) gives other tokens for other words
            words = digest_of(text_emb) if text_emb is not None and getattr(model, "reads_text", False) else None
            key = (id(model.clip), encoder, tuple(images.shape), digest_of(images), words)
            if key in self.entries:
                self.hits += 1
                self.entries.move_to_end(key)
                return self.entries[key]
            self.misses += 1
            tokens = encode(images, text_emb)
            self.entries[key] = tokens
            if len(self.entries) > self.capacity:
                self.entries.popitem(last=False)
            return tokens

        return encode_patches
