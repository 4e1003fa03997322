"""Every benchmark key through tools/test.py on its generated layout; mIoU recomputed from --save-preds PNGs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from seg_layouts import COCO_OBJECT_SUFFIX, LAYOUTS, write_layout

from tagalign.errors import MissingDatasetError
from tagalign.models import ENCODERS
from tagalign.segmentation.benchmarks import BENCHMARKS, resolve_data_root

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
def one_image_layouts(tmp_path_factory):
    """One image of an ordinary size per layout (tests/test_eval_protocol.py covers several images, ImageNet-S's
    downsampled large image and the long-side cap)."""
    data_root = tmp_path_factory.mktemp("data1")
    for seed, name in enumerate(LAYOUTS):
        write_layout(data_root, name, num_images=1, seed=seed, special_sizes=False)
    return data_root


@pytest.fixture(scope="module")
def tiny_clip_file(tiny_clip, tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(tiny_clip.state_dict(), path)
    return str(path)


def _run_test_tool(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"TAGALIGN_EVAL_WORKERS": "0", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "TAGALIGN_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, str(ROOT / "tools/test.py"), *args], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# the SCLIP family's resize (spec §10.3); other keys keep the dataset's own short side
SCLIP_SHORT_SIDE = {"voc": 336, "voc20": 336, "context": 336, "context59": 336, "coco_object": 336,
                    "coco_stuff": 448, "cityscapes": 560, "ade20k": 336}


# the tagalign protocol on every dataset key is tests/test_eval_protocol.py's; here every encoder meets one dataset of
# each kind (background, reduced zero label, Cityscapes' names, ImageNet-S's RGB labels) under it. Under sclip: every
# key but ImageNet-S300, whose layout, loader and settings are ImageNet-S50's and -919's (ResCLIP's per-window PAMR
# on its 301 queries and 18 windows would be a fifth of this test)
PROTOCOL_DATASETS = {"sclip": "voc,voc20,context,context59,coco_object,coco_stuff,cityscapes,ade20k,imagenets50,"
                              "imagenets919",
                     "tagalign": "voc,context59,cityscapes,imagenets50"}


@pytest.mark.parametrize("protocol", ["tagalign", "sclip"])
def test_every_encoder_on_every_dataset_under_each_protocol(protocol, one_image_layouts, tiny_clip_file, tmp_path):
    """tools/test.py --dataset K1,K2,... --encoder all --protocol P: each encoder's mIoU equals the one recomputed
    from its saved label maps, for the dataset keys above; the comparison table has a row per encoder."""
    out, preds = tmp_path / "cmp.json", tmp_path / "preds"
    datasets = PROTOCOL_DATASETS[protocol]
    expected_keys = set(datasets.split(","))
    args = ["--dataset", datasets, "--encoder", "all", "--protocol", protocol, "--data-root", str(one_image_layouts),
            "--clip", "tagalign-tiny", "--pretrained", tiny_clip_file, "--out", str(out), "--save-preds", str(preds),
            "--work-dir", str(tmp_path / "w"), "--vfm-weights", "tiny"]  # proxyclip's DINO: a tiny random one
    if protocol == "sclip":  # 80 templates x 920 ImageNet-S names is a minute of CPU; tests/test_protocols.py
        args += ["--prompt-set", "simple"]  # checks the 80-template embedding
    result = _run_test_tool(args, tmp_path)
    results = json.loads(out.read_text())
    assert list(results) == list(ENCODERS)
    for encoder, per_dataset in results.items():
        assert set(per_dataset) == expected_keys, encoder
        for key in sorted(expected_keys):
            layout_name, suffix, classes, reduce_zero = EXPECTED[key]
            layout = LAYOUTS[layout_name]
            gt_dir = one_image_layouts / layout.subdir / layout.seg_dir
            pred_suffix = "_leftImg8bit" if key == "cityscapes" else ""
            miou, count = _independent_miou(gt_dir, suffix, preds / encoder / key, pred_suffix, classes,
                                            reduce_zero)
            run = per_dataset[key]
            assert count == run["num_images"] == 1, (encoder, key)
            assert len(run["per_class_iou"]) == classes, (encoder, key)
            assert abs(run["mIoU"] - miou) <= 1e-6, (encoder, key, run["mIoU"], miou)
            settings = run["settings"]
            assert run["encoder"] == encoder and settings["inference"]["protocol"] == protocol
            assert settings["norm"] == ("model" if protocol == "sclip" else "imagenet")
            expected_short = SCLIP_SHORT_SIDE.get(key) if protocol == "sclip" else None
            assert settings["short_side"] == expected_short, (encoder, key)
            assert settings["inference"]["feature_surgery"] is (encoder == "clip_surgery")
    table = out.with_suffix(".md").read_text()
    rows = table.splitlines()[2:2 + len(ENCODERS)]
    assert [line.split("|")[1].strip() for line in rows] == list(ENCODERS)
    assert table.splitlines()[0].endswith("| average | s/image | peak MB |")
    for line, (encoder, per_dataset) in zip(rows, results.items()):
        seconds, peak = (float(cell.replace(",", "")) for cell in line.split("|")[-3:-1])
        runs = per_dataset.values()
        assert peak == round(max(r["peak_memory_mb"] for r in runs)) > 100, encoder  # the process holds torch
        assert seconds > 0 and abs(seconds - sum(r["seconds_per_image"] for r in runs) / len(runs)) < 1e-3
    assert "| naclip | " in table and "(58.9)" in table  # NACLIP's published VOC number without PAMR
    assert "clip_surgery" in result.stdout and "wrote" in result.stdout


def test_one_encoder_prints_its_published_numbers_and_resumes(one_image_layouts, tiny_clip_file, tmp_path):
    out = tmp_path / "naclip.json"
    args = ["--dataset", "voc20", "--preset", "naclip", "--data-root", str(one_image_layouts), "--clip",
            "tagalign-tiny", "--pretrained", tiny_clip_file, "--out", str(out), "--work-dir", str(tmp_path / "w"),
            "--prompt-set", "simple"]
    result = _run_test_tool(args, tmp_path)
    run = json.loads(out.read_text())["voc20"]
    assert run["encoder"] == "naclip" and run["settings"]["inference"]["mode"] == "whole"
    assert run["settings"]["inference"]["pamr"] is True
    assert "published: NACLIP README, PAMR on" in result.stdout
    assert f"{run['mIoU']:>8.2f}{83.03:>11.2f}" in result.stdout  # ours beside the README's VOC20 number
    # --resume: the stored result is reused while the settings are the same, recomputed once one changes
    again = _run_test_tool([*args, "--resume"], tmp_path)
    assert "voc20: mIoU" in again.stdout and "reused from the earlier run" in again.stdout
    assert json.loads(out.read_text())["voc20"] == run
    changed = _run_test_tool([*args, "--resume", "--logit-scale", "30"], tmp_path)
    assert "reused" not in changed.stdout and "over 1 images" in changed.stdout
    assert json.loads(out.read_text())["voc20"]["settings"]["inference"]["logit_scale"] == 30.0


def test_proxyclip_preset_runs_its_protocol_with_its_second_model(one_image_layouts, tiny_clip_file, tmp_path):
    """--preset proxyclip: 336/112 windows padded to 56, τ 40, prob_thd 0.2 on VOC, ProxyCLIP's names; the second model
    (a tiny DINO ViT-B/8) is recorded; the published number is printed beside ours; mIoU recomputed from the labels."""
    out, preds = tmp_path / "proxy.json", tmp_path / "preds"
    result = _run_test_tool(["--dataset", "voc", "--preset", "proxyclip", "--vfm-weights", "tiny", "--data-root",
                             str(one_image_layouts), "--clip", "tagalign-tiny", "--pretrained", tiny_clip_file,
                             "--out", str(out), "--save-preds", str(preds), "--work-dir", str(tmp_path / "w"),
                             "--prompt-set", "simple"], tmp_path)
    run = json.loads(out.read_text())["voc"]
    inference = run["settings"]["inference"]
    assert run["encoder"] == "proxyclip"
    assert (inference["crop"], inference["stride"], inference["pad_to"], inference["logit_scale"],
            inference["prob_thd"]) == (336, 112, 56, 40.0, 0.2)
    assert run["settings"]["class_names"] == "proxyclip" and run["settings"]["model"]["vfm_weights"] == "tiny"
    assert f"{run['mIoU']:>8.2f}{61.3:>11.2f}" in result.stdout
    layout = LAYOUTS["voc"]
    miou, _ = _independent_miou(one_image_layouts / layout.subdir / layout.seg_dir, ".png", preds / "voc", "", 21,
                                False)
    assert abs(run["mIoU"] - miou) <= 1e-6
    refused = subprocess.run([sys.executable, str(ROOT / "tools/test.py"), "--dataset", "voc", "--encoder", "sclip",
                              "--vfm", "dino_vitb8"], capture_output=True, text=True)
    assert refused.returncode != 0 and "reads no second vision model" in refused.stderr


def test_lposs_plus_preset_propagates_with_its_second_model(one_image_layouts, tiny_clip_file, tmp_path):
    """--preset lposs_plus: MaskCLIP's tokens, slide 224/112, LPOSS over the windows with a tiny DINO ViT-B/16 and
    LPOSS+ over the pixels; both and the second model are recorded; mIoU recomputed from the labels, and the
    propagation changes them (short side 224 instead of 448: a CPU test)."""
    runs = {}
    for flags in (["--preset", "lposs_plus", "--lposs-vfm-weights", "tiny"], ["--preset", "lposs", "--no-lposs"]):
        out, preds = tmp_path / f"{flags[1]}.json", tmp_path / flags[1]
        _run_test_tool(["--dataset", "context59", *flags, "--short-side", "224", "--data-root",
                        str(one_image_layouts), "--clip", "tagalign-tiny", "--pretrained", tiny_clip_file, "--out",
                        str(out), "--save-preds", str(preds), "--work-dir", str(tmp_path / "w"), "--prompt-set",
                        "simple"], tmp_path)
        runs[flags[1]] = run = json.loads(out.read_text())["context59"]
        layout_name, suffix, classes, reduce_zero = EXPECTED["context59"]
        layout = LAYOUTS[layout_name]
        miou, _ = _independent_miou(one_image_layouts / layout.subdir / layout.seg_dir, suffix,
                                    preds / "context59", "", classes, reduce_zero)
        assert abs(run["mIoU"] - miou) <= 1e-6
    plus, plain = runs["lposs_plus"], runs["lposs"]
    assert plus["encoder"] == plain["encoder"] == "maskclip"
    inference = plus["settings"]["inference"]
    assert (inference["lposs"], inference["lposs_plus"], inference["crop"], inference["stride"]) == (True, True, 224,
                                                                                                      112)
    assert plus["settings"]["model"]["lposs_vfm_weights"] == "tiny"
    assert plain["settings"]["inference"]["lposs"] is False
    assert plus["per_class_iou"] != plain["per_class_iou"]


def test_cass_preset_adjusts_the_queries_per_window(one_image_layouts, tiny_clip_file, tmp_path):
    """--preset cass on ADE20K with a tiny DINO ViT-B/8: its text adjustment with ADE20K's (g_w, α, cut) recorded,
    CASS's published number beside ours, mIoU recomputed from the labels (short side 224: a CPU test)."""
    out, preds = tmp_path / "cass.json", tmp_path / "preds"
    result = _run_test_tool(["--dataset", "ade20k", "--preset", "cass", "--vfm-weights", "tiny", "--short-side", "224",
                             "--data-root", str(one_image_layouts), "--clip", "tagalign-tiny", "--pretrained",
                             tiny_clip_file, "--out", str(out), "--save-preds", str(preds), "--work-dir",
                             str(tmp_path / "w"), "--prompt-set", "simple"], tmp_path)
    run = json.loads(out.read_text())["ade20k"]
    inference = run["settings"]["inference"]
    assert run["encoder"] == "cass" and inference["cass_adjust"] is True
    assert (inference["cass_global_weight"], inference["cass_alpha"], inference["cass_cluster_threshold"]) == (
        0.30, 0.05, 0.06)
    assert f"{run['mIoU']:>8.2f}{20.4:>11.2f}" in result.stdout
    layout_name, suffix, classes, reduce_zero = EXPECTED["ade20k"]
    layout = LAYOUTS[layout_name]
    miou, _ = _independent_miou(one_image_layouts / layout.subdir / layout.seg_dir, suffix, preds / "ade20k", "",
                                classes, reduce_zero)
    assert abs(run["mIoU"] - miou) <= 1e-6


