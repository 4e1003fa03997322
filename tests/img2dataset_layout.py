"""img2dataset-layout shards of random images for tests (the writer itself lives in tagalign.data.synthetic)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tagalign.data.synthetic import write_img2dataset_shards


def write_shards(root: Path, captions: Sequence[str], per_shard: int = 4, image_size: int = 32,
                 failed_every: int = 0, with_parquet: bool = True) -> list[str]:
    rng = np.random.default_rng(0)
    samples = [(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8), c) for c in captions]
    return write_img2dataset_shards(root, samples, per_shard, failed_every, with_parquet)


def small_tensor(image) -> torch.Tensor:
    """A training-sample transform for tests: the PIL image as a 32x32 float tensor ``[3, 32, 32]``."""
    return torch.from_numpy(np.array(image.resize((32, 32)))).permute(2, 0, 1).float()
