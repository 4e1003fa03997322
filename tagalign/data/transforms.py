"""Evaluation-time image loading and preprocessing (ImageNet mean/std, as the reference uses everywhere)."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .decode import open_rgb, to_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Pixel normalisation (mean, std) on a 0-1 scale: the reference uses ImageNet's in training and evaluation
#: (spec §7.11); "clip" is what open_clip's own preprocessing uses.
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}


def normalization(name: str | tuple) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of a named set, or a ``(mean, std)`` pair given as it is (e.g. a CLIP's own statistics)."""
    if isinstance(name, tuple | list) and len(name) == 2:
        return tuple(name[0]), tuple(name[1])
    if name not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {sorted(NORMALIZATIONS)} or model (the CLIP's own, where a "
                         f"model is at hand), got '{name}'")
    return NORMALIZATIONS[name]


def load_image(image: str | os.PathLike | Image.Image | np.ndarray) -> np.ndarray:
    """An RGB uint8 ``[H, W, 3]`` array from a path, PIL image or array, by :mod:`tagalign.data.decode`'s rules (16-bit
    grey scaled, transparency composited, EXIF orientation applied); unreadable files name the path."""
    if isinstance(image, np.ndarray):
        array = image if image.ndim == 3 else np.stack([image] * 3, axis=-1)
        return np.ascontiguousarray(array[..., :3]).astype(np.uint8)
    if isinstance(image, Image.Image):
        return to_rgb(image)
    return open_rgb(image)


def resize_short_side(image: np.ndarray, short: int = 448, long_max: int = 2048) -> np.ndarray:
    """Scale so the short side is ``short`` unless the long side would exceed ``long_max``: mmseg's
    ``Resize(scale=(long_max, short), keep_ratio=True)`` exactly (same rounding, cv2 bilinear via mmcv)."""
    import mmcv

    height, width = image.shape[:2]
    factor = min(long_max / max(height, width), short / min(height, width))
    size = (int(width * factor + 0.5), int(height * factor + 0.5))
    return mmcv.imresize(image, size, interpolation="bilinear")


def to_tensor(image: np.ndarray, norm: str = "imagenet") -> torch.Tensor:
    """``[1, 3, H, W]`` float tensor, normalised (ImageNet's statistics by default) as mmseg's SegDataPreProcessor
    does it."""
    means, stds = normalization(norm)
    tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float()
    mean = torch.tensor([255 * m for m in means]).view(3, 1, 1)
    std = torch.tensor([255 * s for s in stds]).view(3, 1, 1)
    return ((tensor - mean) / std).unsqueeze(0)


def resize_probs(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[B, C, h, w]`` maps to ``size`` (align_corners=False)."""
    return F.interpolate(probs, size=size, mode="bilinear", align_corners=False)


def train_transform(size: int = 224, deit_aug: bool = True, scale: tuple[float, float] = (0.08, 1.0),
                    norm: str = "imagenet"):
    """The reference's training augmentation: timm's DeiT recipe (RandomResizedCrop 0.08-1, flip,
    RandAugment rand-m9-mstd0.5-inc1, RandomErasing 0.25 pixel mode), ImageNet mean/std. timm skips colour jitter
    when auto-augment is on, as in the reference. ``deit_aug=False``: resize + centre crop only."""
    from timm.data import create_transform

    mean, std = normalization(norm)
    if not deit_aug:
        return create_transform(size, is_training=False, interpolation="bicubic", mean=mean, std=std, crop_pct=1.0)
    return create_transform(
        size, is_training=True, scale=scale, ratio=(3 / 4, 4 / 3), hflip=0.5, color_jitter=0.4,
        auto_augment="rand-m9-mstd0.5-inc1", interpolation="bilinear", re_prob=0.25, re_mode="pixel", re_count=1,
        mean=mean, std=std,
    )
