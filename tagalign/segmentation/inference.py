"""Zero-shot segmentation maps from a TagAlign model: sliding windows, CLIP mixing, background channel.

Reference spec §6.1-6.2: per 448x448 window (stride 224) the model gives ``sigmoid(scale*cos + bias)`` per text,
mixed with the frozen CLIP branch by ``clip_w`` and upsampled to the window; a constant ``bg_thresh`` channel is
prepended for datasets with background; overlapping windows are averaged by per-pixel window counts. All windows of
an image go through the encoder in batches of at most ``crop_batch`` crops. Optional PAMR refines each window's
probabilities at 1/4 of the window resolution before they are upsampled (spec §6.5, an assumption of TCL's recipe).

:func:`predict_probabilities` returns every text's map at once (the demo, the API, referring: a few texts). The
benchmarks walk large vocabularies a chunk at a time instead (:mod:`.class_chunks`).
"""

from __future__ import annotations

import torch

from .inference_config import InferenceConfig, check_patch_grid, window_grid
from .windows import WindowScores

__all__ = ["InferenceConfig", "check_patch_grid", "predict_probabilities", "window_grid"]


@torch.no_grad()
def predict_probabilities(
    model, image: torch.Tensor, text_emb: torch.Tensor, with_background: bool, config: InferenceConfig
) -> torch.Tensor:
    """``[1, C, H, W]`` probabilities for one normalised image ``[1, 3, H, W]`` (C = N texts + background)."""
    probs = WindowScores(model, image, text_emb, config).average()
    if with_background:
        probs = torch.cat([torch.full_like(probs[:, :1], config.bg_thresh), probs], dim=1)
    return probs
