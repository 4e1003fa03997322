"""tagalign: make CLIP's dense features follow text (TagAlign, arXiv 2312.14149) on open_clip + mmseg 1.x.

``import tagalign`` is light: it installs the mmcv._ext stub (before any mmseg import) and loads the model code
(torch, open_clip) only when one of its names is first used, so ``tagalign.tags`` also works in an environment
without them (e.g. the separate vLLM environment used for tag parsing).
"""

from __future__ import annotations

import importlib

from . import compat  # noqa: F401  (must precede any mmseg import)

__version__ = "0.1.0"

_LAZY = {
    "TagAlign": "tagalign.models",
    "encode_texts": "tagalign.models",
    "load_checkpoint": "tagalign.models",
    "load_clip": "tagalign.models",
    "save_checkpoint": "tagalign.models",
    "load": "tagalign.api",
    "api": "tagalign.api",
    "segment": "tagalign.inference",
    "tag": "tagalign.inference",
}

__all__ = ["TagAlign", "__version__", "api", "encode_texts", "load", "load_checkpoint", "load_clip", "save_checkpoint",
           "segment", "tag"]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if name == "api" else getattr(module, name)
    raise AttributeError(f"module 'tagalign' has no attribute '{name}'")
