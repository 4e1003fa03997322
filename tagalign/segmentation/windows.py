"""One image's sliding windows scored on the patch grid, and their average at full resolution for some queries.

The encoder runs once per image, ``crop_batch`` windows per forward, and keeps only the patch-grid scores of every
query (``[windows, N, h, w]``: 4 windows x 920 queries x 28x28 is 11 MB). Full-resolution maps are made on request
for a slice of the queries (:meth:`WindowScores.average`), so a caller can walk the vocabulary a chunk at a time.
Both protocols share it: ``tagalign`` keeps per-window probabilities (optionally PAMR-refined at 1/``pamr_stride``
of the window), ``sclip`` per-window cosines of the zero-padded window with the padding cut off. LPOSS replaces the
window scores by their propagation over all windows' patches (on its second model's grid); LPOSS+ propagates each
averaged map over the image's pixels (:mod:`.label_propagation`). Trident replaces the windows by one image-wide map on
SAM's grid (:mod:`.trident`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.pamr import pamr
from .class_chunks import resize_maps
from .inference_config import InferenceConfig, autocast, window_grid
from .label_propagation import LabelPropagation
from .text_adjustment import ObjectTextAdjustment, query_clusters
from .trident import Trident

__all__ = ["WindowScores"]


def _pad_amounts(size: int, multiple: int) -> tuple[int, int]:
    if multiple <= 0 or size % multiple == 0:
        return 0, 0
    pad = multiple - size % multiple
    return pad // 2, pad - pad // 2


def _score_options(config: InferenceConfig) -> dict:
    """The scoring options that differ from the reference (models without them keep working at the defaults)."""
    options = {"score": config.score, "mix": config.mix, "feature_surgery": config.feature_surgery}
    defaults = {"score": "sigmoid", "mix": "probabilities", "feature_surgery": False}
    return {k: v for k, v in options.items() if v != defaults[k]}


class WindowScores:
    """The patch-grid scores of every window of one normalised image ``[1, 3, H, W]`` for all ``text_emb`` rows."""

    @torch.no_grad()
    def __init__(self, model, image: torch.Tensor, text_emb: torch.Tensor, config: InferenceConfig,
                 propagation: LabelPropagation | None = None, trident: Trident | None = None) -> None:
        if image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(f"expected one image [1, 3, H, W], got {list(image.shape)}")
        if (config.lposs or config.lposs_plus) and propagation is None:
            raise ValueError("LPOSS/LPOSS+ need a LabelPropagation (its second model and the pixel statistics); "
                             "tools/test.py builds one from --lposs/--lposs-plus")
        self.image, self.config, self.propagation = image, config, propagation
        self._pixel_graph = None
        self.height, self.width = image.shape[-2:]
        if config.trident:  # one image-wide map on SAM's grid, from all windows at once
            if trident is None:
                raise ValueError("Trident needs SAM's image encoder: pass trident=Trident(load_vfm('sam_vitb'))")
            self.boxes = [(0, self.height, 0, self.width)]
            self.grids = trident.scores(model, image, text_emb, config.crop, config.stride, config.clip_w).float()
            self.counts = image.new_ones((1, 1, self.height, self.width), dtype=torch.float32)
            return
        if config.mode == "whole":
            self.boxes = [(0, self.height, 0, self.width)]
        else:
            self.boxes = window_grid(self.height, self.width, config.crop, config.stride)
        self.clusters = self.global_similarity = None
        if config.cass_adjust:  # clusters of the queries, and the whole image's CLS against them (CASS)
            self.clusters = query_clusters(text_emb, config.cass_cluster_threshold)
            if not config.cass_crop_cls:
                self.global_similarity = self._global_similarity(model, image, text_emb)
        grids = []
        for start in range(0, len(self.boxes), config.crop_batch):
            crops = torch.cat([self._crop(box) for box in self.boxes[start : start + config.crop_batch]])
            grids.append(self._score(model, crops, text_emb))
        self.grids = torch.cat(grids)  # [windows, N, h, w]
        if config.lposs:
            if config.protocol == "sclip" and any(any(self._padding(box)) for box in self.boxes):
                raise ValueError(f"LPOSS propagates the scores of whole windows: pad_to={config.pad_to} pads these "
                                 f"{config.crop}-pixel windows; use --pad-to 0 (LPOSS's own windows are unpadded)")
            self.grids = propagation.windows(image, self.boxes, self.grids, config.crop_batch).contiguous()
        counts = image.new_zeros((1, 1, self.height, self.width), dtype=torch.float32)
        for y1, y2, x1, x2 in self.boxes:
            counts[:, :, y1:y2, x1:x2] += 1
        self.counts = counts

    @property
    def num_queries(self) -> int:
        return self.grids.shape[1]

    def _crop(self, box: tuple[int, int, int, int]) -> torch.Tensor:
        y1, y2, x1, x2 = box
        return self.image[:, :, y1:y2, x1:x2]

    @staticmethod
    def _global_similarity(model, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """``[B, Q]``: the unmodified CLIP's image embedding of ``images`` against the normalised queries."""
        embedding = F.normalize(model.tower.encode(images).float(), dim=-1)
        return embedding @ F.normalize(text_emb.to(embedding), dim=-1).t()

    def _adjustment(self, model, crops: torch.Tensor, text_emb: torch.Tensor) -> ObjectTextAdjustment | None:
        config = self.config
        if not config.cass_adjust:
            return None
        similarity = self.global_similarity
        if similarity is None:
            similarity = self._global_similarity(model, crops, text_emb)
        return ObjectTextAdjustment(similarity, self.clusters, config.cass_alpha, config.cass_global_weight)

    def _score(self, model, crops: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        config = self.config
        adjustment = self._adjustment(model, crops, text_emb)
        extra = {"adjustment": adjustment} if adjustment is not None else {}
        with autocast(crops.device, config.precision):
            if config.protocol == "sclip":
                top, bottom = _pad_amounts(crops.shape[-2], config.pad_to)
                left, right = _pad_amounts(crops.shape[-1], config.pad_to)
                grid = model.similarities(F.pad(crops, (left, right, top, bottom)), text_emb, clip_w=config.clip_w,
                                          feature_surgery=config.feature_surgery, **extra)
            else:
                grid = model.grid_masks(crops, text_emb, clip_w=config.clip_w, scale=config.scale,
                                        bias=config.bias, **_score_options(config), **extra)
        # contiguous: the einsum leaves channels last, and maps must not depend on their neighbours (resize_maps)
        return grid.float().contiguous()

    def _padding(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        crop_h, crop_w = box[1] - box[0], box[3] - box[2]
        return (*_pad_amounts(crop_h, self.config.pad_to), *_pad_amounts(crop_w, self.config.pad_to))

    def window_map(self, index: int, queries: slice) -> torch.Tensor:
        """``[1, q, h, w]``: window ``index``'s scores for ``queries`` at the window's own resolution."""
        config, grid = self.config, self.grids[index : index + 1, queries]
        crop_h, crop_w = self._crop(self.boxes[index]).shape[-2:]
        if config.protocol == "sclip":
            top, bottom = (0, 0) if config.trident else _pad_amounts(crop_h, config.pad_to)
            left, right = (0, 0) if config.trident else _pad_amounts(crop_w, config.pad_to)
            up = resize_maps(grid, (crop_h + top + bottom, crop_w + left + right))
            return up[:, :, top : top + crop_h, left : left + crop_w]
        if not config.pamr:
            return resize_maps(grid, (crop_h, crop_w))
        size = (max(crop_h // config.pamr_stride, 1), max(crop_w // config.pamr_stride, 1))
        refined = pamr(self._crop(self.boxes[index]), resize_maps(grid, size).contiguous(), config.pamr_iter,
                       config.pamr_dilations)
        return resize_maps(refined, (crop_h, crop_w))

    def average(self, queries: slice = slice(None)) -> torch.Tensor:
        """``[1, q, H, W]``: the scores of ``queries`` averaged over the windows covering each pixel."""
        count = len(range(*queries.indices(self.num_queries)))
        total = self.image.new_zeros((1, count, self.height, self.width), dtype=torch.float32)
        for index, (y1, y2, x1, x2) in enumerate(self.boxes):
            total[:, :, y1:y2, x1:x2] += self.window_map(index, queries)
        total /= self.counts
        if self.config.lposs_plus:
            if self._pixel_graph is None:  # one graph per image, reused by every chunk of queries
                self._pixel_graph = self.propagation.pixel_graph(self.image)
            total = self._pixel_graph.propagate(total)
        return total
