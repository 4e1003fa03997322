"""Walking a vocabulary a chunk of classes at a time, so no step holds every class at full resolution.

Both protocols are linear per class up to their argmax (window upsampling, averaging, the synonym max, the resize
to the original image, PAMR's propagation), so a chunk's maps can be made, compared with the running best score of
each pixel and dropped. Chunks hold whole classes (a class's synonyms are never split) and as many queries as
``map_budget_mb`` allows at the image's size; the labels are those of the all-at-once computation (ties go to the
lower class id, as ``argmax`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .inference_config import InferenceConfig

__all__ = ["ClassChunk", "RunningArgmax", "bytes_per_query", "class_max", "plan_chunks", "resize_maps"]

_FLOAT = 4  # bytes


def resize_maps(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize (align_corners False) of one image's maps ``[1, q, h, w]``, each map as its own batch item.

    torch's bilinear kernel may vectorise across the channels of a small map, which makes a map's values depend on
    how many maps share the call; as batch items every map gets the same bits in any chunk."""
    resized = F.interpolate(maps.transpose(0, 1), size=tuple(size), mode="bilinear", align_corners=False)
    return resized.transpose(0, 1)


@dataclass(frozen=True)
class ClassChunk:
    """Classes ``classes`` (label ids) and the rows ``queries`` of the text embeddings that name them."""

    classes: slice
    queries: slice


def bytes_per_query(config: InferenceConfig, input_size: Sequence[int], output_size: Sequence[int]) -> int:
    """About how many bytes one query's full-resolution maps take while a chunk is scored: the window sum and its
    average at the input size, one window, and the maps at the original size (their logits, the running
    log-sum-exp's temporaries and PAMR's two buffers under the ``sclip`` protocol)."""
    height, width = input_size
    out = output_size[0] * output_size[1]
    window = min(config.crop, height) * min(config.crop, width) if config.mode == "slide" else height * width
    at_output = 2 if config.protocol == "tagalign" else 4 + (2 if config.pamr else 0)
    return _FLOAT * (2 * height * width + window + at_output * out)


def plan_chunks(query_class: Sequence[int], num_classes: int, max_queries: int) -> list[ClassChunk]:
    """Consecutive classes grouped so each chunk has at most ``max_queries`` queries (a class with more queries than
    that gets a chunk of its own; a class without queries, such as a constant background channel, joins the next).

    ``query_class`` gives each query's class and must be sorted, so a chunk's queries are one slice of rows.
    """
    query_class = [int(c) for c in query_class]
    if query_class != sorted(query_class):
        raise ValueError("queries must be listed class by class (query_class sorted)")
    counts = [0] * num_classes
    for owner in query_class:
        counts[owner] += 1
    chunks, first_class, first_query, size = [], 0, 0, 0
    for index, count in enumerate(counts):
        if size and size + count > max_queries:
            chunks.append(ClassChunk(slice(first_class, index), slice(first_query, first_query + size)))
            first_class, first_query, size = index, first_query + size, 0
        size += count
    chunks.append(ClassChunk(slice(first_class, num_classes), slice(first_query, first_query + size)))
    return chunks


def class_max(maps: torch.Tensor, owners: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[B, num_classes, H, W]``: per class, the max over its queries' maps ``[B, q, H, W]`` (``owners``: each
    query's class, 0-based within the chunk)."""
    if len(owners) == num_classes:  # one query per class (owners are sorted): nothing to reduce
        return maps
    out = maps.new_empty((maps.shape[0], num_classes, *maps.shape[-2:]))
    index = owners.to(maps.device).view(1, -1, 1, 1).expand_as(maps)
    return out.scatter_reduce(1, index, maps, reduce="amax", include_self=False)


class RunningArgmax:
    """The best score and its class per pixel over chunks seen in class order; a later class must beat the best
    strictly, so ties keep the lower class id (``argmax``'s rule)."""

    def __init__(self) -> None:
        self.best: torch.Tensor | None = None
        self.label: torch.Tensor | None = None

    def update(self, scores: torch.Tensor, first_class: int) -> None:
        """``scores`` ``[c, H, W]`` of classes ``first_class .. first_class + c - 1``."""
        value, index = scores.max(dim=0)
        index = index + first_class
        if self.best is None:
            self.best, self.label = value, index
            return
        better = value > self.best
        self.best = torch.where(better, value, self.best)
        self.label = torch.where(better, index, self.label)