def test_trident_preset_aggregates_with_sam_over_the_image(one_image_layouts, tiny_clip_file, tmp_path):
    """--preset trident with a tiny DINO ViT-B/16 and a tiny SAM: ProxyCLIP's windows (mean over all of them), one
    SAM pass, Trident's published number beside ours, mIoU recomputed from the labels (224 windows: a CPU test)."""
    out, preds = tmp_path / "trident.json", tmp_path / "preds"
    result = _run_test_tool(["--dataset", "voc", "--preset", "trident", "--vfm-weights", "tiny", "--sam-weights",
                             "tiny", "--short-side", "224", "--crop", "224", "--stride", "112", "--data-root",
                             str(one_image_layouts), "--clip", "tagalign-tiny", "--pretrained", tiny_clip_file,
                             "--out", str(out), "--save-preds", str(preds), "--work-dir", str(tmp_path / "w"),
                             "--prompt-set", "simple"], tmp_path)
    run = json.loads(out.read_text())["voc"]
    settings = run["settings"]
    assert run["encoder"] == "proxyclip" and settings["inference"]["trident"] is True
    assert settings["model"]["vfm"] == "dino_vitb16" and settings["model"]["sam_weights"] == "tiny"
    assert settings["model"]["encoder_options"] == {"batch_mean": True}
    assert f"{run['mIoU']:>8.2f}{67.1:>11.2f}" in result.stdout
    miou, _ = _independent_miou(one_image_layouts / LAYOUTS["voc"].subdir / LAYOUTS["voc"].seg_dir, ".png",
                                preds / "voc", "", 21, False)
    assert abs(run["mIoU"] - miou) <= 1e-6


