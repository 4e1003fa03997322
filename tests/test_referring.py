"""Referring segmentation: refer-format data, the CLI, per-sentence IoUs recomputed independently, metrics."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tagalign
from tagalign.data.synthetic import render_referring_scene, write_refer_dataset
from tagalign.errors import MissingDatasetError
from tagalign.models import TagAlign, load_clip, save_checkpoint
from tagalign.segmentation.referring import binarize, load_referring, referring_metrics

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ["val", "testA", "testB", "testA", "val", "testB"]


@pytest.fixture(scope="module")
def refer(tmp_path_factory):
    root = tmp_path_factory.mktemp("refer")
    candidates = [render_referring_scene(np.random.default_rng(i), size=(200, 240)) for i in range(40)]
    scenes = []
    for kind in ("square", "circle", "triangle"):  # two scenes of each kind: polygons, compressed and raw RLE
        scenes += [s for s in candidates if s.objects[0][1] == kind][:2]
    scenes = [scenes[i] for i in (0, 2, 4, 1, 3, 5)]
    write_refer_dataset(root, "refcoco", scenes, split=SPLITS)
    torch.manual_seed(0)
    torch.save(load_clip("tagalign-tiny").state_dict(), root / "clip.pt")
    model = TagAlign(load_clip("tagalign-tiny", str(root / "clip.pt")))
    with torch.no_grad():
        for unit in model.projector.units:
            unit.gate.fill_(0.3)
    save_checkpoint(model, root / "ckpt.pth")
    return root, scenes


def test_files_have_the_structure_the_refer_api_expects(refer):
    root, scenes = refer
    with open(root / "refcoco/refs(unc).p", "rb") as handle:
        refs = pickle.load(handle)
    instances = json.loads((root / "refcoco/instances.json").read_text())
    assert set(instances) == {"images", "annotations", "categories"}
    anns = {a["id"]: a for a in instances["annotations"]}
    imgs = {i["id"]: i for i in instances["images"]}
    kinds = set()
    for ref in refs:  # what REFER.createIndex / getMask read
        keys = {"ref_id", "ann_id", "image_id", "split", "sentences", "sent_ids", "category_id", "file_name"}
        assert keys <= set(ref)
        assert ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]]
        assert all({"sent_id", "sent", "raw", "tokens"} <= set(s) for s in ref["sentences"])
        assert anns[ref["ann_id"]]["image_id"] == ref["image_id"]
        assert imgs[ref["image_id"]]["file_name"] == ref["file_name"]
        assert (root / "images/mscoco/images/train2014" / ref["file_name"]).is_file()
        seg = anns[ref["ann_id"]]["segmentation"]
        kinds.add("polygon" if isinstance(seg, list) else "rle" if isinstance(seg["counts"], str) else "raw-rle")
    assert len(refs) == 2 * len(SPLITS) and {r["split"] for r in refs} == set(SPLITS)
    assert "polygon" in kinds and len(kinds) >= 2  # polygons and RLE


def test_masks_decode_to_the_generated_objects(refer):
    root, scenes = refer
    from tagalign.segmentation.referring import annotation_mask

    for sample in load_referring(root, "refcoco", "testA"):
        scene = scenes[sample.annotation["image_id"] - 100000]
        assert np.array_equal(annotation_mask(sample.annotation), scene.mask == sample.annotation["id"] % 10)


def test_cli_per_sentence_iou_equals_an_independent_computation(refer, tmp_path):
    root, scenes = refer
    out = tmp_path / "res.json"
    result = subprocess.run([sys.executable, str(ROOT / "tools/test.py"), "--dataset", "refcoco", "--split", "testA",
                             "--data-root", str(root), "--checkpoint", str(root / "ckpt.pth"), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "paper obj" in result.stdout and "17.52" in result.stdout  # Table-2 layout with the paper's testA number
    report = json.loads(out.read_text())
    model = tagalign.load(root / "ckpt.pth")
    ious = []
    for index, split in enumerate(SPLITS):
        if split != "testA":
            continue
        for k, (colour, shape) in enumerate(scenes[index].objects, start=1):
            truth = scenes[index].mask == k
            name = f"COCO_train2014_{100000 + index:012d}.jpg"
            image = np.asarray(Image.open(root / "images/mscoco/images/train2014" / name))
            for text in (f"{colour} {shape}", f"the {colour} {shape}"):
                pred = tagalign.segment(model, image, [text], templates=("{}",)).labels == 1
                inter, union = (pred & truth).sum(), (pred | truth).sum()
                ious.append(inter / union if union else 0.0)
    got = [s["iou"] for s in report["per_sentence"]]
    assert len(got) == len(ious) == 8
    assert np.allclose(got, ious, atol=1e-6)
    assert report["mIoU"] == pytest.approx(100 * np.mean(ious), abs=1e-6)


def test_background_binarisation_equals_the_expression_against_a_background_prompt(refer, tmp_path):
    """--binarize background: a pixel is in the mask iff the expression is more probable there than the prompt
    'background'. Stated here through segment() into the two texts, without the constant background channel."""
    root, scenes = refer
    out = tmp_path / "res.json"
    result = subprocess.run([sys.executable, str(ROOT / "tools/test.py"), "--dataset", "refcoco", "--split", "val",
                             "--data-root", str(root), "--checkpoint", str(root / "ckpt.pth"), "--out", str(out),
                             "--binarize", "background"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    model = tagalign.load(root / "ckpt.pth")
    ious, sizes = [], []
    for index, split in enumerate(SPLITS):
        if split != "val":
            continue
        name = f"COCO_train2014_{100000 + index:012d}.jpg"
        image = np.asarray(Image.open(root / "images/mscoco/images/train2014" / name))
        for k, (colour, shape) in enumerate(scenes[index].objects, start=1):
            truth = scenes[index].mask == k
            for text in (f"{colour} {shape}", f"the {colour} {shape}"):
                pred = tagalign.segment(model, image, [text, "background"], background=False,
                                        templates=("{}",)).labels == 0
                sizes.append(pred.mean())
                inter, union = (pred & truth).sum(), (pred | truth).sum()
                ious.append(inter / union if union else 0.0)
    assert report["binarize"] == "background" and len(ious) == 8
    assert min(sizes) > 0.0 and max(sizes) < 1.0  # neither empty nor everything: the comparison decides
    assert np.allclose([s["iou"] for s in report["per_sentence"]], ious, atol=1e-6)


def test_metrics_and_binarisation():
    metrics = referring_metrics([1, 0, 5], [2, 0, 5])
    assert metrics["mIoU"] == pytest.approx(100 * 1.5 / 3) and metrics["oIoU"] == pytest.approx(100 * 6 / 7)
    assert metrics["precision@0.5"] == pytest.approx(100 * 2 / 3) and metrics["num_expressions"] == 3
    probability = torch.tensor([[0.1, 0.2], [0.3, 0.5]])
    assert binarize(probability, "threshold", 0.25).tolist() == [[False, False], [True, True]]
    assert binarize(probability, "minmax", 0.4).tolist() == [[False, False], [True, True]]
    background = torch.tensor([[0.05, 0.3], [0.3, 0.6]])
    assert binarize(probability, "background", 0.4, background).tolist() == [[True, False], [False, False]]
    with pytest.raises(ValueError, match="background prompt"):
        binarize(probability, "background", 0.4)


def test_missing_files_and_bad_splits_are_clear_errors(refer, tmp_path):
    with pytest.raises(MissingDatasetError, match=r"refs\(umd\)\.p"):
        load_referring(tmp_path, "refcocog", "val")
    with pytest.raises(ValueError, match="splits"):
        load_referring(refer[0], "refcoco", "test")


def test_two_processes_give_the_single_process_result(refer, tmp_path):
    """--launcher pytorch shards the images over 2 gloo processes; merged metrics equal one process's."""
    root, _ = refer
    base = [str(ROOT / "tools/test.py"), "--dataset", "refcoco", "--split", "val", "--data-root", str(root),
            "--checkpoint", str(root / "ckpt.pth")]
    single = subprocess.run([sys.executable, *base, "--out", str(tmp_path / "one.json")], capture_output=True,
                            text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519"]
    double = subprocess.run([*launch, *base, "--launcher", "pytorch", "--out", str(tmp_path / "two.json")],
                            capture_output=True, text=True, env=env)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["num_expressions"] == two["num_expressions"] == 8
    for key in ("mIoU", "oIoU", "precision@0.5"):
        assert two[key] == pytest.approx(one[key], abs=1e-9), key
    assert [r["sent_id"] for r in two["per_sentence"]] == [r["sent_id"] for r in one["per_sentence"]]
    assert np.allclose([r["iou"] for r in two["per_sentence"]], [r["iou"] for r in one["per_sentence"]], atol=1e-9)


@pytest.mark.parametrize("flags", [["--protocol", "sclip"], ["--encoder", "all"], ["--preset", "naclip"]])
def test_semantic_only_flags_are_refused_for_referring(flags, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools/test.py"), "--dataset", "refcoco", "--data-root",
                             str(tmp_path), *flags], capture_output=True, text=True)
    assert result.returncode != 0
    assert "referring segmentation has one protocol" in result.stderr
