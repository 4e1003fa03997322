"""Contrastive pretraining of a small CLIP on image-caption pairs, with open_clip's own model and loss.

The quickstart uses it to give its tiny CLIP real image-text alignment before TagAlign trains on top, as TagAlign
does on OpenAI's CLIP. The result is saved as an open_clip hub-style folder (``open_clip_config.json`` +
``open_clip_model.safetensors``), which ``load_clip(name, pretrained=folder)`` and
``open_clip.create_model("local-dir:" + folder)`` both load.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from torch import nn

from .clip import HUB_CONFIG_NAME

logger = logging.getLogger(__name__)

__all__ = ["BatchSampler", "PretrainConfig", "pretrain_clip", "save_open_clip_folder", "to_clip_input",
           "zero_shot_accuracy"]

#: open_clip's (OpenAI's) image normalisation.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PretrainConfig:
    """Optimisation settings: AdamW, linear warm-up then cosine decay, open_clip's learnable logit scale."""

    steps: int = 400
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 10
    seed: int = 0
    log_every: int = 50


def to_clip_input(images: Sequence[np.ndarray] | np.ndarray, size: int) -> torch.Tensor:
    """N ``[H, W, 3]`` uint8 RGB images -> ``[N, 3, size, size]`` uint8, resized with antialiased bicubic."""
    from PIL import Image

    resized = [np.asarray(Image.fromarray(np.asarray(image)).resize((size, size), Image.BICUBIC)) for image in images]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).contiguous()


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels.float() / 255 - mean) / std


#: ``draw(rng, n) -> (pixels [n, 3, S, S] uint8 at the model's image size, n captions)``.
BatchSampler = Callable[[np.random.Generator, int], tuple[torch.Tensor, list[str]]]


def pretrain_clip(model_cfg: dict, draw: BatchSampler, config: PretrainConfig = PretrainConfig()) -> nn.Module:
    """Train both towers of ``open_clip.model.CLIP(**model_cfg)`` (``CustomTextCLIP`` for configs with
    ``custom_text``, e.g. timm vision towers) from scratch with ``open_clip.loss.ClipLoss``.

    Every step asks ``draw`` for a batch of image-caption pairs, with a generator seeded by ``config.seed``.
    Returns the model in eval mode, frozen.
    """
    torch.manual_seed(config.seed)
    generator = np.random.default_rng(config.seed)
    model_class = open_clip.model.CustomTextCLIP if model_cfg.get("custom_text") else open_clip.model.CLIP
    model = model_class(**{k: v for k, v in model_cfg.items() if k != "custom_text"}, output_dict=True)
    tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=model_cfg["text_cfg"].get("context_length", 77))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = open_clip.loss.ClipLoss()
    model.train()
    start = time.time()
    for step in range(config.steps):
        lr = config.lr * min(1.0, (step + 1) / config.warmup) * 0.5 * (1 + math.cos(math.pi * step / config.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        pixels, captions = draw(generator, config.batch_size)
        out = model(_normalise(pixels), tokenizer(captions))
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            logger.info("tiny CLIP pretraining: step %d/%d, contrastive loss %.3f, %.0f s", step + 1, config.steps,
                        loss.item(), time.time() - start)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def zero_shot_accuracy(model: nn.Module, pixels: torch.Tensor, labels: Sequence[int], prompts: Sequence[str]) -> float:
    """Top-1 accuracy of classifying each image as the prompt with the highest cosine similarity."""
    tokenizer = open_clip.get_tokenizer("ViT-B-16", context_length=model.context_length)
    text = model.encode_text(tokenizer(list(prompts)), normalize=True)
    image = torch.cat([model.encode_image(_normalise(chunk), normalize=True) for chunk in pixels.split(64)])
    predicted = (image @ text.T).argmax(1)
    return float((predicted == torch.as_tensor(labels)).float().mean())


def save_open_clip_folder(model: nn.Module, model_cfg: dict, folder: str | os.PathLike) -> Path:
    """Write ``folder/open_clip_config.json`` (open_clip's hub layout) and ``open_clip_model.safetensors``.

    Written into a sibling temporary folder and renamed, so a folder that exists is complete."""
    from safetensors.torch import save_file

    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    vision = model_cfg["vision_cfg"]
    hub_config = {"model_cfg": model_cfg,
                  "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD),
                                     "interpolation": "bicubic", "resize_mode": "shortest",
                                     "size": vision["image_size"]}}
    (partial / HUB_CONFIG_NAME).write_text(json.dumps(hub_config, indent=2))
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, partial / "open_clip_model.safetensors")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder
