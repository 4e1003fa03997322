"""Tagging metrics as RAM's code computes them (tagging spec §4), on fp32 scores.

- AP of class c: rank images by score (descending), ``AP_c = sum over positive ranks r of TP(r)/r``, divided by
  ``P_c + 1e-8`` (non-interpolated). A class without positives has AP 0 and stays in the mean (RAM's mAP).
- Ties: RAM's numpy ``argsort()[::-1]`` makes tied images' order depend on sort internals. Here ties go to the
  image that comes first in the annotation file, always.
- Precision/recall at a threshold: tag c predicted iff ``score >= threshold_c``, compared in float64 (the fp32
  score widened exactly, the threshold never rounded to fp32), as RAM's code compares;
  ``P_c = TP / (TP + FP + 1e-9)``, ``R_c = TP / (TP + FN + 1e-9)``; CP and CR are their means over classes and
  ``F1 = 2 CP CR / (CP + CR)`` (RAM's code prints CP and CR only; the paper's F1 fits this form).
Every mean is reported twice: over all classes (RAM's convention) and over the classes with at least one positive.
"""

from __future__ import annotations

import numpy as np

__all__ = ["average_precisions", "tagging_metrics"]


def _ranking(scores: np.ndarray) -> np.ndarray:
    """Per column, image indices by descending score; ties by ascending image index."""
    index = np.arange(scores.shape[0])
    return np.stack([np.lexsort((index, -scores[:, c])) for c in range(scores.shape[1])], axis=1)


def average_precisions(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``[T]`` AP per class (0..1) from ``scores`` and 0/1 ``targets``, both ``[N, T]``."""
    scores = np.asarray(scores, dtype=np.float32)
    targets = np.asarray(targets, dtype=bool)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores and targets must both be [images, tags]; got {scores.shape} and {targets.shape}")
    hits = np.take_along_axis(targets, _ranking(scores), axis=0).astype(np.float64)
    ranks = np.arange(1, scores.shape[0] + 1, dtype=np.float64)[:, None]
    precision_at_hits = np.cumsum(hits, axis=0) / ranks * hits
    return precision_at_hits.sum(axis=0) / (hits.sum(axis=0) + 1e-8)


def _mean(values: np.ndarray, keep: np.ndarray) -> float:
    return float(values[keep].mean()) if keep.any() else 0.0


def tagging_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray) -> dict:
    """mAP, CP, CR and F1 (percent) over all classes and over classes with positives, plus per-class AP."""
    targets = np.asarray(targets, dtype=bool)
    scores = np.asarray(scores, dtype=np.float32)
    ap = average_precisions(scores, targets)
    # RAM compares each fp32 score, widened exactly, with a float64 threshold: a score on the float32-rounded
    # threshold must not count as reaching it
    predicted = scores.astype(np.float64) >= np.asarray(threshold, dtype=np.float64)
    tp = (predicted & targets).sum(axis=0)
    precision = tp / (predicted.sum(axis=0) + 1e-9)
    recall = tp / (targets.sum(axis=0) + 1e-9)
    everything = np.ones(len(ap), dtype=bool)
    positive = targets.any(axis=0)
    result: dict = {}
    for suffix, keep in (("", everything), ("_classes_with_positives", positive)):
        cp, cr = _mean(precision, keep), _mean(recall, keep)
        result.update({f"mAP{suffix}": 100 * _mean(ap, keep), f"CP{suffix}": 100 * cp, f"CR{suffix}": 100 * cr,
                       f"F1{suffix}": 100 * (2 * cp * cr / (cp + cr) if cp + cr > 0 else 0.0)})
    result.update({"images": int(targets.shape[0]), "images_without_tags": int((~targets.any(axis=1)).sum()),
                   "classes": int(targets.shape[1]), "classes_with_positives": int(positive.sum()),
                   "AP": [100 * float(v) for v in ap]})
    return result
