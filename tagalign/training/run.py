"""Run a training config with mmengine's Runner."""

from __future__ import annotations

import os

from mmengine.config import Config
from mmengine.runner import Runner

__all__ = ["train"]


def train(cfg: Config, work_dir: str | os.PathLike | None = None, resume: bool = False,
          launcher: str = "none") -> Runner:
    """Build the Runner from ``cfg`` and train; returns the runner (its ``work_dir`` holds the checkpoints)."""
    from . import checkpoint_io, data, hooks, loop, model, optim  # noqa: F401  (register)

    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    cfg.launcher = launcher
    if launcher != "none":
        cfg.env_cfg.setdefault("dist_cfg", {})
    cfg.resume = resume
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner
