"""A stand-in segmentation model that reads the ground truth back from the image, and the protocol written out.

The generated benchmark images paint each raw label in its own palette colour (tests/seg_layouts.py). The oracle
undoes ImageNet normalisation with the reference constants, maps each pixel's colour to the dataset class it
encodes, averages that per 16x16 patch (the ViT grid of a crop) and scores each prompt 0.1 + 0.8 * (fraction of the
patch in the prompt's class), upsampled bilinearly to the crop, as TagAlign's masks() does. Its text tower knows
only the exact prompts "a photo of a {class name}." of the dataset's classes, in the dataset's order.

``expected_prediction`` is an independent statement of reference spec §6 (load, ImageNet-S downsampling, resize,
normalise, slide windows, background channel, resize back, argmax, nearest to the ground truth); ``miou`` is the
dataset-level IoU. Any step the code under test does differently changes the mIoU the test compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]) * 255
TEMPLATE = "a photo of a {}."
PATCH = 16
TOLERANCE = 8  # JPEG noise in flat regions stays below this; CLIP's statistics shift the levels by 12 or more


class OracleText(nn.Module):
    """Text tower: one-hot over the dataset's classes for the exact reference prompt of a class, else zeros."""

    def __init__(self, class_names: Sequence[str]):
        super().__init__()
        self.tokenizer = open_clip.get_tokenizer("ViT-B-16")
        self.context_length = 77
        self.num_classes = len(class_names)
        self.lookup: dict[tuple[int, ...], list[int]] = {}
        for index, name in enumerate(class_names):
            tokens = tuple(self.tokenizer([TEMPLATE.format(name)])[0].tolist())
            self.lookup.setdefault(tokens, []).append(index)
        self.register_buffer("names_code", torch.tensor([hash(tuple(class_names)) % 2**31]))
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(tokens), self.num_classes)
        for row, ids in enumerate(tokens.tolist()):
            out[row, self.lookup.get(tuple(ids), [])] = 1.0
        return out


class OracleModel(nn.Module):
    """``masks()`` from the colours of the crop; ``colour_to_class`` maps an RGB triple to a class index or None."""

    def __init__(self, class_names: Sequence[str], colour_to_class: dict[tuple[int, int, int], int | None]):
        super().__init__()
        self.clip = OracleText(class_names)
        self.colours = torch.tensor(list(colour_to_class), dtype=torch.float32)  # [P, 3]
        self.classes = [colour_to_class[c] for c in colour_to_class]

    def pixel_classes(self, crops: torch.Tensor) -> torch.Tensor:
        """``[B, H, W]`` class index per pixel (-1 where no palette colour is within the tolerance)."""
        rgb = crops.float() * IMAGENET_STD.view(1, 3, 1, 1) + IMAGENET_MEAN.view(1, 3, 1, 1)
        distance = (rgb[:, None] - self.colours.view(1, -1, 3, 1, 1)).abs().amax(dim=2)  # [B, P, H, W]
        best, which = distance.min(dim=1)
        lookup = torch.tensor([-1 if c is None else c for c in self.classes])
        return torch.where(best <= TOLERANCE, lookup[which], torch.full_like(which, -1))

    @torch.no_grad()
    def masks(self, images, text_emb, clip_w=0.3, scale=10.0, bias=-2.5, size=None):
        probs = self.grid_masks(images, text_emb)
        return F.interpolate(probs, size=size or images.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def grid_masks(self, images, text_emb, clip_w=0.3, scale=10.0, bias=-2.5):
        labels = self.pixel_classes(images)
        h, w = images.shape[-2] // PATCH, images.shape[-1] // PATCH
        probs = torch.full((images.shape[0], len(text_emb), h, w), 0.1)
        for value in labels.unique().tolist():
            if value < 0:
                continue
            fraction = F.avg_pool2d((labels == value).float()[:, None], PATCH)[:, :, :h, :w]  # [B, 1, h, w]
            probs += 0.8 * fraction * text_emb[:, value].view(1, -1, 1, 1)
        return probs


def windows(height: int, width: int, crop: int, stride: int):
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    for row in range(rows):
        for col in range(cols):
            y2, x2 = min(row * stride + crop, height), min(col * stride + crop, width)
            yield max(y2 - crop, 0), y2, max(x2 - crop, 0), x2


def expected_prediction(image_path: Path, gt_shape: tuple[int, int], model: OracleModel, text_emb: torch.Tensor,
                        with_background: bool, short: int, long: int, imagenet_s: bool) -> np.ndarray:
    """Spec §6.1-6.3 for one image, written out with cv2/torch primitives."""
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)  # BGR, as mmcv loads it
    height, width = image.shape[:2]
    if imagenet_s and height * width > 1000 * 1000:  # downsample so the long side is 1000
        size = (int(1000 * width / height), 1000) if height > width else (1000, int(1000 * height / width))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    original = image.shape[:2]
    factor = min(long / max(original), short / min(original))
    size = (int(original[1] * factor + 0.5), int(original[0] * factor + 0.5))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1).float()
    x = ((x - IMAGENET_MEAN.view(3, 1, 1)) / IMAGENET_STD.view(3, 1, 1))[None]
    height, width = x.shape[-2:]
    total = torch.zeros(1, len(text_emb), height, width)
    count = torch.zeros(1, 1, height, width)
    for y1, y2, x1, x2 in windows(height, width, 448, 224):
        total[:, :, y1:y2, x1:x2] += model.masks(x[:, :, y1:y2, x1:x2], text_emb, size=(y2 - y1, x2 - x1))
        count[:, :, y1:y2, x1:x2] += 1
    probs = total / count
    if with_background:
        probs = torch.cat([torch.full_like(probs[:, :1], 0.4), probs], dim=1)
    probs = F.interpolate(probs, size=original, mode="bilinear", align_corners=False)
    label = probs.argmax(dim=1, keepdim=True).float()
    if tuple(original) != tuple(gt_shape):
        label = F.interpolate(label, size=gt_shape, mode="nearest")
    return label[0, 0].long().numpy()


def miou(pairs: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int, ignore: int) -> float:
    """Dataset-level IoU per class (total intersection / total union), nan-mean over classes with a union, in %."""
    intersect, union = np.zeros(num_classes), np.zeros(num_classes)
    for pred, gt in pairs:
        valid = gt != ignore
        for c in range(num_classes):
            p, g = (pred == c) & valid, (gt == c) & valid
            intersect[c] += (p & g).sum()
            union[c] += (p | g).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(intersect / union) * 100)


def read_gt(path: Path, rgb: bool, reduce_zero: bool) -> np.ndarray:
    """Ground truth as the reference reads it: palette/grey PNG indices, or ImageNet-S's G * 256 + R."""
    from PIL import Image

    array = np.array(Image.open(path)).astype(np.int64)
    if rgb:
        return array[..., 1] * 256 + array[..., 0]
    if reduce_zero:
        array = np.where(array == 0, 255, array - 1)
        array[array == 254] = 255
    return array

