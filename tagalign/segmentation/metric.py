"""mmseg's IoUMetric, reporting the exact (unrounded) mIoU and keeping the per-class IoU for the JSON report."""

from __future__ import annotations

import numpy as np
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

__all__ = ["ZeroShotIoUMetric"]


@METRICS.register_module(force=True)
class ZeroShotIoUMetric(IoUMetric):
    """Dataset-level IoU per class (total intersection / total union), nan-mean over classes present.

    ``mIoU`` is in percent and not rounded; after each evaluation ``per_class_iou`` holds the IoU (%) of each class
    in ``dataset_meta["classes"]`` order (None where a class occurs in neither ground truth nor prediction); a list,
    because class names can repeat (ImageNet's two "crane"s).
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("iou_metrics", ["mIoU"])
        super().__init__(**kwargs)
        self.per_class_iou: list[float | None] = []

    def compute_metrics(self, results: list) -> dict[str, float]:
        intersect = sum(r[0] for r in results).double()
        union = sum(r[1] for r in results).double()
        iou = (intersect / union).numpy()  # nan where union == 0
        metrics = super().compute_metrics(results)
        metrics["mIoU"] = float(np.nanmean(iou) * 100)
        self.per_class_iou = [None if np.isnan(value) else float(value * 100) for value in iou]
        return metrics
