"""Damaged inputs and interrupted runs, each in its real format: a clear error naming the file, or skip-and-count;
never a hang, a silent misalignment or lost work (issue: bad input and interrupted runs)."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from img2dataset_layout import small_tensor
from killed_writer import kill_mid_write
from PIL import Image
from plumbing_world import build_plumbing_world

from tagalign.data.shards import NoTrainingSamplesError, TagShardDataset, collate_tag_batch
from tagalign.data.synthetic import render_scene, write_img2dataset_shards
from tagalign.tags.labels import LabelStore, write_labels

ROOT = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    scenes = [render_scene(rng, size=(48, 48)) for _ in range(24)]
    keys = write_img2dataset_shards(root / "shards", [(s.image, s.caption) for s in scenes], per_shard=12)
    labels = {k: [i % 5] for i, k in enumerate(keys)}
    write_labels(root / "labels.sqlite", labels.items(), num_tags=5, vocab_hash="v1")
    return root, keys, labels


def _bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (Pillow refuses it as a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(
        b"IEND", b"")


def _rewrite_shard(source: Path, target: Path, change) -> None:
    with tarfile.open(source) as src, tarfile.open(target, "w") as dst:
        for member in src:
            name, data = change(member.name, src.extractfile(member).read())
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------- 1: no hang
def test_wrong_label_key_stops_at_once_naming_the_key(shards, tmp_path):
    root, keys, labels = shards
    url_labels = tmp_path / "url_labels.sqlite"  # labels keyed by URL (as parsed from a .tsv) ...
    write_labels(url_labels, [(f"http://shapes.invalid/{i}.jpg", v) for i, v in enumerate(labels.values())], 5, "v1")
    with pytest.raises(NoTrainingSamplesError, match=r"label_key='key'.*http://shapes.invalid.*label_key='url'"):
        TagShardDataset(root / "shards", url_labels, world_size=1, rank=0)  # ... joined on the sample key
    dataset = TagShardDataset(root / "shards", url_labels, transform=small_tensor, label_key="url", world_size=1,
                              rank=0)
    assert next(iter(dataset))["tag_ids"] in [[v] for v in range(5)]  # the right key joins


def test_every_image_corrupt_stops_within_one_pass_with_counts(shards, tmp_path):
    root, keys, _ = shards
    bad = tmp_path / "bad"
    bad.mkdir()
    for shard in sorted((root / "shards").glob("*.tar")):
        _rewrite_shard(shard, bad / shard.name, lambda n, d: (n, d[:40] if n.endswith(".jpg") else d))
    dataset = TagShardDataset(bad, root / "labels.sqlite", transform=small_tensor, world_size=1, rank=0)
    start = time.monotonic()
    with pytest.raises(NoTrainingSamplesError, match=r"24 samples read: 0 without a label, 24 with an unusable"):
        next(iter(dataset))
    assert time.monotonic() - start < 30


def test_mostly_unlabelled_stream_stops_with_counts(tmp_path):
    rng = np.random.default_rng(1)
    scenes = [render_scene(rng, size=(16, 16)) for _ in range(260)]
    keys = write_img2dataset_shards(tmp_path / "shards", [(s.image, s.caption) for s in scenes], per_shard=300)
    write_labels(tmp_path / "labels.sqlite", [(k, [0]) for k in keys[::10]], 1, "v")  # 10% labelled
    dataset = TagShardDataset(tmp_path / "shards", tmp_path / "labels.sqlite", transform=small_tensor,
                              shuffle_buffer=0, world_size=1, rank=0)
    with pytest.raises(NoTrainingSamplesError, match=r"more than 50% of samples have no label \(200 samples read: "
                                                     r"179 without a label"):
        for _ in dataset:
            pass


# ---------------------------------------------------------------------------------------------- 2: huge image
def test_decompression_bomb_is_skipped_counted_and_named(shards, tmp_path, caplog):
    root, keys, labels = shards
    bombed = tmp_path / "bombed"
    bombed.mkdir()
    first = sorted((root / "shards").glob("*.tar"))[0]
    _rewrite_shard(first, bombed / first.name,
                   lambda n, d: (n, _bomb_png()) if n == f"{keys[3]}.jpg" else (n, d))
    dataset = TagShardDataset(bombed, root / "labels.sqlite", transform=small_tensor, shuffle_buffer=0,
                              world_size=1, rank=0)
    with caplog.at_level("WARNING", logger="tagalign.data.shards"):
        samples = [s for _, s in zip(range(11), dataset)]
    assert keys[3] not in [s["key"] for s in samples] and len(samples) == 11
    assert all(s["tag_ids"] == labels[s["key"]] for s in samples)
    assert collate_tag_batch(samples)["skipped_corrupt"] == 1
    assert keys[3] in caplog.text and first.name in caplog.text and "DecompressionBomb" in caplog.text
    resumed = TagShardDataset(bombed, root / "labels.sqlite", transform=small_tensor, shuffle_buffer=0, world_size=1,
                              rank=0)
    resumed.batch_size, resumed.skip_batches = 5, 1  # fast-forward over the bomb, as --resume does
    assert [s["key"] for _, s in zip(range(6), resumed)] == [s["key"] for s in samples[5:11]]

    from tagalign.data.transforms import load_image

    (tmp_path / "bomb.png").write_bytes(_bomb_png())
    with pytest.raises(ValueError, match=r"bomb.png.*exceeds limit"):
        load_image(tmp_path / "bomb.png")


# ---------------------------------------------------------------------------------------------- 3: vocabularies
def test_labels_and_tag_embeddings_from_other_vocabularies_are_refused(tiny_clip, tmp_path):
    from tagalign.training.loop import _check_vocabulary
    from tagalign.training.model import TagAlignTrainModel

    write_labels(tmp_path / "labels.sqlite", [("a", [0, 1])], 2, "remerged")  # re-merged, same tag count ...
    torch.save(tiny_clip.state_dict(), tmp_path / "clip.pt")
    from tagalign.models import load_clip

    clip = load_clip("tagalign-tiny", str(tmp_path / "clip.pt"))
    torch.save({"embeddings": torch.randn(2, 64), "tags": ["circle", "red"], "kinds": ["object", "attribute"],
                "vocab_hash": "original", "clip": clip.tagalign_identity.to_dict()}, tmp_path / "tag_embeddings.pt")
    with pytest.raises(ValueError, match=r"vocabulary remerged.*vocabulary original.*parse_tags.py embed"):
        TagAlignTrainModel("tagalign-tiny", str(tmp_path / "clip.pt"), str(tmp_path / "tag_embeddings.pt"),
                           tag_frequency=str(tmp_path / "tag_frequency.npy"))  # ... but not re-embedded
    model = TagAlignTrainModel("tagalign-tiny", str(tmp_path / "clip.pt"), str(tmp_path / "tag_embeddings.pt"))
    assert model.vocab_hash == "original"

    class Model:
        vocab_hash = "original"

    class Data:
        labels = LabelStore(tmp_path / "labels.sqlite")

    with pytest.raises(ValueError, match=r"labels.sqlite labels samples with vocabulary remerged"):
        _check_vocabulary(Model(), Data())
    Model.vocab_hash = "remerged"
    _check_vocabulary(Model(), Data())  # matching files pass


# ---------------------------------------------------------------------------------------------- 4: parse resume
@pytest.fixture
def captions(tmp_path):
    path = tmp_path / "captions.jsonl"
    words = ["red", "cat", "sofa", "green", "dog", "wooden", "table"]
    path.write_text("".join(json.dumps({"key": f"k{i:04d}", "caption": f"a {words[i % 7]} {words[(i + 3) % 7]}"})
                            + "\n" for i in range(300)))
    return path


def _parse(src, out, **kwargs):
    from tagalign.tags.parse import parse_captions
    from tagalign.tags.parsers import NLTKParser

    return parse_captions([src], out, NLTKParser(), progress=False, **kwargs)


def _parsed_keys(out: Path) -> list[str]:
    return [json.loads(line)["key"] for part in sorted((out / "parsed").glob("part-*.jsonl"))
            for line in part.read_text().splitlines()]


@pytest.mark.nltk
def test_parse_resume_refuses_changed_settings(captions, tmp_path):
    from tagalign.tags.parse import ResumeMismatchError

    _parse(captions, tmp_path / "a", chunk_size=100)
    with pytest.raises(ResumeMismatchError, match=r"--chunk-size 100 -> 150"):
        _parse(captions, tmp_path / "a", chunk_size=150)
    _parse(captions, tmp_path / "b", chunk_size=100, num_shards=2, shard_id=0)
    with pytest.raises(ResumeMismatchError, match=r"--num-shards 2 -> 1"):
        _parse(captions, tmp_path / "b", chunk_size=100)


@pytest.mark.nltk
def test_parse_resume_tags_appended_captions(captions, tmp_path):
    _parse(captions, tmp_path / "out", chunk_size=128)  # chunks of 128, 128, 44
    with open(captions, "a") as handle:
        handle.write("".join(json.dumps({"key": f"new{i}", "caption": "a blue car"}) + "\n" for i in range(100)))
    summary = _parse(captions, tmp_path / "out", chunk_size=128)
    keys = _parsed_keys(tmp_path / "out")
    assert len(keys) == len(set(keys)) == 400 and summary["captions"] == 400


@pytest.mark.nltk
def test_parse_resume_refuses_a_changed_input(captions, tmp_path):
    from tagalign.tags.parse import ResumeMismatchError

    _parse(captions, tmp_path / "out", chunk_size=100)
    lines = captions.read_text().splitlines(keepends=True)
    captions.write_text("".join(lines[:150] + lines[151:]))  # one caption removed in the middle
    with pytest.raises(ResumeMismatchError, match=r"part-00000-000001.jsonl does not match the input"):
        _parse(captions, tmp_path / "out", chunk_size=100)


@pytest.mark.nltk
def test_writes_killed_mid_way_leave_neither_a_part_nor_a_leftover(captions, tmp_path):
    _parse(captions, tmp_path / "reference", chunk_size=100)
    reference = {p.name: p.read_bytes() for p in (tmp_path / "reference/parsed").iterdir()}
    parsed = tmp_path / "out/parsed"
    kill_mid_write(parsed / "part-00000-000000.jsonl", b'{"key": "k0000", "cap')
    kill_mid_write(parsed / "part-00001-000000.jsonl", b"another shard's")  # not this shard's to remove
    assert not list(parsed.glob("part-*")) and len(list(parsed.iterdir())) == 2  # the two killed temporaries
    summary = _parse(captions, tmp_path / "out", chunk_size=100)
    after = {p.name: p.read_bytes() for p in parsed.iterdir()}
    assert summary["chunks_resumed"] == 0 and summary["captions"] == 300
    others = [name for name in after if name.startswith(".part-00001-")]
    assert len(others) == 1 and {k: v for k, v in after.items() if k not in others} == reference


def test_a_killed_writers_leftover_under_a_reused_process_id_is_overwritten(tmp_path, monkeypatch):
    """Containers reuse small process ids: a new writer may get the temporary name a killed one left behind."""
    write_labels(tmp_path / "old.sqlite", [("old", [0])], 1, "v")  # a complete database, tables and all
    pid = kill_mid_write(tmp_path / "labels.sqlite", (tmp_path / "old.sqlite").read_bytes())
    monkeypatch.setattr(os, "getpid", lambda: pid)
    assert write_labels(tmp_path / "labels.sqlite", [("new", [1, 2])], 3, "v2")["samples"] == 1
    store = LabelStore(tmp_path / "labels.sqlite")
    assert store.get("new") == [1, 2] and store.get("old") is None


# ---------------------------------------------------------------------------------------------- 5: merge
@pytest.mark.nltk
def test_merge_refuses_unfinished_shards(captions, tmp_path):
    from tagalign.tags.merge import IncompleteParseError, merge_parsed

    _parse(captions, tmp_path / "out", chunk_size=100, num_shards=2, shard_id=0)
    with pytest.raises(IncompleteParseError, match=r"shard\(s\) \[1\] have not finished.*of 2 shards"):
        merge_parsed(tmp_path / "out")
    _parse(captions, tmp_path / "out", chunk_size=100, num_shards=2, shard_id=1)
    assert merge_parsed(tmp_path / "out")["records"] == 300


def _merge_outputs(out: Path) -> dict[str, bytes]:
    from tagalign.tags.merge import MERGE_OUTPUTS

    return {name: (out / name).read_bytes() for name in MERGE_OUTPUTS if (out / name).exists()}


@pytest.mark.nltk
def test_a_kill_at_any_point_of_merge_leaves_one_complete_set(captions, tmp_path, monkeypatch):
    """Interrupt merge at each of its file operations: what a reader then sees is the old set or the new one."""
    import tagalign.tags.merge as merge

    out = tmp_path / "out"
    _parse(captions, out, chunk_size=100)
    merge.merge_parsed(out, top_k_objects=2)
    old = _merge_outputs(out)
    merge.merge_parsed(out, top_k_objects=4)
    new = _merge_outputs(out)
    assert old != new

    class KilledError(Exception):
        pass

    real_replace, real_sync = os.replace, merge._sync
    for kill_at in range(20):
        merge.merge_parsed(out, top_k_objects=2)  # start from the old set
        calls = {"n": 0}

        def counting(fn, calls=calls, kill_at=kill_at):
            def wrapper(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] == kill_at + 1:
                    raise KilledError
                return fn(*args, **kwargs)
            return wrapper

        monkeypatch.setattr(merge.os, "replace", counting(real_replace))
        monkeypatch.setattr(merge, "_sync", counting(real_sync))
        try:
            merge.merge_parsed(out, top_k_objects=4)
            finished = True
        except KilledError:
            finished = False
        monkeypatch.setattr(merge.os, "replace", real_replace)
        monkeypatch.setattr(merge, "_sync", real_sync)
        LabelStore(out / "labels.sqlite")  # a reader: completes a merge killed after its commit point
        assert _merge_outputs(out) in (old, new), kill_at
        assert not list(out.glob(".merge*")), kill_at
        if finished:
            break
    assert finished and kill_at > 5


# ---------------------------------------------------------------------------------------------- 6: sources
def test_img2dataset_folder_with_a_tar_lacking_its_parquet(tmp_path):
    from tagalign.tags.sources import expand_inputs

    rng = np.random.default_rng(2)
    write_img2dataset_shards(tmp_path, [(render_scene(rng, size=(16, 16)).image, f"c{i}") for i in range(8)],
                             per_shard=4)
    (tmp_path / "00001.parquet").unlink()
    assert [p.name for p in expand_inputs([tmp_path])] == ["00000.parquet", "00001.tar"]


# ---------------------------------------------------------------------------------------------- 7, 8, 11: eval
@pytest.fixture
def voc(tmp_path):
    from voc_layout import write_voc

    root = tmp_path / "data/VOCdevkit/VOC2012"
    ids = write_voc(root, num_images=2)
    return tmp_path / "data", root, ids


def _evaluate(key, data_root, tmp_path, **kwargs):
    from tagalign.segmentation.evaluate import evaluate_many

    os.environ["TAGALIGN_EVAL_WORKERS"] = "0"
    return evaluate_many([key] if isinstance(key, str) else key, data_root=data_root, clip="tagalign-tiny",
                         work_dir=tmp_path / "w", **kwargs)


@pytest.mark.parametrize("damage,message", [
    ("transposed", r"2007_000001.png: the label is \d+x\d+ \(HxW\) but its image .* is \d+x\d+"),
    ("resized", r"2007_000001.png: the label is \d+x\d+ \(HxW\) but its image"),
    ("rgb", r"2007_000001.png: expected a single-channel map of class indices"),
    ("values", r"2007_000001.png: label values \[40\] are neither a class index \(0..20\)"),
])
def test_ground_truth_that_does_not_fit_its_image_is_refused(voc, tmp_path, damage, message):
    data_root, root, ids = voc
    path = root / "SegmentationClass" / f"{ids[1]}.png"
    label = np.array(Image.open(path))
    if damage == "transposed":
        Image.fromarray(label.T.copy()).save(path)
    elif damage == "resized":
        Image.fromarray(label[:-8]).save(path)
    elif damage == "rgb":
        Image.fromarray(np.stack([label] * 3, axis=-1)).save(path)
    else:
        label[10:20, 10:20] = 40
        Image.fromarray(label).save(path)
    with pytest.raises(ValueError, match=message):
        _evaluate("voc", data_root, tmp_path)


def test_empty_split_and_missing_datasets_stop_before_starting(voc, tmp_path):
    from tagalign.errors import MissingDatasetError

    data_root, root, _ = voc
    with pytest.raises(MissingDatasetError, match=r"(?s)2 of 3 datasets are missing.*'context'.*'ade20k'"):
        _evaluate(["voc", "context", "ade20k"], data_root, tmp_path)
    (root / "ImageSets/Segmentation/val.txt").write_text("\n")
    with pytest.raises(MissingDatasetError, match=r"val.txt lists no image"):
        _evaluate("voc", data_root, tmp_path)


def test_all_keeps_each_finished_benchmark(voc, tmp_path):
    data_root, root, ids = voc
    context = data_root / "VOCdevkit/VOC2010"
    from voc_layout import write_voc

    context_ids = write_voc(context, num_images=1, seed=3)
    (context / "SegmentationClass").rename(context / "SegmentationClassContext")
    (context / "ImageSets/Segmentation").rename(context / "ImageSets/SegmentationContext")
    label = context / "SegmentationClassContext" / f"{context_ids[0]}.png"
    Image.fromarray(np.array(Image.open(label)).T.copy()).save(label)  # context fails after voc finished
    out = tmp_path / "results.json"
    with pytest.raises(ValueError, match="transposed"):
        _evaluate(["voc", "context"], data_root, tmp_path, out=out)
    assert set(json.loads(out.read_text())) == {"voc"}


def test_data_root_may_be_the_dataset_root_itself(voc, tmp_path):
    from tagalign.segmentation.benchmarks import BENCHMARKS, resolve_data_root

    data_root, root, _ = voc
    assert resolve_data_root(BENCHMARKS["voc"], data_root) == root
    assert resolve_data_root(BENCHMARKS["voc"], root) == root


# ---------------------------------------------------------------------------------------------- 9: resume layout
def test_resume_with_another_worker_count_is_refused(tmp_path):
    world = tmp_path / "world"
    build_plumbing_world(world, num_train=48)

    def command(iters, workers):
        options = {"model.pretrained": world / "tiny_clip", "model.tag_embeddings": world / "tags/tag_embeddings.pt",
                   "model.tag_frequency": world / "tags/tag_frequency.npy",
                   "train_dataloader.dataset.shards": world / "shards",
                   "train_dataloader.dataset.labels": world / "tags/labels.sqlite", "train_dataloader.batch_size": 4,
                   "train_dataloader.num_workers": workers, "train_cfg.max_iters": iters,
                   "default_hooks.checkpoint.interval": 2}
        return [sys.executable, str(ROOT / "tools/train.py"), str(ROOT / "configs/quickstart.py"), "--work-dir",
                str(tmp_path / "work"), "--cfg-options", *[f"{k}={v}" for k, v in options.items()]]

    subprocess.run(command(2, 0), check=True, capture_output=True)
    result = subprocess.run(command(4, 2) + ["--resume"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "num_workers 1 -> 2" in result.stderr and "train_dataloader.num_workers=1" in result.stderr


def test_resume_with_another_encoder_is_refused(tmp_path):
    """The projector of a checkpoint read one encoder's tokens; resuming under another encoder is refused."""
    world = tmp_path / "world"
    build_plumbing_world(world, num_train=16)

    def command(iters, encoder):
        options = {"model.pretrained": world / "tiny_clip", "model.tag_embeddings": world / "tags/tag_embeddings.pt",
                   "model.tag_frequency": world / "tags/tag_frequency.npy", "model.encoder": encoder,
                   "train_dataloader.dataset.shards": world / "shards",
                   "train_dataloader.dataset.labels": world / "tags/labels.sqlite", "train_dataloader.batch_size": 4,
                   "train_dataloader.num_workers": 0, "train_cfg.max_iters": iters,
                   "default_hooks.checkpoint.interval": 1}
        return [sys.executable, str(ROOT / "tools/train.py"), str(ROOT / "configs/quickstart.py"), "--work-dir",
                str(tmp_path / "work"), "--cfg-options", *[f"{k}={v}" for k, v in options.items()]]

    subprocess.run(command(1, "clearclip"), check=True, capture_output=True)
    result = subprocess.run(command(2, "naclip") + ["--resume"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "trained on the 'clearclip' encoder" in result.stderr and "'naclip'" in result.stderr


# ---------------------------------------------------------------------------------------------- 10: demo
def test_demo_duplicate_queries_thin_images_and_foreign_vocab(tiny_clip, tmp_path):
    import tagalign
    from tagalign.models import TagAlign, load_clip

    model = TagAlign(tiny_clip).eval()
    image = np.zeros((64, 96, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"query 'red' is given twice \(queries 1 and 3\)"):
        tagalign.segment(model, image, ["red", "blue", "red"])
    with pytest.raises(ValueError, match=r"10000x5 .* 2048x1, thinner than one 16-pixel patch"):
        tagalign.segment(model, np.zeros((10000, 5, 3), dtype=np.uint8), ["red"])
    foreign = {"embeddings": torch.randn(3, 64), "tags": ["a", "b", "c"], "kinds": ["object"] * 3,
               "vocab_hash": "x", "templates": [], "clip": load_clip("tagalign-tiny").tagalign_identity.to_dict()}
    torch.save(foreign, tmp_path / "tag_embeddings.pt")
    with pytest.raises(ValueError, match=r"tag_embeddings.pt was embedded with CLIP tagalign-tiny .* meaningless"):
        tagalign.tag(model, image, vocab=str(tmp_path / "tag_embeddings.pt"))


def test_demo_goes_on_past_an_image_it_cannot_segment(tiny_clip, tmp_path):
    from tagalign.models import TagAlign, save_checkpoint

    torch.save(tiny_clip.state_dict(), tmp_path / "clip.pt")
    from tagalign.models import load_clip

    save_checkpoint(TagAlign(load_clip("tagalign-tiny", str(tmp_path / "clip.pt"))), tmp_path / "ckpt.pth")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((5, 4000, 3), dtype=np.uint8)).save(images / "a_thin.png")
    Image.fromarray(np.full((64, 80, 3), 200, dtype=np.uint8)).save(images / "b_fine.png")
    result = subprocess.run([sys.executable, str(ROOT / "tools/demo.py"), str(images), "--texts", "red", "blue",
                             "--checkpoint", str(tmp_path / "ckpt.pth"), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, env={**os.environ, "TAGALIGN_CACHE": str(tmp_path)})
    assert result.returncode != 0 and "1 of 2 image(s) could not be segmented: a_thin" in result.stderr
    assert "a_thin.png: the image is 5x4000" in result.stdout
    assert (tmp_path / "out/b_fine_overlay.png").exists() and not (tmp_path / "out/a_thin_overlay.png").exists()


# ---------------------------------------------------------------------------------------------- 11: messages
def test_useless_errors_now_name_the_file(tmp_path):
    from tagalign.models import CheckpointMismatchError, read_checkpoint

    (tmp_path / "labels.sqlite").write_text("this is not a database")
    with pytest.raises(ValueError, match=r"labels.sqlite is not a label file written by tools/parse_tags.py"):
        LabelStore(tmp_path / "labels.sqlite")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointMismatchError, match=r"notes.txt is not a tagalign checkpoint: torch cannot read"):
        read_checkpoint(tmp_path / "notes.txt")


def test_truncated_iteration_checkpoint_falls_back_to_the_previous(tmp_path):
    from tagalign.training.checkpoint_io import latest_checkpoint

    for n in (2, 4):
        torch.save({"iter": n, "weights": torch.randn(1000)}, tmp_path / f"iter_{n}.pth")
    data = (tmp_path / "iter_4.pth").read_bytes()
    (tmp_path / "iter_4.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_4.pth"))
    path, reason = latest_checkpoint(tmp_path)
    assert path == str(tmp_path / "iter_2.pth")
    assert "damaged" in reason and "iter_4.pth" in reason


def test_referring_files_with_bad_records_are_named(tmp_path):
    import pickle

    from tagalign.segmentation.referring import load_referring

    root = tmp_path / "refer"
    (root / "refcoco").mkdir(parents=True)
    (root / "images/mscoco/images/train2014").mkdir(parents=True)
    instances = {"images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}],
                 "annotations": [{"id": 5, "image_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]]},
                                 {"id": 6, "image_id": 1, "segmentation": []}]}
    (root / "refcoco/instances.json").write_text(json.dumps(instances))

    def refs(*records):
        with open(root / "refcoco/refs(unc).p", "wb") as handle:
            pickle.dump([{"ref_id": i, "split": "val", "sentences": [{"sent_id": i, "sent": "x"}], **r}
                         for i, r in enumerate(records)], handle)

    refs({"image_id": 999, "ann_id": 5})
    with pytest.raises(ValueError, match=r"refs\(unc\).p: ref 0 names image 999, which .*instances.json does not"):
        load_referring(root, "refcoco", "val")
    refs({"image_id": 1, "ann_id": 6})
    with pytest.raises(ValueError, match=r"annotation 6 \(ref 0\) has an empty segmentation"):
        load_referring(root, "refcoco", "val")
    refs({"image_id": 1, "ann_id": 5})
    assert len(load_referring(root, "refcoco", "val")) == 1
    data = (root / "refcoco/refs(unc).p").read_bytes()
    (root / "refcoco/refs(unc).p").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"refs\(unc\).p: expected the refer API's pickled list"):
        load_referring(root, "refcoco", "val")


def test_more_streams_than_samples_is_an_error_not_a_hang(shards):
    root, _, _ = shards
    dataset = TagShardDataset(root / "shards", root / "labels.sqlite", transform=small_tensor, world_size=30, rank=29)
    with pytest.raises(NoTrainingSamplesError, match=r"stream 29 of 30 .* owns no sample"):
        next(iter(dataset))


# ------------------------------------------------------------------------------------ round three (issue 24)
WHITE = np.array([255, 255, 255], dtype=np.float64)


def _mode_images() -> dict[str, tuple[Image.Image, str, np.ndarray]]:
    """mode -> (image, file format, expected RGB) with the expected pixels written out here, not by the decoder."""
    rng = np.random.default_rng(5)
    h, w = 6, 7
    grey = rng.integers(0, 256, (h, w)).astype(np.uint8)
    rgb = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    alpha = rng.integers(0, 256, (h, w)).astype(np.uint8)
    bits = rng.integers(0, 2, (h, w)).astype(bool)
    sixteen = rng.integers(0, 65536, (h, w)).astype(np.uint16)
    floats = rng.random((h, w)).astype(np.float32)
    palette = rng.integers(0, 256, (256, 3)).astype(np.uint8)
    indices = rng.integers(0, 8, (h, w)).astype(np.uint8)
    cmyk = rng.integers(0, 256, (h, w, 4)).astype(np.uint8)

    def composite(colour, a):
        a = a.astype(np.float64)[..., None] / 255
        return np.rint(a * colour + (1 - a) * WHITE).astype(np.uint8)

    def grey3(values):
        return np.repeat(np.asarray(values, dtype=np.uint8)[..., None], 3, axis=-1)

    p_image = Image.fromarray(indices, "P")
    p_image.putpalette(palette.reshape(-1).tolist())
    p_transparent = p_image.copy()
    p_transparent.info["transparency"] = 3  # palette entry 3 is fully transparent
    p_expected_t = palette[indices].copy()
    p_expected_t[indices == 3] = 255
    la = Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)])
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    int32 = Image.fromarray(sixteen.astype(np.int32), "I")
    return {
        "1": (Image.fromarray(bits), "PNG", grey3(bits * 255)),
        "L": (Image.fromarray(grey), "PNG", grey3(grey)),
        "LA": (la, "PNG", composite(grey3(grey).astype(np.float64), alpha)),
        "P": (p_image, "PNG", palette[indices]),
        "P+transparency": (p_transparent, "PNG", p_expected_t),
        "RGBA": (rgba, "PNG", composite(rgb.astype(np.float64), alpha)),
        "CMYK": (Image.fromarray(cmyk, "CMYK"), "TIFF",
                 np.rint((255 - cmyk[..., :3].astype(float)) * (255 - cmyk[..., 3:].astype(float)) / 255)
                 .astype(np.uint8)),  # R = 255 (1 - C) (1 - K), the standard separation Pillow applies
        "I;16": (Image.fromarray(sixteen, "I;16"), "PNG", grey3(np.rint(sixteen / 257.0))),
        "I": (int32, "TIFF", grey3(np.rint(sixteen / 257.0))),
        "F": (Image.fromarray(floats, "F"), "TIFF", grey3(np.rint(floats.astype(np.float64) * 255))),
    }


