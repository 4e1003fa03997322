"""Zero-shot segmentation maps from a TagAlign model: sliding windows, CLIP mixing, background channel.

Reference spec §6.1-6.2: per 448x448 window (stride 224) the model gives ``sigmoid(scale*cos + bias)`` per text,
mixed with the frozen CLIP branch by ``clip_w`` and upsampled to the window; a constant ``bg_thresh`` channel is
prepended for datasets with background; overlapping windows are averaged by per-pixel window counts. All windows of
an image go through the encoder in batches of at most ``crop_batch`` crops. Optional PAMR refines each window's
probabilities at 1/4 of the window resolution before they are upsampled (spec §6.5, an assumption of TCL's recipe).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .pamr import pamr

__all__ = ["InferenceConfig", "predict_probabilities", "window_grid"]


@dataclass
class InferenceConfig:
    """Scoring and windowing; the defaults are the reference evaluation's (configs/eval.yml)."""

    mode: str = "slide"  # "slide" or "whole"
    crop: int = 448
    stride: int = 224
    crop_batch: int = 16  # windows per encoder forward (bounds memory)
    clip_w: float = 0.3
    scale: float = 10.0
    bias: float = -2.5
    bg_thresh: float = 0.4
    precision: str = "fp32"  # "fp32", "bf16" or "fp16" autocast (bf16 also pays off on CPUs with AMX)
    pamr: bool = False  # PAMR post-processing per window (TCL's recipe; off in the reference)
    pamr_iter: int = 10
    pamr_dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24)
    pamr_stride: int = 4  # PAMR runs at 1/pamr_stride of the window (TCL refines its 1/4-resolution mask)
    score: str = "sigmoid"  # "softmax": the paper's Eq. 8, softmax(scale * cos) over the classes
    mix: str = "probabilities"  # "similarities": mix the cosine maps before scoring (paper Eq. 7)
    feature_surgery: bool = False  # CLIP Surgery's label-set feature surgery on each cosine map (not in TagAlign)
    # the SCLIP family (protocol="sclip"): window-averaged cosines, then softmax(logit_scale * cos) over the queries
    protocol: str = "tagalign"
    logit_scale: float = 40.0
    prob_thd: float = 0.0  # predict class 0 where the top class probability is below this
    area_thd: float | None = None  # zero classes whose predicted area is <= area_thd x the foreground area
    pad_to: int = 0  # zero-pad each window symmetrically to a multiple of this (ClearCLIP: 16); 0: no padding

    def __post_init__(self) -> None:
        if self.protocol not in ("tagalign", "sclip"):
            raise ValueError(f"protocol must be tagalign or sclip, got '{self.protocol}'")
        self.pamr_dilations = tuple(self.pamr_dilations)
        if self.mode not in ("slide", "whole"):
            raise ValueError(f"inference mode must be 'slide' or 'whole', got '{self.mode}'")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got '{self.precision}'")
        if self.score not in ("sigmoid", "softmax") or self.mix not in ("probabilities", "similarities"):
            raise ValueError(f"score must be sigmoid or softmax and mix probabilities or similarities; got "
                             f"'{self.score}', '{self.mix}'")
        if self.crop <= 0 or self.stride <= 0 or self.crop_batch <= 0:
            raise ValueError("crop, stride and crop_batch must be positive")


def window_grid(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """mmseg slide windows ``(y1, y2, x1, x2)``: a grid clipped so every window ends inside the image."""
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    windows = []
    for row in range(rows):
        for col in range(cols):
            y1, x1 = row * stride, col * stride
            y2, x2 = min(y1 + crop, height), min(x1 + crop, width)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            windows.append((y1, y2, x1, x2))
    return windows


def _score_options(config: InferenceConfig) -> dict:
    """The scoring options that differ from the reference (models without them keep working at the defaults)."""
    options = {"score": config.score, "mix": config.mix, "feature_surgery": config.feature_surgery}
    defaults = {"score": "sigmoid", "mix": "probabilities", "feature_surgery": False}
    return {k: v for k, v in options.items() if v != defaults[k]}


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict_probabilities(
    model, image: torch.Tensor, text_emb: torch.Tensor, with_background: bool, config: InferenceConfig
) -> torch.Tensor:
    """``[1, C, H, W]`` probabilities for one normalised image ``[1, 3, H, W]`` (C = N texts + background)."""
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image [1, 3, H, W], got {list(image.shape)}")
    height, width = image.shape[-2:]

    def score(crops: torch.Tensor) -> torch.Tensor:
        size = crops.shape[-2:]
        if config.pamr:
            size = (max(size[0] // config.pamr_stride, 1), max(size[1] // config.pamr_stride, 1))
        with _autocast(crops.device, config.precision):
            probs = model.masks(crops, text_emb, clip_w=config.clip_w, scale=config.scale, bias=config.bias, size=size,
                                **_score_options(config))
        probs = probs.float()
        if config.pamr:
            probs = pamr(crops, probs, config.pamr_iter, config.pamr_dilations)
            probs = F.interpolate(probs, size=crops.shape[-2:], mode="bilinear", align_corners=False)
        return probs

    if config.mode == "whole":
        probs = score(image)
    else:
        windows = window_grid(height, width, config.crop, config.stride)
        probs = image.new_zeros((1, len(text_emb), height, width), dtype=torch.float32)
        counts = image.new_zeros((1, 1, height, width), dtype=torch.float32)
        for start in range(0, len(windows), config.crop_batch):
            chunk = windows[start : start + config.crop_batch]
            crops = torch.cat([image[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])
            for (y1, y2, x1, x2), crop_probs in zip(chunk, score(crops)):
                probs[0, :, y1:y2, x1:x2] += crop_probs
                counts[0, :, y1:y2, x1:x2] += 1
        probs = probs / counts
    if with_background:
        probs = torch.cat([torch.full_like(probs[:, :1], config.bg_thresh), probs], dim=1)
    return probs
