"""Evaluation settings shared by both protocols, and the sliding-window grid.

The defaults are the reference evaluation's (reference spec §6.1-6.2, configs/eval.yml); the SCLIP family's fields
follow the training-free spec §3/§10.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .label_propagation import LpossSettings

__all__ = ["InferenceConfig", "autocast", "check_patch_grid", "window_grid"]


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
    # memory for full-resolution class maps: the vocabulary is walked in chunks of classes that fit (labels unchanged)
    map_budget_mb: float = 256.0
    # LPOSS / LPOSS+ label propagation (training-free spec-2 §6; label_propagation.py), for any encoder
    lposs: bool = False  # propagate the window scores over all windows' patches (needs a second model, DINO B/16)
    lposs_plus: bool = False  # then propagate the averaged maps over the image's pixels (Lab colour graph)
    lposs_alpha: float = 0.95
    lposs_k: int = 400
    lposs_sigma: float = 0.01
    lposs_gamma: float = 3.0
    lposs_tau: float = 0.01
    lposs_radius: int = 13

    # CASS's object-level text adjustment (text_adjustment.py): α, g_w, the cluster cut (defaults: its Context59
    # config), and whose CLS is "global"
    cass_adjust: bool = False
    cass_alpha: float = 0.04
    cass_global_weight: float = 0.25
    cass_cluster_threshold: float = 0.09
    cass_crop_cls: bool = False  # the window's own CLS embedding instead of the whole image's

    # Trident (trident.py): windows spliced into one map, aggregated by SAM's last attention over the whole image
    trident: bool = False
    trident_cos_fac: float = 1.2
    trident_refine_neg_cos: bool = True

    def lposs_settings(self) -> LpossSettings:
        return LpossSettings(alpha=self.lposs_alpha, k=self.lposs_k, sigma=self.lposs_sigma, gamma=self.lposs_gamma,
                             tau=self.lposs_tau, radius=self.lposs_radius)

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
        if not self.map_budget_mb > 0:
            raise ValueError(f"map_budget_mb must be positive, got {self.map_budget_mb}")
        if self.trident and (self.protocol != "sclip" or self.lposs or self.mode != "slide"):
            raise ValueError("Trident scores the whole image from its sliding windows under the sclip protocol; it "
                             "does not combine with --lposs or --mode whole")
        if not 0 < self.lposs_alpha < 1 or self.lposs_k < 1 or self.lposs_radius < 3 or self.lposs_tau <= 0:
            raise ValueError(f"LPOSS needs 0 < lposs_alpha < 1, lposs_k >= 1, lposs_radius >= 3 and lposs_tau > 0; "
                             f"got {self.lposs_alpha}, {self.lposs_k}, {self.lposs_radius}, {self.lposs_tau}")


def check_patch_grid(config: InferenceConfig, patch: int) -> None:
    """Sliding windows must tile the tower's patch grid (patch 14 or 16): a window that is not a multiple of the patch
    loses its last pixels to the patch embedding and its maps are stretched over them. The window must be a multiple
    of the patch, or ``pad_to`` must pad it to one (ClearCLIP pads to its patch size; on a patch-14 tower its preset
    needs ``--pad-to 14``). ProxyCLIP's ``pad_to=56`` serves its second model's patches (8, 14); its 336 windows are
    whole CLIP patches.

    The SCLIP family's 224/112 and ClearCLIP's 448/224 windows are multiples of 112 = lcm(14, 16), so they hold for
    both patch sizes; ProxyCLIP runs ViT-L/14 at 336/112."""
    if config.mode != "slide" or config.crop % patch == 0:
        return
    if config.pad_to and config.pad_to % patch == 0:
        return
    low = config.crop - config.crop % patch
    raise ValueError(f"inference crop={config.crop} is not a multiple of this tower's patch size {patch}: its last "
                     f"{config.crop % patch} pixels would be dropped; use --crop {low or patch} or {low + patch}, or "
                     f"--pad-to {patch}")


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


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
