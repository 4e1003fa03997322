"""The training data builder referenced by configs (``dataset=dict(type="TagAlignTrainData", ...)``)."""

from __future__ import annotations

from collections.abc import Sequence

from mmengine.registry import DATASETS, FUNCTIONS

from ..data.shards import TagShardDataset, collate_tag_batch
from ..data.transforms import train_transform

__all__ = ["TagAlignTrainData", "collate_tag_batch"]

FUNCTIONS.register_module(name="collate_tag_batch", module=collate_tag_batch, force=True)


@DATASETS.register_module(name="TagAlignTrainData", force=True)
def TagAlignTrainData(  # noqa: N802  (a registry entry, named like the classes beside it)
    shards: str | Sequence[str],
    labels: str,
    clip: str = "ViT-B-16",
    image_size: int = 224,
    deit_aug: bool = True,
    label_key: str = "key",
    drop_empty: bool = False,
    shuffle_buffer: int = 2000,
    seed: int = 0,
    norm: str = "imagenet",
    skip_cjk: bool = False,
) -> TagShardDataset:
    """Shards + labels with the reference augmentation and the CLIP tokenizer of ``clip``.

    ``norm``: pixel statistics, ``imagenet`` (reference) or ``clip``. ``skip_cjk``: drop captions with CJK
    characters, as the reference's loader does (it keeps them off by default; see TagShardDataset).
    """
    import open_clip

    from ..models.clip import _register_model_config

    tokenizer = open_clip.get_tokenizer(_register_model_config(clip))
    return TagShardDataset(shards, labels, transform=train_transform(image_size, deit_aug, norm=norm),
                           tokenizer=tokenizer, label_key=label_key, drop_empty=drop_empty,
                           shuffle_buffer=shuffle_buffer, seed=seed, skip_cjk=skip_cjk)
