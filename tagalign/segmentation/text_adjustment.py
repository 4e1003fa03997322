"""CASS's object-level text adjustment (training-free spec-2 §4, ``MICV-yonsei/CASS@228ecdd:cass_segmentor.py``): a
scoring step that moves one text query per cluster toward the window's own patches.

The queries are clustered once (Ward linkage on their cosine distances, clusters cut at ``threshold``). For each
window and each cluster, the query the whole image's CLS embedding ``g`` likes best is replaced by
``normalize((1 − α)·t + α·μ)``, ``μ`` the normalised mean of the window's two patches closest to ``t``. The window's
scores are then ``(1 − g_w)·cos(f, t̃) + g_w·(g·t)`` (the second term the same at every pixel). ``g`` is the unmodified
CLIP's image embedding of the whole resized image, or of the window itself (``crop_cls``: the authors' Cityscapes and
whole-image runs).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ObjectTextAdjustment", "query_clusters"]


def query_clusters(texts: torch.Tensor, threshold: float) -> torch.Tensor:
    """``[Q]`` cluster ids of the text queries ``[Q, D]``: Ward linkage on cosine distances (clipped to [0, 2], zero
    diagonal, as scikit-learn's ``cosine_distances``), cut at distance ``threshold`` (scipy's ``fcluster``)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    if texts.shape[0] < 2:
        return torch.zeros(texts.shape[0], dtype=torch.long)
    x = F.normalize(texts.detach().double().cpu(), dim=-1).numpy()
    distance = np.clip(1 - x @ x.T, 0, 2)
    np.fill_diagonal(distance, 0)
    distance = (distance + distance.T) / 2  # exactly symmetric for squareform
    clusters = fcluster(linkage(squareform(distance, checks=False), method="ward"), t=threshold,
                        criterion="distance") - 1
    return torch.as_tensor(clusters, dtype=torch.long)


class ObjectTextAdjustment:
    """The adjustment for one batch of windows: ``global_similarity`` ``[B or 1, Q]`` (``g·t`` of each query, ``g``
    normalised), ``clusters`` ``[Q]`` from :func:`query_clusters`, ``alpha`` (α) and ``global_weight`` (g_w)."""

    def __init__(self, global_similarity: torch.Tensor, clusters: torch.Tensor, alpha: float, global_weight: float):
        self.global_similarity, self.alpha, self.global_weight = global_similarity.float(), alpha, global_weight
        members = [torch.nonzero(clusters == c).flatten() for c in clusters.unique()]
        self.members = [m.to(global_similarity.device) for m in members]

    def cosines(self, features: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """Adjusted scores ``[B, Q, h, w]`` of dense ``features`` ``[B, D, h, w]`` against normalised ``texts``."""
        batch, _, h, w = features.shape
        f = F.normalize(features.float(), dim=1).flatten(2)  # [B, D, n]
        out = []
        for b in range(batch):
            g = self.global_similarity[b if self.global_similarity.shape[0] > 1 else 0]
            adjusted = texts.clone()
            for members in self.members:
                best = members[g[members].argmax()]
                closest = (texts[best] @ f[b]).topk(min(2, f.shape[-1])).indices
                mean = F.normalize(f[b][:, closest].mean(dim=1), dim=0)
                adjusted[best] = F.normalize((1 - self.alpha) * texts[best] + self.alpha * mean, dim=0)
            cos = adjusted @ f[b]
            out.append((1 - self.global_weight) * cos + self.global_weight * g[:, None])
        return torch.stack(out).reshape(batch, -1, h, w)
