"""The training stream: labels joined by key, bad samples skipped and counted, disjoint splits, exact resume."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from img2dataset_layout import small_tensor
from torch.utils.data import DataLoader

from tagalign.data.shards import TagShardDataset, collate_tag_batch
from tagalign.data.synthetic import render_scene, write_img2dataset_shards
from tagalign.tags.labels import LabelStore, write_labels


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """48 shapes scenes in 6 shards; labels = hash of the caption so a mislabelled sample is detectable."""
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    scenes = [render_scene(rng, size=(48, 48)) for _ in range(48)]
    captions = [f"{s.caption} #{i}" for i, s in enumerate(scenes)]
    keys = write_img2dataset_shards(root / "shards", [(s.image, c) for s, c in zip(scenes, captions)], per_shard=8)
    labels = {k: [i % 7, 7 + i % 5] for i, k in enumerate(keys)}
    write_labels(root / "labels.sqlite", labels.items(), num_tags=12, vocab_hash="test")
    return root, keys, captions, labels


def _dataset(root, **kwargs):
    return TagShardDataset(root / "shards", root / "labels.sqlite", transform=small_tensor, **kwargs)


def _take(dataset, n):
    stream = iter(dataset)
    return [next(stream) for _ in range(n)]


def test_every_sample_keeps_its_own_label_and_caption(world):
    root, keys, captions, labels = world
    samples = _take(_dataset(root, world_size=1, rank=0), 48)
    assert sorted(s["key"] for s in samples) == sorted(keys)  # one epoch = every sample once
    for sample in samples:
        index = keys.index(sample["key"])
        assert sample["tag_ids"] == labels[sample["key"]] and sample["text"] == captions[index]


def test_corrupt_images_and_unlabelled_keys_are_skipped_and_counted(world, tmp_path):
    root, keys, _, labels = world
    shard = tmp_path / "bad.tar"
    with tarfile.open(root / "shards/00000.tar") as source, tarfile.open(shard, "w") as target:
        for member in source:
            data = source.extractfile(member).read()
            if member.name.startswith(keys[1]) and member.name.endswith(".jpg"):
                data = data[: len(data) // 3]  # truncated JPEG
            if member.name.startswith(keys[2]) and member.name.endswith(".jpg"):
                data = b"not an image at all"
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            target.addfile(info, io.BytesIO(data))
        extra = tarfile.TarInfo("99999999.jpg")  # a sample whose key has no label
        jpeg = io.BytesIO()
        from PIL import Image

        Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
        extra.size = len(jpeg.getvalue())
        target.addfile(extra, io.BytesIO(jpeg.getvalue()))
    dataset = TagShardDataset([shard], root / "labels.sqlite", transform=small_tensor, shuffle_buffer=0,
                              world_size=1, rank=0)
    samples = _take(dataset, 5)  # 8 in the shard - 2 corrupt = 6 good (+1 unlabelled)
    assert [s["key"] for s in samples] == [keys[0], *keys[3:7]]
    assert all(s["tag_ids"] == labels[s["key"]] for s in samples)  # nothing shifted onto a neighbour
    assert sum(s["skipped_corrupt"] for s in samples) == 2
    next_epoch = _take(dataset, 8)
    assert sum(s["skipped_unlabelled"] for s in samples + next_epoch) == 1
    batch = collate_tag_batch(samples)
    assert batch["images"].shape == (5, 3, 32, 32) and batch["skipped_corrupt"] == 2


def test_ranks_and_workers_get_disjoint_parts(world):
    root, keys, _, _ = world
    seen = []
    for rank in range(2):
        loader = DataLoader(_dataset(root, world_size=2, rank=rank), batch_size=4, num_workers=3,
                            collate_fn=collate_tag_batch)
        batches = iter(loader)
        seen.append([k for _ in range(4) for k in next(batches)["keys"]])  # 16 of this rank's 24 samples
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) <= set(keys)


def test_drop_empty(world, tmp_path):
    root, keys, _, labels = world
    write_labels(tmp_path / "labels.sqlite", [(k, [] if i % 2 else labels[k]) for i, k in enumerate(keys)], 12, "t")
    dataset = TagShardDataset(root / "shards", tmp_path / "labels.sqlite", transform=small_tensor, drop_empty=True,
                              world_size=1, rank=0)
    assert all(s["tag_ids"] for s in _take(dataset, 30))
    kept = TagShardDataset(root / "shards", tmp_path / "labels.sqlite", transform=small_tensor, world_size=1, rank=0)
    assert any(not s["tag_ids"] for s in _take(kept, 30))


@pytest.mark.parametrize("workers,skip", [(0, 5), (2, 5), (3, 7)])
def test_resume_continues_with_the_next_batch(world, workers, skip):
    """Batches after fast-forwarding equal the uninterrupted run's, across epochs and worker rotation."""
    root = world[0]

    def batches(skip_batches, count):
        dataset = _dataset(root, world_size=1, rank=0, shuffle_buffer=10)
        dataset.batch_size, dataset.skip_batches = 4, skip_batches
        loader = iter(DataLoader(dataset, batch_size=4, num_workers=workers, collate_fn=collate_tag_batch))
        return [next(loader) for _ in range(count)]

    full = batches(0, skip + 6)
    resumed = batches(skip, 6)
    for expected, got in zip(full[skip:], resumed):
        assert expected["keys"] == got["keys"]
        assert torch.equal(expected["images"], got["images"])


