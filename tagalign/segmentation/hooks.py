"""mmengine hooks used by the evaluation: writing predicted label maps (PNG) and class maps (``.npy``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from PIL import Image

from ..atomic import atomic_path

__all__ = ["SaveLogitsHook", "SavePredictionsHook"]


def _stem(sample) -> str:
    stem = Path(sample.img_path).name
    for suffix in (".jpg", ".png", ".JPEG", ".jpeg"):
        stem = stem.removesuffix(suffix)
    return stem


@HOOKS.register_module(force=True)
class SavePredictionsHook(Hook):
    """Save each ``pred_sem_seg`` as ``OUT/<image stem>.png`` (uint8 or uint16 class indices, atomic write).

    Indices are in the dataset's label space after ``reduce_zero_label``: the same space the metric scores.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for sample in outputs or []:
            labels = sample.pred_sem_seg.data[0].cpu().numpy()
            labels = labels.astype(np.uint8 if labels.max() < 256 else np.uint16)
            with atomic_path(self.out_dir / f"{_stem(sample)}.png") as tmp:
                Image.fromarray(labels).save(tmp)


@HOOKS.register_module(force=True)
class SaveLogitsHook(Hook):
    """Save each ``seg_logits`` (the per-class maps at the original size) as ``OUT/<image stem>.npy``, float16
    ``[classes, H, W]`` (the segmentor must keep them: ``keep_logits``)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for sample in outputs or []:
            with atomic_path(self.out_dir / f"{_stem(sample)}.npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, sample.seg_logits.data.cpu().numpy().astype(np.float16))
