"""A quickstart world for plumbing tests: its tiny CLIP need not be good, so it is pretrained for two steps."""

from __future__ import annotations

from pathlib import Path

from tagalign.models.pretrain import PretrainConfig
from tagalign.quickstart import build_shapes_world

QUICK_PRETRAIN = PretrainConfig(steps=2, batch_size=8)


def build_plumbing_world(root: Path, num_train: int, num_eval: int = 2):
    """:func:`tagalign.quickstart.build_shapes_world` with a two-step pretrained CLIP; returns what it returns."""
    return build_shapes_world(root, num_train=num_train, num_eval=num_eval, pretrain=QUICK_PRETRAIN)
