"""Training on mmengine: model wrapper, optimizer parameter groups, resumable loop, hooks, data builder.

Importing this package registers everything in mmengine's registries (configs use
``custom_imports = dict(imports=["tagalign.training"])``).
"""

from . import checkpoint_io  # noqa: F401  (local checkpoints load on torch >= 2.6)
from .data import TagAlignTrainData, collate_tag_batch
from .hooks import ExportTagAlignCheckpointHook, TrainingStatsHook
from .loop import ResumableIterBasedTrainLoop
from .model import TagAlignTrainModel
from .optim import TagAlignOptimWrapperConstructor

__all__ = [
    "ExportTagAlignCheckpointHook",
    "ResumableIterBasedTrainLoop",
    "TagAlignOptimWrapperConstructor",
    "TagAlignTrainData",
    "TagAlignTrainModel",
    "TrainingStatsHook",
    "collate_tag_batch",
]
