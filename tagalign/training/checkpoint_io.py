"""Resuming mmengine training state on torch >= 2.6.

mmengine 0.10 loads checkpoints with ``torch.load``'s default, which torch 2.6 switched to ``weights_only=True``;
a full training state (optimizer, AMP scaler, mmengine's message hub with its HistoryBuffers) is then refused and
``--resume`` fails. Local training checkpoints are written by this training itself, so they are loaded as full
pickles here. Remote schemes (http, s3, ...) keep mmengine's loaders.
"""

from __future__ import annotations

import os

import torch
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = ["load_local_training_checkpoint"]


@CheckpointLoader.register_scheme(prefixes="", force=True)
def load_local_training_checkpoint(filename: str, map_location=None):
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"checkpoint {filename} does not exist")
    return torch.load(filename, map_location=map_location, weights_only=False)
