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


def test_pc459_converter_writes_labelmap_minus_one_as_uint16(tmp_path):
    """CAT-Seg's prepare_pascal_context_459.py: LabelMap - 1 as TIFF; a 0 (unlabelled) wraps to 65535."""
    from scipy.io import savemat

    from tagalign.segmentation.convert_large_vocab import convert_pc459

    root = tmp_path / "VOC2010"
    (root / "trainval").mkdir(parents=True)
    label_map = np.array([[1, 256, 459], [0, 8, 300]], dtype=np.uint16)  # 256 -> class 255 ("monkey")
    savemat(root / "trainval" / "2008_000002.mat", {"LabelMap": label_map})
    savemat(root / "trainval" / "2008_000003.mat", {"LabelMap": label_map[::-1]})
    ids = tmp_path / "pascalcontext_val.txt"
    ids.write_text("2008_000002\n")
    assert convert_pc459(root, ids) == 1
    out = Image.open(root / "annotations_detectron2/pc459_val/2008_000002.tif")
    assert out.mode == "I;16" and np.asarray(out).tolist() == [[0, 255, 458], [65535, 7, 299]]
    assert convert_pc459(root, ids) == 0  # present: skipped
    assert not (root / "annotations_detectron2/pc459_val/2008_000003.tif").exists()  # not in the list


def test_ade847_converter_maps_object_ids_and_resizes_like_cat_seg(tmp_path):
    """CAT-Seg's prepare_ade20k_full.py: object id R/10*256+G -> train id, others 65535, validation images only,
    short side 512 when both sides exceed it (labels nearest)."""
    import pickle

    from tagalign.segmentation.convert_large_vocab import convert_ade847
    from tagalign.segmentation.large_vocab_classes import ADE847_SOURCE_IDS

    root = tmp_path / "ADE20K_2021_17_01"
    folder = "ADE20K_2021_17_01/images/ADE/validation/x"
    (tmp_path / folder).mkdir(parents=True)
    pier, wall = ADE847_SOURCE_IDS[255], ADE847_SOURCE_IDS[0]

    def encode(object_ids):
        seg = np.zeros((*object_ids.shape, 3), dtype=np.uint8)
        seg[..., 0] = object_ids // 256 * 10 + 3  # R/10 floors away the 3
        seg[..., 1] = object_ids % 256
        return seg

    small = np.full((40, 60), wall)
    small[:, 30:] = pier
    small[:5] = next(i for i in range(1, 4000) if i not in ADE847_SOURCE_IDS)  # an object outside the 847
    large = np.full((600, 900), pier)
    large[300:] = ADE847_SOURCE_IDS[846]
    for name, ids in (("ADE_val_00000001.jpg", small), ("ADE_val_00000002.jpg", large),
                      ("ADE_train_00000001.jpg", small)):
        Image.fromarray(np.full((*ids.shape, 3), 90, dtype=np.uint8)).save(tmp_path / folder / name)
        Image.fromarray(encode(ids)).save(tmp_path / folder / name.replace(".jpg", "_seg.png"))
    with open(root / "index_ade20k.pkl", "wb") as handle:
        pickle.dump({"folder": [folder] * 3, "filename": ["ADE_val_00000001.jpg", "ADE_val_00000002.jpg",
                                                          "ADE_train_00000001.jpg"]}, handle)
    assert convert_ade847(root) == 2
    labels = np.asarray(Image.open(root / "annotations_detectron2/validation/ADE_val_00000001.tif"))
    expected = np.where(small == pier, 255, 0)
    expected[:5] = 65535
    assert labels.dtype == np.uint16 and np.array_equal(labels, expected)
    resized = np.asarray(Image.open(root / "annotations_detectron2/validation/ADE_val_00000002.tif"))
    image = Image.open(root / "images_detectron2/validation/ADE_val_00000002.jpg")
    assert resized.shape == (512, 768) and image.size == (768, 512)
    assert set(np.unique(resized[:255])) == {255} and set(np.unique(resized[-255:])) == {846}
    assert not (root / "images_detectron2/validation/ADE_train_00000001.jpg").exists()
