"""The embedded default: the shapes world, a tiny CLIP pretrained on it, and TagAlign trained and evaluated on top."""

from .run import MODELS, format_table, run_quickstart
from .world import CLIP_NAME, build_shapes_world

__all__ = ["CLIP_NAME", "MODELS", "build_shapes_world", "format_table", "run_quickstart"]