def test_missing_dataset_names_expected_path_and_doc(tmp_path):
    with pytest.raises(MissingDatasetError, match=r"VOC2012/JPEGImages.*docs/datasets.md#voc"):
        resolve_data_root(BENCHMARKS["voc"], tmp_path)


def test_descriptions_prompt_the_class_names_they_describe(one_image_layouts, tiny_clip_file, tmp_path):
    """--descriptions reaches the segmentor: when all 20 classes are described by one same text, every class scores
    alike and the whole image gets one label; the run records the file in its settings."""
    from tagalign.models.description_file import write_descriptions

    names = [f"class{i}" for i in range(20)]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    write_descriptions(tmp_path / "d.json", {name: ["a photo of a dog."] for name in names})
    args = ["--dataset", "voc20", "--data-root", str(one_image_layouts), "--clip", "tagalign-tiny", "--pretrained",
            tiny_clip_file, "--class-names", str(tmp_path / "names.txt"), "--out", str(tmp_path / "r.json"),
            "--work-dir", str(tmp_path / "w"), "--mode", "whole", "--save-preds", str(tmp_path / "preds")]
    _run_test_tool([*args, "--descriptions", str(tmp_path / "d.json")], tmp_path)
    preds = [np.array(Image.open(p)) for p in (tmp_path / "preds").rglob("*.png")]
    assert preds and all(len(np.unique(p)) == 1 for p in preds)
    settings = json.loads((tmp_path / "r.json").read_text())["voc20"]["settings"]
    assert settings["descriptions"] == str(tmp_path / "d.json")
    _run_test_tool(args, tmp_path)  # without them the class names differ and so do the labels
    assert any(len(np.unique(np.array(Image.open(p)))) > 1 for p in (tmp_path / "preds").rglob("*.png"))


