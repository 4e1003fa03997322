"""Evaluation-time image loading and preprocessing (ImageNet mean/std, as the reference uses everywhere)."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image(image: str | os.PathLike | Image.Image | np.ndarray) -> np.ndarray:
    """An RGB uint8 ``[H, W, 3]`` array from a path, PIL image or array; unreadable files name the path."""
    if isinstance(image, np.ndarray):
        array = image if image.ndim == 3 else np.stack([image] * 3, axis=-1)
        return np.ascontiguousarray(array[..., :3]).astype(np.uint8)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    try:
        with Image.open(image) as pil:
            return np.asarray(pil.convert("RGB"))
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"cannot read image '{image}': {err}") from err


def resize_short_side(image: np.ndarray, short: int = 448, long_max: int = 2048) -> np.ndarray:
    """Scale so the short side is ``short`` unless the long side would exceed ``long_max``: mmseg's
    ``Resize(scale=(long_max, short), keep_ratio=True)`` exactly (same rounding, cv2 bilinear via mmcv)."""
    import mmcv

    height, width = image.shape[:2]
    factor = min(long_max / max(height, width), short / min(height, width))
    size = (int(width * factor + 0.5), int(height * factor + 0.5))
    return mmcv.imresize(image, size, interpolation="bilinear")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``[1, 3, H, W]`` float tensor, ImageNet-normalised as mmseg's SegDataPreProcessor does it."""
    tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float()
    mean = torch.tensor([255 * m for m in IMAGENET_MEAN]).view(3, 1, 1)
    std = torch.tensor([255 * s for s in IMAGENET_STD]).view(3, 1, 1)
    return ((tensor - mean) / std).unsqueeze(0)


def resize_probs(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[B, C, h, w]`` maps to ``size`` (align_corners=False)."""
    return F.interpolate(probs, size=size, mode="bilinear", align_corners=False)


def train_transform(size: int = 224, deit_aug: bool = True, scale: tuple[float, float] = (0.08, 1.0)):
    """The reference's training augmentation: timm's DeiT recipe (RandomResizedCrop 0.08-1, flip,
    RandAugment rand-m9-mstd0.5-inc1, RandomErasing 0.25 pixel mode), ImageNet mean/std. timm skips colour jitter
    when auto-augment is on, as in the reference. ``deit_aug=False``: resize + centre crop only."""
    from timm.data import create_transform

    if not deit_aug:
        return create_transform(size, is_training=False, interpolation="bicubic", mean=IMAGENET_MEAN,
                                std=IMAGENET_STD, crop_pct=1.0)
    return create_transform(
        size, is_training=True, scale=scale, ratio=(3 / 4, 4 / 3), hflip=0.5, color_jitter=0.4,
        auto_augment="rand-m9-mstd0.5-inc1", interpolation="bilinear", re_prob=0.25, re_mode="pixel", re_count=1,
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
    )
