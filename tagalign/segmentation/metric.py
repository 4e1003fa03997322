"""mmseg's IoUMetric, reporting the exact (unrounded) mIoU and keeping the per-class IoU for the JSON report."""

from __future__ import annotations

import numpy as np
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

__all__ = ["ZeroShotIoUMetric"]


@METRICS.register_module(force=True)
class ZeroShotIoUMetric(IoUMetric):
    """Dataset-level IoU per class (total intersection / total union), nan-mean over classes present.

    ``mIoU`` is in percent and not rounded; ``per_class_iou`` holds ``{class: IoU %}`` (None where a class never
    occurs in ground truth or prediction) after each evaluation.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("iou_metrics", ["mIoU"])
        super().__init__(**kwargs)
        self.per_class_iou: dict[str, float | None] = {}

    def compute_metrics(self, results: list) -> dict[str, float]:
        intersect = sum(r[0] for r in results).double()
        union = sum(r[1] for r in results).double()
        iou = (intersect / union).numpy()  # nan where union == 0
        metrics = super().compute_metrics(results)
        metrics["mIoU"] = float(np.nanmean(iou) * 100)
        self.per_class_iou = {
            name: (None if np.isnan(value) else float(value * 100))
            for name, value in zip(self.dataset_meta["classes"], iou)
        }
        return metrics