def test_large_vocabularies_under_the_sclip_protocol(tiny_clip_file, tmp_path):
    """tools/test.py --dataset pc459,ade847 --protocol sclip: 16-bit label maps saved and rescored here, class
    255 and the highest class scored, unlabelled values left out; the class maps are walked in chunks."""
    from seg_layouts import LARGE_LAYOUTS, write_large_vocab_layout

    for seed, key in enumerate(LARGE_LAYOUTS):
        write_large_vocab_layout(tmp_path / "data", key, num_images=1, seed=seed)
    out, preds = tmp_path / "large.json", tmp_path / "preds"
    result = _run_test_tool(["--dataset", "pc459,ade847", "--protocol", "sclip", "--encoder", "sclip",
                             "--prompt-set", "simple", "--map-budget-mb", "4", "--data-root", str(tmp_path / "data"),
                             "--clip", "tagalign-tiny", "--pretrained", tiny_clip_file, "--out", str(out),
                             "--save-preds", str(preds), "--save-logits", str(tmp_path / "logits"),
                             "--work-dir", str(tmp_path / "w")], tmp_path)
    results = json.loads(out.read_text())
    assert list(results) == ["pc459", "ade847"]
    assert "chunk(s) of up to" in result.stdout + result.stderr
    for key, (subdir, _, seg_dir, _, unlabelled) in LARGE_LAYOUTS.items():
        gt_file = next((tmp_path / "data" / subdir / seg_dir).glob("*.tif"))
        gt = np.asarray(Image.open(gt_file)).astype(np.int64)
        pred = np.asarray(Image.open(preds / key / f"{gt_file.stem}.png")).astype(np.int64)
        classes = len(results[key]["per_class_iou"])
        valid = ~np.isin(gt, unlabelled)
        ious = []
        for c in range(classes):
            union = (((pred == c) | (gt == c)) & valid).sum()
            if union:
                ious.append((((pred == c) & (gt == c)) & valid).sum() / union)
        assert abs(results[key]["mIoU"] - 100 * np.mean(ious)) <= 1e-6, key
        assert results[key]["per_class_iou"][255] is not None and results[key]["settings"]["short_side"] is None
        assert classes == (459 if key == "pc459" else 847)
        maps = np.load(tmp_path / "logits" / key / f"{gt_file.stem}.npy").astype(np.float32)  # --save-logits
        assert maps.shape == (classes, *gt.shape) and np.allclose(maps.sum(0), 1, atol=0.05)  # softmax, float16
        top2 = np.sort(maps, axis=0)[-2:]
        decided = top2[1] - top2[0] > 1e-2
        assert decided.mean() > 0.5 and np.array_equal(maps.argmax(0)[decided], pred[decided])


