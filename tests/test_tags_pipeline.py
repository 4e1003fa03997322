"""Parse -> merge on every input kind: outputs, bad input accounting, sharding, vocabularies, labels, embeddings."""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from img2dataset_layout import write_shards

from tagalign.tags.labels import LabelStore
from tagalign.tags.merge import merge_parsed
from tagalign.tags.parse import parse_captions, shard_from_environment
from tagalign.tags.parsers import NLTKParser
from tagalign.tags.vocab import TagVocab, iter_parsed

pytestmark = pytest.mark.nltk  # NLTK's tagger and WordNet (tests/conftest.py)

CAPTIONS = [
    "a black cat sitting on a red sofa", "two dogs playing in the green grass", "a red car parked near a tree",
    "a small dog on a red sofa", "green trees and a blue sky", "a cat and a dog", "a wooden table", "a red apple",
]


@pytest.fixture(scope="module")
def parser():
    return NLTKParser()


def _records(out):
    return list(iter_parsed(out))


def _bad_tsv(path: Path) -> list[bytes]:
    lines = [
        b"http://a/0.jpg\ta black cat sitting on a red sofa",
        b"http://a/1.jpg\t   ",  # whitespace caption
        b"http://a/2.jpg\t",  # empty caption
        b"no tab on this line",  # malformed
        b"http://a/3.jpg\tx\ty",  # malformed: three fields
        b"http://a/4.jpg\ta \xff\xfe broken red car",  # invalid UTF-8
        b"http://a/5.jpg\t" + ("a very long caption about a dog " * 320).encode(),  # ~10,000 characters
        "http://a/6.jpg\t一只黑猫坐在红色沙发上".encode(),  # CJK
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def test_bad_input_is_counted_and_every_line_appears_once(tmp_path, parser):
    lines = _bad_tsv(tmp_path / "c.tsv")
    shards = tmp_path / "shards"
    write_shards(shards, CAPTIONS[:4], per_shard=2, with_parquet=False)
    truncated = shards / "00001.tar"
    truncated.write_bytes(truncated.read_bytes()[:700])  # cut inside the first member's data
    stats = parse_captions([tmp_path / "c.tsv", shards], tmp_path / "out", parser, chunk_size=3)
    records = _records(tmp_path / "out")
    assert [r["key"] for r in records[:8]] == [
        "http://a/0.jpg", "http://a/1.jpg", "http://a/2.jpg", "c.tsv#L4", "c.tsv#L5", "http://a/4.jpg",
        "http://a/5.jpg", "http://a/6.jpg"]
    assert len(records) == len(lines) + 2  # every tsv line + the intact tar's 2 samples
    assert stats["empty_captions"] == 2 and stats["malformed_records"] == 2 and stats["invalid_utf8"] == 1
    assert stats["truncated_captions"] == 1 and stats["cjk_captions"] == 1
    assert stats["bad_files"][0]["file"].endswith("00001.tar") and "records_read" in stats["bad_files"][0]
    by_key = {r["key"]: r for r in records}
    assert by_key["http://a/4.jpg"]["caption"].startswith("a \ufffd\ufffd broken red car")
    assert by_key["http://a/4.jpg"]["objects"] == ["car"]
    assert by_key["c.tsv#L4"]["status"] == "failed" and "url<TAB>caption" in by_key["c.tsv#L4"]["error"]
    assert by_key["http://a/5.jpg"]["objects"] == ["caption", "dog"]  # cut at 1,000 characters, mid-word
    saved = json.loads((tmp_path / "out/stats/shard-00000.json").read_text())
    assert saved["captions"] == len(records) and saved["ok"] + saved["failed"] == len(records)


def test_img2dataset_parquet_is_preferred_and_failed_downloads_skipped(tmp_path, parser):
    keys = write_shards(tmp_path / "shards", CAPTIONS, per_shard=3, failed_every=4)
    parse_captions([tmp_path / "shards"], tmp_path / "out", parser)
    records = _records(tmp_path / "out")
    assert [r["key"] for r in records] == keys  # success rows only, img2dataset keys, in shard order
    with tarfile.open(tmp_path / "shards/00000.tar") as archive:
        assert f"{keys[0]}.txt" in archive.getnames()


def test_jsonl_input_and_merge_outputs(tmp_path, parser):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"key": f"k{i}", "caption": c}) + "\n" for i, c in enumerate(CAPTIONS))
                   + '{"caption": "no key"}\n')
    parse_captions([src], tmp_path / "out", parser)
    stats = merge_parsed(tmp_path / "out", top_k_objects=3, top_k_attributes=2)
    with open(tmp_path / "out/vocab.csv") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["tag", "kind", "count"]
    body = [(t, k, int(c)) for t, k, c in rows[1:]]
    assert [c for _, _, c in body] == sorted((c for _, _, c in body), reverse=True)
    assert sum(k == "object" for _, k, _ in body) == 3 and sum(k == "attribute" for _, k, _ in body) == 2
    # red: captions 0, 2, 3, 7 -> 4; dog: 1, 3, 5 -> 3; sofa 0, 3 and cat 0, 5 and tree 2, 4 tie at 2
    assert body[0] == ("red", "attribute", 4) and ("dog", "object", 3) in body
    vocab = TagVocab.load(tmp_path / "out/vocab.csv")
    store = LabelStore(tmp_path / "out/labels.sqlite")
    assert len(store) == len(CAPTIONS) and stats["failed_records"] == 1 and "jsonl#L9" not in str(store.get("k0"))
    tagged = [("cat", "object"), ("sofa", "object"), ("black", "attribute"), ("red", "attribute")]
    expected_first = sorted(vocab.index[p] for p in tagged if p in vocab.index)
    assert len(expected_first) == 3  # black (count 1) is outside the top-2 attributes
    assert store.get("k0") == expected_first
    assert store.get("missing") is None
    prior = np.load(tmp_path / "out/tag_frequency.npy")
    red = vocab.index[("red", "attribute")]
    assert prior.shape == (len(vocab),) and prior[red] == pytest.approx(4 / 8)
    assert store.num_tags == len(vocab) and store.vocab_hash == vocab.hash


