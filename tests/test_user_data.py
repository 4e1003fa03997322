"""Users' data where it is: the authors' released tags, and shards laid out like the pixparse/cc12m-wds mirror."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from img2dataset_layout import small_tensor
from PIL import Image

from tagalign.data.shards import NoTrainingSamplesError, TagShardDataset
from tagalign.data.synthetic import render_scene, write_img2dataset_shards
from tagalign.tags.labels import LabelStore
from tagalign.tags.released import ReleasedTagsError, import_released, read_object_list
from tagalign.tags.vocab import TagVocab

ROOT = Path(__file__).resolve().parents[1]
OBJECTS = ["square", "circle", "triangle", "star", "cat"]



@pytest.mark.parametrize("layout", ["one column", "one column, header", "index,tag", "index,tag, header"])
def test_object_list_layouts(tmp_path, layout):
    rows = [[tag] for tag in OBJECTS] if layout.startswith("one") else [[str(i), t] for i, t in enumerate(OBJECTS)]
    if layout.endswith("header"):
        rows.insert(0, ["tag"] if layout.startswith("one") else ["index", "object"])
    (tmp_path / "object_list.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    assert read_object_list(tmp_path / "object_list.csv") == OBJECTS


def test_released_tags_round_trip_into_a_training_sample(tmp_path):
    """Released-style files -> our label store -> each training sample gets exactly its URL's tags."""
    rng = np.random.default_rng(0)
    keys = write_img2dataset_shards(tmp_path / "shards", [(render_scene(rng, size=(32, 32)).image, f"caption {i}")
                                                          for i in range(12)], per_shard=6)
    urls = [f"http://shapes.invalid/{i}.jpg" for i in range(12)]  # the URLs the shards' .json files hold
    index = {url: sorted({i % 5, (i * 3) % 5}) for i, url in enumerate(urls)}
    index[urls[4]] = []  # an image without tags keeps a zero target
    (tmp_path / "object_list.csv").write_text("\n".join(f"{i},{t}" for i, t in enumerate(OBJECTS)) + "\n")
    (tmp_path / "index.json").write_text(json.dumps(index))
    result = subprocess.run([sys.executable, str(ROOT / "tools/parse_tags.py"), "import-released",
                             str(tmp_path / "object_list.csv"), str(tmp_path / "index.json"), "--out",
                             str(tmp_path / "tags")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    vocab = TagVocab.load(tmp_path / "tags/vocab.csv")
    assert vocab.tags == OBJECTS and set(vocab.kinds) == {"object"}
    store = LabelStore(tmp_path / "tags/labels.sqlite")
    assert store.vocab_hash == vocab.hash and len(store) == 12
    frequency = np.load(tmp_path / "tags/tag_frequency.npy")
    assert np.allclose(frequency, [sum(t in ids for ids in index.values()) / 12 for t in range(5)])
    dataset = TagShardDataset(tmp_path / "shards", tmp_path / "tags/labels.sqlite", transform=small_tensor,
                              label_key="url", shuffle_buffer=0, world_size=1, rank=0)
    stream = iter(dataset)
    samples = [next(stream) for _ in range(12)]
    assert sorted(s["key"] for s in samples) == sorted(keys)
    for sample in samples:
        assert sample["tag_ids"] == index[urls[keys.index(sample["key"])]]


@pytest.mark.parametrize("csv_text,index,message", [
    ("0,square\n2,circle\n", {}, r"object_list.csv: indices must run 0..1 without gaps"),
    ("square\nsquare\n", {}, r"object_list.csv: tags \['square'\] appear more than once"),
    ("", {}, r"object_list.csv: no tags"),
    ("0,square,x\n", {}, r"object_list.csv, line 1: expected one column \(tag\) or two"),
    ("square\ncircle\n", {"http://a": [0, 2]}, r"index.json, record 'http://a': tag indices \[2\] are outside 0..1"),
    ("square\ncircle\n", {"http://b": "0"}, r"index.json, record 'http://b': expected a list of integer"),
    ("square\ncircle\n", [1, 2], r"index.json: expected an object"),
])
def test_malformed_released_files_are_named(tmp_path, csv_text, index, message):
    (tmp_path / "object_list.csv").write_text(csv_text)
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(ReleasedTagsError, match=message):
        import_released(tmp_path / "object_list.csv", tmp_path / "index.json", tmp_path / "out")
    assert not (tmp_path / "out/labels.sqlite").exists()


def _mirror_shards(root: Path, captions: list[str]) -> list[str]:
    """The pixparse/cc12m-wds layout: cc12m-train-NNNN.tar with <key>.jpg and <key>.txt only (no .json, no URL)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(3)
    keys = []
    for shard in range(2):
        with tarfile.open(root / f"cc12m-train-{shard:04d}.tar", "w") as archive:
            for index in range(shard * 6, shard * 6 + 6):
                key = f"{index:09d}"
                buffer = io.BytesIO()
                Image.fromarray(render_scene(rng, size=(32, 32)).image).save(buffer, format="JPEG")
                for suffix, data in ((".jpg", buffer.getvalue()), (".txt", captions[index].encode())):
                    info = tarfile.TarInfo(key + suffix)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
                keys.append(key)
    return keys


@pytest.mark.nltk
def test_hub_mirror_shards_parse_label_by_key_and_train(tmp_path, tiny_clip):
    from tagalign.models import TagAlign
    from tagalign.tags.merge import merge_parsed
    from tagalign.tags.parse import parse_captions
    from tagalign.tags.parsers import NLTKParser

    words = ["red square", "blue circle", "green triangle"]
    captions = [f"a {words[i % 3]} on the grass" for i in range(12)]
    keys = _mirror_shards(tmp_path / "cc12m-wds", captions)
    parse_captions([tmp_path / "cc12m-wds"], tmp_path / "tags", NLTKParser(), progress=False)
    merge_parsed(tmp_path / "tags")
    vocab = TagVocab.load(tmp_path / "tags/vocab.csv")
    from tagalign.models import get_tokenizer

    dataset = TagShardDataset(tmp_path / "cc12m-wds", tmp_path / "tags/labels.sqlite", transform=small_tensor,
                              tokenizer=get_tokenizer(tiny_clip), shuffle_buffer=0, world_size=1, rank=0)
    stream = iter(dataset)
    samples = [next(stream) for _ in range(12)]
    assert sorted(s["key"] for s in samples) == keys
    for sample in samples:  # every sample carries the tags of its own caption
        names = {vocab.tags[i] for i in sample["tag_ids"]}
        assert names >= set(captions[int(sample["key"])].split()[1:3]), (sample["key"], names)
    model = TagAlign(tiny_clip, tag_embeddings=torch.randn(len(vocab), 64))
    images = torch.nn.functional.interpolate(torch.stack([s["image"] for s in samples[:4]]), size=224)
    losses = model.loss(images, torch.stack([s["text"] for s in samples[:4]]), [s["tag_ids"] for s in samples[:4]])
    assert torch.isfinite(losses["loss_tag"]) and torch.isfinite(losses["loss_itc"])
    # released tags are keyed by URL: these shards have none, and that is said at once
    with pytest.raises(NoTrainingSamplesError, match=r"carry no URL .*pixparse/cc12m-wds"):
        TagShardDataset(tmp_path / "cc12m-wds", tmp_path / "tags/labels.sqlite", label_key="url", world_size=1,
                        rank=0)