@pytest.mark.parametrize("mode", list(_mode_images()))
def test_1_every_image_mode_reaches_training_the_web_app_and_evaluation_faithfully(mode, tmp_path):
    """16-bit grey used to become white (convert("RGB") clips at 255); every entry point now decodes alike."""
    from tagalign.segmentation.loading import LoadRGBImageFromFile
    from tagalign.webapp import read_upload

    image, file_format, expected = _mode_images()[mode]
    path = tmp_path / f"image.{file_format.lower()}"
    image.save(path, format=file_format)
    with Image.open(path) as reopened:  # the file really holds the mode under test
        assert reopened.mode == image.mode or (mode, reopened.mode) in {("I", "I;16"), ("I;16", "I")}

    dataset = TagShardDataset.__new__(TagShardDataset)  # the training decoder, without shards around it
    dataset.transform, dataset.tokenizer, dataset.seed = None, None, 0
    training = np.asarray(dataset._decode({"image": path.read_bytes(), "txt": "x", "key": "k"}, 0, 0)["image"])
    web = read_upload(str(path))
    evaluation = LoadRGBImageFromFile().transform({"img_path": str(path)})["img"][..., ::-1]
    for decoded in (training, web, evaluation):
        assert decoded.dtype == np.uint8 and np.array_equal(decoded, expected), mode


