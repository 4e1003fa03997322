"""Run a training config with mmengine's Runner."""

from __future__ import annotations

import os

from mmengine.config import Config
from mmengine.logging import print_log
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
    if resume and not cfg.get("load_from") and cfg.get("work_dir"):
        path, reason = checkpoint_io.latest_checkpoint(cfg.work_dir)
        print_log(f"resume: {path or 'nothing to resume, starting from scratch'} ({reason})", logger="current")
        cfg.load_from, cfg.resume = path, path is not None
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner
