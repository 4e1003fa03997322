"""COCO-Object conversion: raw stuffthingmaps and mmseg train ids give the same 0..80 labels."""

from __future__ import annotations

import numpy as np
from killed_writer import kill_mid_write
from PIL import Image

from tagalign.segmentation.convert import COCO_THING_IDS, coco_object_labels, convert_coco_object


def test_raw_and_trainid_sources_agree(tmp_path):
    rng = np.random.default_rng(0)
    raw_values = np.array([i - 1 for i in COCO_THING_IDS] + list(range(91, 182)) + [255])
    raw = rng.choice(raw_values, size=(40, 50)).astype(np.uint8)
    # mmseg's coco_stuff164k converter: raw things in order -> 0..79, raw stuff 91..181 -> 80..170, 255 stays
    to_trainid = {v: i for i, v in enumerate(raw_values[:-1])}
    trainids = np.vectorize(lambda v: to_trainid.get(int(v), 255))(raw).astype(np.uint8)
    Image.fromarray(raw).save(tmp_path / "000000000139.png")
    Image.fromarray(trainids).save(tmp_path / "000000000139_labelTrainIds.png")

    assert convert_coco_object(tmp_path, "trainids") == 1
    from_trainids = np.array(Image.open(tmp_path / "000000000139_instanceTrainIds.png"))
    from_raw = coco_object_labels(raw, "raw")
    assert np.array_equal(from_trainids, from_raw)
    person, toothbrush = raw == 0, raw == 89  # COCO ids 1 and 90
    assert (from_raw[person] == 1).all() and (from_raw[toothbrush] == 80).all()
    assert (from_raw[(raw >= 91)] == 0).all()  # stuff and unlabelled -> background
    assert set(np.unique(from_raw)) <= set(range(81))
    assert convert_coco_object(tmp_path, "trainids") == 0  # resumable: existing outputs are skipped


def test_a_conversion_killed_mid_write_resumes_without_reading_its_leftover(tmp_path):
    rng = np.random.default_rng(1)
    raw_values = np.array([i - 1 for i in COCO_THING_IDS] + list(range(91, 182)) + [255])
    raw = rng.choice(raw_values, size=(30, 20)).astype(np.uint8)
    Image.fromarray(raw).save(tmp_path / "000000000285.png")
    kill_mid_write(tmp_path / "000000000285_instanceTrainIds.png", b"\x89PNG half a file")
    assert len(list(tmp_path.iterdir())) == 2  # the raw map and the killed write's temporary (also a .png)

    assert convert_coco_object(tmp_path, "raw") == 1  # the leftover is neither a source nor a finished output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000000285.png", "000000000285_instanceTrainIds.png"]
    written = np.array(Image.open(tmp_path / "000000000285_instanceTrainIds.png"))
    things = {raw_id + 1: index + 1 for index, raw_id in enumerate(raw_values[:80])}  # COCO id -> 1..80
    assert np.array_equal(written, np.vectorize(lambda v: things.get(int(v) + 1, 0))(raw))
