"""Every benchmark key through tools/test.py on its generated layout; mIoU recomputed from --save-preds PNGs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from seg_layouts import COCO_OBJECT_SUFFIX, LAYOUTS, write_layout

from tagalign.segmentation.benchmarks import BENCHMARKS, MissingDatasetError, resolve_data_root

ROOT = Path(__file__).resolve().parents[1]

# key -> (layout, label suffix, number of classes, reduce_zero_label)
EXPECTED = {
    "voc": ("voc", ".png", 21, False),
    "voc20": ("voc", ".png", 20, True),
    "context": ("context", ".png", 60, False),
    "context59": ("context", ".png", 59, True),
    "coco_object": ("coco_stuff164k", COCO_OBJECT_SUFFIX, 81, False),
    "coco_stuff": ("coco_stuff164k", "_labelTrainIds.png", 171, False),
    "cityscapes": ("cityscapes", "_gtFine_labelTrainIds.png", 19, False),
    "ade20k": ("ade20k", ".png", 150, True),
    "imagenets50": ("imagenets50", ".png", 51, False),
    "imagenets300": ("imagenets300", ".png", 301, False),
    "imagenets919": ("imagenets919", ".png", 920, False),
}


def _independent_miou(gt_dir: Path, gt_suffix: str, pred_dir: Path, pred_stem_suffix: str, classes: int,
                      reduce_zero: bool) -> tuple[float, int]:
    intersect, union = np.zeros(classes), np.zeros(classes)
    count = 0
    for gt_file in sorted(gt_dir.rglob(f"*{gt_suffix}")):
        if gt_suffix == ".png" and gt_file.name.endswith(("_labelTrainIds.png", COCO_OBJECT_SUFFIX)):
            continue
        gt = np.array(Image.open(gt_file)).astype(np.int64)
        ignore = 255
        if gt.ndim == 3:  # ImageNet-S: RGB-encoded labels, 1000 = ignore
            gt, ignore = gt[..., 1] * 256 + gt[..., 0], 1000
        if reduce_zero:
            gt = np.where(gt == 0, 255, gt - 1)
            gt[gt == 254] = 255
        stem = gt_file.name[: -len(gt_suffix)]
        pred = np.array(Image.open(pred_dir / f"{stem}{pred_stem_suffix}.png")).astype(np.int64)
        assert pred.shape == gt.shape
        valid = gt != ignore
        for c in range(classes):
            p, g = (pred == c) & valid, (gt == c) & valid
            intersect[c] += (p & g).sum()
            union[c] += (p | g).sum()
        count += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(intersect / union) * 100), count


@pytest.fixture(scope="module")
def all_layouts(tmp_path_factory):
    data_root = tmp_path_factory.mktemp("data")
    for seed, name in enumerate(LAYOUTS):
        write_layout(data_root, name, seed=seed)
    return data_root


def test_every_dataset_through_the_cli(all_layouts, tmp_path):
    out, preds = tmp_path / "results.json", tmp_path / "preds"
    env = {"TAGALIGN_EVAL_WORKERS": "0", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/test.py"), "--dataset", "all", "--data-root", str(all_layouts),
         "--clip", "tagalign-tiny", "--out", str(out), "--save-preds", str(preds), "--work-dir", str(tmp_path / "w")],
        capture_output=True, text=True, env={**env, "TAGALIGN_CACHE": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "with background" in result.stdout and "without background" in result.stdout
    results = json.loads(out.read_text())
    assert set(results) == set(EXPECTED)
    for key, (layout_name, suffix, classes, reduce_zero) in EXPECTED.items():
        layout = LAYOUTS[layout_name]
        gt_dir = all_layouts / layout.subdir / layout.seg_dir
        pred_suffix = "_leftImg8bit" if key == "cityscapes" else ""
        miou, count = _independent_miou(gt_dir, suffix, preds / key, pred_suffix, classes, reduce_zero)
        assert count == results[key]["num_images"] == 2, key
        assert len(results[key]["per_class_iou"]) == classes, key
        assert abs(results[key]["mIoU"] - miou) <= 1e-6, (key, results[key]["mIoU"], miou)


def test_missing_dataset_names_expected_path_and_doc(tmp_path):
    with pytest.raises(MissingDatasetError, match=r"VOC2012/JPEGImages.*docs/datasets.md#voc"):
        resolve_data_root(BENCHMARKS["voc"], tmp_path)
