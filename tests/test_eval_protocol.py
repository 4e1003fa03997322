"""Evaluation end to end for every dataset key, against the protocol written out in tests/eval_oracle.py.

The model is an oracle that reads the ground truth back from the generated images, so the reported mIoU is high
and depends on every step: label decoding, reduce_zero_label, ignore index, resize rule, normalisation, slide
windows, the background channel and its prompt, class names and their order, ImageNet-S's downsampling and
nearest-resized predictions. The expected mIoU comes from the test's own statement of reference spec §6.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_oracle import TEMPLATE, OracleModel, expected_prediction, miou, read_gt
from seg_layouts import COCO_OBJECT_SUFFIX, LAYOUTS, write_layout

import tagalign.segmentation.segmentor as segmentor_module
from tagalign.segmentation.evaluate import evaluate
from tagalign.segmentation.imagenets_classes import IMAGENETS50, IMAGENETS300, IMAGENETS919


def _mmseg_classes(name: str) -> tuple[str, ...]:
    import mmseg.datasets as datasets

    return tuple(getattr(datasets, name).METAINFO["classes"])


def _same(raw):
    return raw


def _reduce_zero(raw):
    return None if raw == 0 else raw - 1


def _coco_object(raw):
    return raw + 1 if raw < 80 else 0  # things 1..80, every stuff class is background


@dataclass(frozen=True)
class Case:
    layout: str
    classes: tuple[str, ...]
    to_class: object  # raw label -> dataset class index (None: ignored)
    short: int = 448
    long: int = 2048
    gt_suffix: str | None = None
    reduce_zero: bool = False


def _cases() -> dict[str, Case]:
    voc = _mmseg_classes("PascalVOCDataset")
    stuff = _mmseg_classes("COCOStuffDataset")
    return {
        "voc": Case("voc", voc, _same),
        "voc20": Case("voc", voc[1:], _reduce_zero, reduce_zero=True),
        "context": Case("context", _mmseg_classes("PascalContextDataset"), _same),
        "context59": Case("context", _mmseg_classes("PascalContextDataset59"), _reduce_zero, reduce_zero=True),
        "coco_object": Case("coco_stuff164k", ("background", *stuff[:80]), _coco_object,
                            gt_suffix=COCO_OBJECT_SUFFIX),
        "coco_stuff": Case("coco_stuff164k", stuff, _same),
        "cityscapes": Case("cityscapes", _mmseg_classes("CityscapesDataset"), _same),
        "ade20k": Case("ade20k", _mmseg_classes("ADE20KDataset"), _reduce_zero, reduce_zero=True),
        "imagenets50": Case("imagenets50", IMAGENETS50, _same),
        "imagenets300": Case("imagenets300", IMAGENETS300, _same),
        "imagenets919": Case("imagenets919", IMAGENETS919, _same, short=256, long=1024),
    }


@pytest.fixture(scope="module")
def benchmark_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    palettes = {name: write_layout(root, name, seed=seed + 10) for seed, name in enumerate(LAYOUTS)}
    return root, palettes


def _pairs(root: Path, case: Case):
    layout = LAYOUTS[case.layout]
    images = sorted((root / layout.subdir / layout.img_dir / layout.folder).glob(f"*{layout.img_suffix}"))
    for image in images:
        image_id = image.name[: -len(layout.img_suffix)]
        gt = root / layout.subdir / layout.seg_dir / layout.folder / f"{image_id}{case.gt_suffix or layout.seg_suffix}"
        yield image, gt


@pytest.mark.parametrize("key", list(_cases()))
def test_reported_miou_equals_the_protocol_written_out(key, benchmark_data, tmp_path, monkeypatch):
    root, palettes = benchmark_data
    case = _cases()[key]
    layout = LAYOUTS[case.layout]
    oracle = OracleModel(case.classes, {colour: case.to_class(raw) for raw, colour in palettes[case.layout].items()})
    monkeypatch.setattr(segmentor_module, "load", lambda *args, **kwargs: oracle)
    monkeypatch.setenv("TAGALIGN_EVAL_WORKERS", "0")
    result = evaluate(key, data_root=root, work_dir=tmp_path)

    with_background = case.classes[0] == "background"
    prompted = case.classes[1:] if with_background else case.classes
    text_emb = oracle.clip.encode_text(oracle.clip.tokenizer([TEMPLATE.format(name) for name in prompted]))
    ignore = 1000 if layout.rgb_label else 255
    pairs = []
    for image, gt_file in _pairs(root, case):
        gt = read_gt(gt_file, layout.rgb_label, case.reduce_zero)
        pred = expected_prediction(image, gt.shape, oracle, text_emb, with_background, case.short, case.long,
                                   imagenet_s=layout.rgb_label)
        pairs.append((pred, gt))
    expected = miou(pairs, len(case.classes), ignore)
    assert result["classes"] == list(case.classes)
    assert result["num_images"] == len(pairs) == 2
    assert expected > 40, "the oracle should segment the generated images well; the test data is off"
    assert abs(result["mIoU"] - expected) <= 1e-6, (key, result["mIoU"], expected)


def test_oracle_reads_colours_only_under_imagenet_statistics():
    """Guard on the oracle itself: CLIP's mean/std would make it read nothing."""
    from eval_oracle import IMAGENET_MEAN, IMAGENET_STD
    from seg_layouts import PALETTE

    oracle = OracleModel(["a", "b"], {PALETTE[0]: 0, PALETTE[-1]: 1})
    pixels = torch.tensor([PALETTE[0], PALETTE[-1]], dtype=torch.float32).T.reshape(1, 3, 1, 2)
    imagenet = (pixels - IMAGENET_MEAN.view(1, 3, 1, 1)) / IMAGENET_STD.view(1, 3, 1, 1)
    clip_mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1) * 255
    clip_std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1) * 255
    assert oracle.pixel_classes(imagenet).tolist() == [[[0, 1]]]
    assert oracle.pixel_classes((pixels - clip_mean) / clip_std).tolist() == [[[-1, -1]]]
    assert np.isfinite(miou([(np.zeros((2, 2)), np.zeros((2, 2)))], 2, 255))