def test_shards_from_directory_glob_and_files(world):
    from tagalign.data.shards import list_shards

    root = world[0]
    by_dir = list_shards(root / "shards")
    assert len(by_dir) == 6 and by_dir == sorted(by_dir)
    assert list_shards(str(root / "shards" / "0000[0-2].tar")) == by_dir[:3]
    assert list_shards([str(by_dir[4]), str(by_dir[1]), str(by_dir[1])]) == [by_dir[1], by_dir[4]]
    with pytest.raises(FileNotFoundError, match="not found"):
        list_shards(str(root / "nope.tar"))


def test_label_store_round_trip(world):
    root, keys, _, labels = world
    store = LabelStore(root / "labels.sqlite")
    assert len(store) == 48 and store.get(keys[5]) == labels[keys[5]] and store.get("nope") is None
    assert json.loads(json.dumps(store.get(keys[0]))) == labels[keys[0]]


def test_cjk_captions_are_kept_by_default_or_skipped_and_counted(tmp_path):
    """The reference drops CJK captions (and then mislabels, bug B3); here it is an option, off by default."""
    rng = np.random.default_rng(4)
    captions = ["a red square", "一只猫 a cat", "a blue circle"]
    keys = write_img2dataset_shards(tmp_path / "shards", [(render_scene(rng, size=(32, 32)).image, c)
                                                          for c in captions], per_shard=8)
    write_labels(tmp_path / "labels.sqlite", [(k, [i]) for i, k in enumerate(keys)], num_tags=3, vocab_hash="t")

    def first_epoch(**kwargs):
        dataset = TagShardDataset(tmp_path / "shards", tmp_path / "labels.sqlite", transform=small_tensor,
                                  shuffle_buffer=0, world_size=1, rank=0, **kwargs)
        return _take(dataset, 2 if kwargs.get("skip_cjk") else 3)

    kept = first_epoch()
    assert [(s["key"], s["tag_ids"], s["text"]) for s in kept] == [(k, [i], c) for i, (k, c) in
                                                                   enumerate(zip(keys, captions))]
    skipped = first_epoch(skip_cjk=True)
    assert [(s["key"], s["tag_ids"]) for s in skipped] == [(keys[0], [0]), (keys[2], [2])]
    assert collate_tag_batch(skipped)["skipped_cjk"] == 1
