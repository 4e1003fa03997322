"""tagalign: make CLIP's dense features follow text (TagAlign, arXiv 2312.14149) on open_clip + mmseg 1.x."""

from . import (
    api,
    compat,  # noqa: F401  (must precede any mmseg import)
)
from .api import load
from .models import TagAlign, encode_texts, load_checkpoint, load_clip, save_checkpoint

__version__ = "0.1.0"

__all__ = ["TagAlign", "__version__", "api", "encode_texts", "load", "load_checkpoint", "load_clip", "save_checkpoint"]