@pytest.mark.parametrize("key", ["pc459", "ade847"])
def test_large_vocabularies_score_class_255_and_ignore_unlabelled(key, tmp_path, monkeypatch):
    """16-bit labels read unchanged: class 255 (PC459 "monkey", ADE847 "pier") is scored, the highest class id
    too, and the unlabelled values (PC459: 459 and 65535; ADE847: 65535) are left out of the IoU."""
    from seg_layouts import LARGE_LAYOUTS, write_large_vocab_layout

    from tagalign.segmentation.large_vocab_classes import ADE847, PC459

    classes = PC459 if key == "pc459" else ADE847
    subdir, _, seg_dir, drawn, unlabelled = LARGE_LAYOUTS[key]
    palette = write_large_vocab_layout(tmp_path / "data", key)
    oracle = OracleModel(classes, {colour: value for value, colour in palette.items()})
    monkeypatch.setattr(segmentor_module, "load", lambda *args, **kwargs: oracle)
    monkeypatch.setenv("TAGALIGN_EVAL_WORKERS", "0")
    result = evaluate(key, data_root=tmp_path / "data", work_dir=tmp_path / "w", inference=dict(map_budget_mb=8))

    text_emb = oracle.clip.encode_text(oracle.clip.tokenizer([TEMPLATE.format(name) for name in classes]))
    pairs = []
    images = sorted((tmp_path / "data" / subdir).rglob("*.jpg"))
    for image in images:
        gt = read_gt(tmp_path / "data" / subdir / seg_dir / f"{image.stem}.tif", rgb=False, reduce_zero=False)
        assert set(np.unique(gt)) >= {*drawn, *unlabelled}  # the edge values are really on disk
        gt = np.where(np.isin(gt, unlabelled), -1, gt)
        pairs.append((expected_prediction(image, gt.shape, oracle, text_emb, False, 448, 2048, False), gt))
    expected = miou(pairs, len(classes), -1)
    assert result["num_images"] == len(pairs) == 2 and result["classes"] == list(classes)
    assert expected > 40
    assert abs(result["mIoU"] - expected) <= 1e-6, (result["mIoU"], expected)
    scored = {index for index, iou in enumerate(result["per_class_iou"]) if iou is not None}
    assert scored == set(drawn) and result["per_class_iou"][255] > 50