def test_1_undecodable_modes_are_refused_or_skipped_and_counted(shards, tmp_path):
    from tagalign.data.decode import ImageDecodeError, open_rgb

    Image.fromarray(np.full((4, 4), 70000, dtype=np.int32), "I").save(tmp_path / "wide.tif")
    with pytest.raises(ImageDecodeError, match=r"wide.tif: a 32-bit integer image \(mode I\) with values 70000"):
        open_rgb(tmp_path / "wide.tif")
    Image.fromarray(np.full((4, 4), 3.5, dtype=np.float32), "F").save(tmp_path / "hdr.tif")
    with pytest.raises(ImageDecodeError, match=r"hdr.tif: a 32-bit float image \(mode F\) with values outside"):
        open_rgb(tmp_path / "hdr.tif")


def _tiny_checkpoint(tiny_clip, folder: Path) -> Path:
    from tagalign.models import TagAlign, load_clip, save_checkpoint

    torch.save(tiny_clip.state_dict(), folder / "clip.pt")
    save_checkpoint(TagAlign(load_clip("tagalign-tiny", str(folder / "clip.pt"))), folder / "ckpt.pth")
    return folder / "ckpt.pth"


def test_2_two_inputs_with_one_stem_get_two_sets_of_outputs(tiny_clip, tmp_path):
    checkpoint = _tiny_checkpoint(tiny_clip, tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((64, 80, 3), 30, dtype=np.uint8)).save(images / "photo.jpg")
    Image.fromarray(np.full((48, 96, 3), 220, dtype=np.uint8)).save(images / "photo.png")
    Image.fromarray(np.full((64, 64, 3), 120, dtype=np.uint8)).save(images / "other.PNG")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(ROOT / "tools/demo.py"), str(images), "--texts", "red",
                             "--checkpoint", str(checkpoint), "--out", str(out)],
                            capture_output=True, text=True, env={**os.environ, "TAGALIGN_CACHE": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    written = sorted(p.name for p in out.iterdir())
    assert written == ["other_heatmaps.png", "other_overlay.png", "photo_jpg_heatmaps.png", "photo_jpg_overlay.png",
                       "photo_png_heatmaps.png", "photo_png_overlay.png"]
    assert Image.open(out / "photo_jpg_overlay.png").size == (80, 64)
    assert Image.open(out / "photo_png_overlay.png").size == (96, 48)
    assert "wrote 6 files (3 image(s)" in result.stdout and "photo_png_overlay.png" in result.stdout
    assert "shares its name with another input" in result.stderr


def test_3_a_copied_work_dir_resumes_its_own_checkpoint_never_the_originals(tmp_path):
    import shutil

    from tagalign.training.checkpoint_io import ForeignCheckpointError, latest_checkpoint

    original = tmp_path / "original"
    original.mkdir()
    torch.save({"iter": 4, "run": "original"}, original / "iter_4.pth")
    (original / "last_checkpoint").write_text(str(original / "iter_4.pth"))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    path, _ = latest_checkpoint(copy)
    assert path == str(copy / "iter_4.pth")
    (copy / "iter_4.pth").unlink()  # the pointer now names only the original's file: refused, both dirs named
    with pytest.raises(ForeignCheckpointError, match=r"names .*original/iter_4.pth, a checkpoint in another folder"):
        latest_checkpoint(copy)
    (copy / "last_checkpoint").write_text("iter_4.pth")  # a relative pointer is read inside the dir
    torch.save({"iter": 4, "run": "copy"}, copy / "iter_4.pth")
    assert latest_checkpoint(copy)[0] == str(copy / "iter_4.pth")


def test_4_an_empty_referring_split_is_an_error_and_json_never_holds_nan(tmp_path):
    import pickle

    from tagalign.segmentation.evaluate import write_json
    from tagalign.segmentation.referring import load_referring, referring_metrics

    root = tmp_path / "refer"
    (root / "refcoco").mkdir(parents=True)
    (root / "images/mscoco/images/train2014").mkdir(parents=True)
    instances = {"images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}],
                 "annotations": [{"id": 5, "image_id": 1, "segmentation": [[0, 0, 5, 0, 5, 5]]}]}
    (root / "refcoco/instances.json").write_text(json.dumps(instances))
    for refs in ([], [{"ref_id": 0, "split": "val", "image_id": 1, "ann_id": 5, "sentences": []}],
                 [{"ref_id": 0, "split": "testA", "image_id": 1, "ann_id": 5, "sentences": [{"sent_id": 0,
                                                                                             "sent": "x"}]}]):
        with open(root / "refcoco/refs(unc).p", "wb") as handle:
            pickle.dump(refs, handle)
        with pytest.raises(ValueError, match=r"split 'val' has no referring expression to score"):
            load_referring(root, "refcoco", "val")
    with pytest.raises(ValueError, match="no referring expression was scored"):
        referring_metrics([], [])
    with pytest.raises(ValueError):
        write_json({"mIoU": float("nan")}, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()
    result = subprocess.run([sys.executable, str(ROOT / "tools/test.py"), "--dataset", "refcoco", "--data-root",
                             str(root), "--clip", "tagalign-tiny"], capture_output=True, text=True)
    assert result.returncode != 0 and "Not starting" in result.stderr and "no referring expression" in result.stderr


def test_5_released_tags_header_duplicates_and_encodings(tmp_path):
    from tagalign.tags.released import ReleasedTagsError, import_released, read_object_list

    (tmp_path / "one.csv").write_text("category\ncat\ndog\n")
    assert read_object_list(tmp_path / "one.csv") == ["cat", "dog"]
    (tmp_path / "latin.csv").write_bytes("cat\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ReleasedTagsError, match=r"latin.csv, line 2: not UTF-8"):
        read_object_list(tmp_path / "latin.csv")
    (tmp_path / "mixed.csv").write_text("0,cat\n1,dog\nbird\n")
    with pytest.raises(ReleasedTagsError, match=r"mixed.csv, line 3: 1 columns where line 1 has 2"):
        read_object_list(tmp_path / "mixed.csv")
    (tmp_path / "index.json").write_text('{"http://a": [0], "http://b": [1], "http://a": [0]}')
    stats = import_released(tmp_path / "one.csv", tmp_path / "index.json", tmp_path / "out")
    assert stats["labelled_samples"] == 2 and stats["duplicate_urls_merged"] == 1
    store = LabelStore(tmp_path / "out/labels.sqlite")
    assert list(store.get("http://a")) == [0] and list(store.get("http://b")) == [1]  # cat, dog: no shift by one
    (tmp_path / "clash.json").write_text('{"http://a": [0], "http://a": [1]}')
    with pytest.raises(ReleasedTagsError, match=r"clash.json: URL 'http://a' appears twice with different tags"):
        import_released(tmp_path / "one.csv", tmp_path / "clash.json", tmp_path / "out2")


def test_6_encoder_options_are_declared_validated_and_applied(tiny_clip):
    from tagalign.models import TagAlign, dense_features
    from tagalign.models.encoders import check_encoder

    images = torch.randn(1, 3, 64, 64)
    shallow = TagAlign(tiny_clip, encoder="surgery", encoder_options={"depth": 3})
    assert shallow.surgery_layers == 3 and shallow.encoder_options == {}
    assert torch.equal(shallow.encode_patches(images), TagAlign(tiny_clip, surgery_layers=3).encode_patches(images))
    assert not torch.equal(shallow.encode_patches(images), TagAlign(tiny_clip).encode_patches(images))
    bilinear = TagAlign(tiny_clip, encoder="clip_surgery", encoder_options={"depth": "2"})
    assert bilinear.surgery_layers == 2
    assert torch.equal(dense_features(tiny_clip, images, "clip_surgery", depth=2),
                       dense_features(tiny_clip, images, "clip_surgery", depth="2"))
    blocks = len(tiny_clip.visual.transformer.resblocks)
    cases = {
        ("surgery", "depth", 100): rf"must be <= {blocks} \(the number of blocks of this ViT\), got 100",
        ("naclip", "sigma", 0): r"option 'sigma' must be > 0.0, got 0.0",
        ("naclip", "sigma", "abc"): r"option 'sigma' must be a number \(float\), got 'abc'",
        ("clearclip", "residual", "maybe"): r"option 'residual' must be true or false, got 'maybe'",
        ("sclip", "sigma", 3): r"encoder 'sclip' has no option 'sigma'; its options: none",
        ("naclip", "depth", 2): r"encoder 'naclip' has no option 'depth'; its options: sigma",
    }
    for (encoder, name, value), message in cases.items():
        with pytest.raises(ValueError, match=message):
            TagAlign(tiny_clip, encoder=encoder, encoder_options={name: value})
    assert check_encoder("clearclip", {"residual": "true"}) == {"residual": True}
    for options, message in ((["sigma"], "'sigma' is not NAME=VALUE"), (["sigma=abc"], "must be a number"),
                             (["depth=3"], "encoder 'naclip' has no option 'depth'")):
        result = subprocess.run([sys.executable, str(ROOT / "tools/test.py"), "--dataset", "voc", "--encoder", "naclip",
                                 "--encoder-options", *options], capture_output=True, text=True)
        assert result.returncode != 0 and message in result.stderr, result.stderr[-1500:]


def test_7_tagging_benchmarks_that_cannot_be_scored_stop_before_the_model(tmp_path):
    from tagalign.tagging.benchmark import read_benchmark

    (tmp_path / "tags.txt").write_text("cat\ndog\n")
    for name, content in {"empty.txt": "", "blank.txt": "\n  \n\n"}.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match=rf"{name}: no image listed"):
            read_benchmark(tmp_path / "tags.txt", tmp_path / name, tmp_path)
    (tmp_path / "untagged.txt").write_text("a.jpg\nb.jpg,\n")
    with pytest.raises(ValueError, match=r"untagged.txt: none of its 2 images carries a tag"):
        read_benchmark(tmp_path / "tags.txt", tmp_path / "untagged.txt", tmp_path)
    (tmp_path / "latin.txt").write_bytes("a.jpg,cat\nb.jpg,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.txt:2: not UTF-8"):
        read_benchmark(tmp_path / "tags.txt", tmp_path / "latin.txt", tmp_path)
    (tmp_path / "twice.txt").write_text("a.jpg,cat\nb.jpg,dog\na.jpg,cat\n")
    benchmark = read_benchmark(tmp_path / "tags.txt", tmp_path / "twice.txt", tmp_path)
    assert [p.name for p in benchmark.images] == ["a.jpg", "b.jpg"] and benchmark.targets.sum() == 2
    (tmp_path / "clash.txt").write_text("a.jpg,cat\na.jpg,dog\n")
    with pytest.raises(ValueError, match=r"clash.txt:2: image 'a.jpg' is listed again with other tags"):
        read_benchmark(tmp_path / "tags.txt", tmp_path / "clash.txt", tmp_path)
    result = subprocess.run([sys.executable, str(ROOT / "tools/test.py"), "--task", "tagging", "--dataset", "custom",
                             "--taglist", str(tmp_path / "tags.txt"), "--annots", str(tmp_path / "blank.txt"),
                             "--images", str(tmp_path), "--clip", "tagalign-tiny"], capture_output=True, text=True)
    assert result.returncode != 0 and "Not starting" in result.stderr and "no image listed" in result.stderr


def test_8_describe_checks_its_inputs_before_the_engine(tmp_path):
    def describe(*extra):
        return subprocess.run([sys.executable, str(ROOT / "tools/parse_tags.py"), "describe", str(tmp_path / "out"),
                               "--model", "no-such-model", *extra], capture_output=True, text=True)

    (tmp_path / "tags.txt").write_text("cat\n")
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "latin.txt").write_bytes("cat\ncaf\xe9\n".encode("latin-1"))
    cases = {("--tags", str(tmp_path / "empty.txt")): "empty.txt: no tag in the file",
             ("--tags", str(tmp_path / "latin.txt")): "latin.txt:2: not UTF-8",
             ("--tags", str(tmp_path / "tags.txt"), "--chunk-size", "0"): "chunk_size must be a whole number >= 1",
             ("--tags", str(tmp_path / "tags.txt"), "--samples", "0"): "samples must be a whole number >= 1"}
    for extra, message in cases.items():
        result = describe(*extra)
        assert result.returncode != 0 and "Not starting" in result.stderr and message in result.stderr, extra


def test_9_web_app_unreadable_uploads_synonym_limits_and_legible_titles(tiny_clip, tmp_path):
    from tagalign.models import TagAlign
    from tagalign.visualize import heatmap_grid, text_size
    from tagalign.webapp import MAX_QUERIES, SegmentationDemo, UnreadableUpload

    demo = SegmentationDemo(TagAlign(tiny_clip).eval())
    (tmp_path / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    status = demo.run(str(tmp_path / "fake.png"), "red").status
    assert status.startswith("Could not read this image") and str(tmp_path) not in status
    assert "Could not read this image: not a readable image file" in demo.run(UnreadableUpload(
        "not a readable image file (OSError)"), "red").status
    synonyms = ", ".join(f"word{i}" for i in range(500))
    assert f"500 texts to encode (queries and their synonyms): at most {MAX_QUERIES}" in demo.run(
        np.zeros((64, 64, 3), np.uint8), synonyms).status
    # three queries on a 1024-pixel image, two rows, shown 1400 pixels wide: titles at least 12 pixels tall
    grid = heatmap_grid(np.zeros((1024, 1024, 3), np.uint8), np.zeros((2, 3, 1024, 1024)), ["a", "b", "c"],
                        rows=["TagAlign", "CLIP surgery"])
    assert text_size(1024) * 1400 / grid.width >= 12


def test_10_a_truncated_tag_embedding_file_is_named(tmp_path):
    from tagalign.tags.embed import load_tag_embeddings

    torch.save({"embeddings": torch.randn(50, 8), "tags": ["t"] * 50}, tmp_path / "tag_embeddings.pt")
    data = (tmp_path / "tag_embeddings.pt").read_bytes()
    (tmp_path / "tag_embeddings.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"tag_embeddings.pt: cannot read the tag embeddings .* truncated copy"):
        load_tag_embeddings(tmp_path / "tag_embeddings.pt")