def test_vocab_from_external_list(tmp_path, parser):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"key": f"k{i}", "caption": c}) + "\n" for i, c in enumerate(CAPTIONS)))
    (tmp_path / "ram_tags.txt").write_text("Sofa\ncats\nunicorn\nsofa\n")
    parse_captions([src], tmp_path / "out", parser)
    merge_parsed(tmp_path / "out", vocab_from=tmp_path / "ram_tags.txt")
    vocab = TagVocab.load(tmp_path / "out/vocab.csv")
    assert vocab.tags == ["sofa", "cat", "unicorn"] and vocab.counts == [2, 2, 0]
    assert LabelStore(tmp_path / "out/labels.sqlite").get("k5") == [1]  # "a cat and a dog": only cat is known


def test_shards_partition_the_input_without_overlap(tmp_path, parser):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"key": f"k{i}", "caption": CAPTIONS[i % 8]}) + "\n" for i in range(25)))
    parse_captions([src], tmp_path / "single", parser, chunk_size=4)
    for shard in range(3):
        parse_captions([src], tmp_path / "sharded", parser, num_shards=3, shard_id=shard, chunk_size=4)
    single = sorted(json.dumps(r, sort_keys=True) for r in _records(tmp_path / "single"))
    sharded = sorted(json.dumps(r, sort_keys=True) for r in _records(tmp_path / "sharded"))
    assert single == sharded and len(set(sharded)) == 25


def test_shard_settings_from_slurm_and_torchrun(monkeypatch):
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    assert shard_from_environment() == (8, 5)
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("SLURM_PROCID", "11")
    assert shard_from_environment() == (16, 11)


def test_tag_embeddings_stage(tmp_path, parser, tiny_clip):
    import torch

    from tagalign.models import encode_texts
    from tagalign.tags.embed import embed_vocab, load_tag_embeddings

    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"key": f"k{i}", "caption": c}) + "\n" for i, c in enumerate(CAPTIONS)))
    parse_captions([src], tmp_path / "out", parser)
    merge_parsed(tmp_path / "out")
    torch.save(tiny_clip.state_dict(), tmp_path / "clip.pt")
    embedded = embed_vocab(tmp_path / "out", clip="tagalign-tiny", pretrained=str(tmp_path / "clip.pt"))
    payload = load_tag_embeddings(embedded)
    vocab = TagVocab.load(tmp_path / "out/vocab.csv")
    assert payload["embeddings"].shape == (len(vocab), 64) and payload["tags"] == vocab.tags
    assert payload["vocab_hash"] == vocab.hash
    assert torch.allclose(payload["embeddings"], encode_texts(tiny_clip, vocab.tags, cache_dir=False), atol=1e-5)