@pytest.mark.parametrize("family", ["siglip", "pe_core", "eva02"])
def test_encoder_all_on_each_tower_family(family, one_image_layouts, tmp_path):
    """tools/test.py --dataset voc --clip <tiny tower of the family> --encoder all: every encoder defined on the
    tower runs and its mIoU is the one recomputed from its saved labels; clip_surgery (bilinear resize of open_clip's
    own table) is not defined on timm towers and gets a row that says so."""
    from test_towers import TIMM_FAMILIES, _tiny

    name = TIMM_FAMILIES[family]
    weights = tmp_path / f"{family}.pt"
    torch.save(_tiny(name, seed=40).state_dict(), weights)
    out, preds = tmp_path / "cmp.json", tmp_path / "preds"
    result = _run_test_tool(["--dataset", "voc", "--encoder", "all", "--protocol", "sclip", "--prompt-set", "simple",
                             "--data-root", str(one_image_layouts), "--clip", name, "--pretrained", str(weights),
                             "--out", str(out), "--save-preds", str(preds), "--work-dir", str(tmp_path / "w"),
                             "--vfm-weights", "tiny"], tmp_path)
    results = json.loads(out.read_text())
    undefined = {"clip_surgery"} | ({"sc_clip"} if family == "siglip" else set())  # no CLS token to add
    assert list(results) == [e for e in ENCODERS if e not in undefined]
    layout = LAYOUTS["voc"]
    for encoder, per_dataset in results.items():
        miou, count = _independent_miou(one_image_layouts / layout.subdir / layout.seg_dir, ".png",
                                        preds / encoder / "voc", "", 21, False)
        assert count == per_dataset["voc"]["num_images"] == 1
        assert abs(per_dataset["voc"]["mIoU"] - miou) <= 1e-6, encoder
    table = out.with_suffix(".md").read_text()
    reason = f"positional resize 'bilinear' is not defined on the {family} tower family"
    assert f"| clip_surgery | - | not run: {reason}" in table
    assert "skipped" in result.stdout
