"""High-level entry points for users of the library: ``tagalign.load`` (and, in :mod:`tagalign.inference`,
``segment`` and ``tag``)."""

from __future__ import annotations

from .models.build import DEFAULT_CLIP, DEFAULT_PRETRAINED
from .models.build import load_model as load

__all__ = ["DEFAULT_CLIP", "DEFAULT_PRETRAINED", "load"]
