"""Constants and ordering rules that decide results without showing in any shape, each stated as its source has it.

One table-driven test per family of constants (inference defaults, protocol bases and presets, losses, tagging,
projector), plus the rules that need a worked case: the SCLIP family's ``area_thd``, the re-weighting query under the
dense scorings, the vocabulary's tie-break and its independence of parse sharding, repeated label keys, tag
normalisation's leading words, and RAM's float64 threshold comparison.
"""

from __future__ import annotations

import csv
import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tagalign.segmentation.inference import InferenceConfig
from tagalign.segmentation.label_maps import small_classes
from tagalign.segmentation.protocols import protocol_settings

# ---------------------------------------------------------------------------------------- families of constants
# reference spec §6 (TagAlign's evaluation), training-free spec §3/§5/§10 (the SCLIP family), TCL's PAMR
INFERENCE_DEFAULTS = {
    "mode": "slide", "crop": 448, "stride": 224, "crop_batch": 16, "clip_w": 0.3, "scale": 10.0, "bias": -2.5,
    "bg_thresh": 0.4, "precision": "fp32", "pamr": False, "pamr_iter": 10, "pamr_dilations": (1, 2, 4, 8, 12, 24),
    "pamr_stride": 4, "score": "sigmoid", "mix": "probabilities", "feature_surgery": False, "protocol": "tagalign",
    "logit_scale": 40.0, "prob_thd": 0.0, "area_thd": None, "pad_to": 0,
    "map_budget_mb": 256.0,  # not a result setting: labels are the same under any budget (tests/test_class_chunks.py)
    # LPOSS (spec-2 §6, configs/lposs*.yaml): α, k, σ, γ, τ, the pixel window
    "lposs": False, "lposs_plus": False, "lposs_alpha": 0.95, "lposs_k": 400, "lposs_sigma": 0.01, "lposs_gamma": 3.0,
    "lposs_tau": 0.01, "lposs_radius": 13,
    # CASS's text adjustment (spec-2 §4, §10): its Context59 config's α, g_w and cluster cut
    "cass_adjust": False, "cass_alpha": 0.04, "cass_global_weight": 0.25, "cass_cluster_threshold": 0.09,
    "cass_crop_cls": False,
    # Trident (spec-2 §5): cos_fac 1.2 and refine_neg_cos on, its base_config's
    "trident": False, "trident_cos_fac": 1.2, "trident_refine_neg_cos": True,
}


def test_every_inference_default_is_pinned():
    config = InferenceConfig()
    fields = {name: getattr(config, name) for name in config.__dataclass_fields__}
    assert fields == INFERENCE_DEFAULTS


# (protocol, preset, dataset) -> inference fields that must hold; a dataset outside the table gets the family base
PROTOCOL_CASES = {
    # SCLIP's own defaults (cfg_*.py base): τ 40, prob_thd 0, slide 224/112, no PAMR, no area_thd
    ("sclip", None, "imagenets50"): dict(logit_scale=40.0, prob_thd=0.0, crop=224, stride=112, pamr=False,
                                         area_thd=None),
    ("sclip", None, "ade20k"): dict(logit_scale=40.0, prob_thd=0.0, area_thd=None),
    ("sclip", None, "voc"): dict(logit_scale=65.0, prob_thd=0.1, area_thd=0.1),
    # NACLIP: PAMR on everywhere, 10 iterations, dilations (8, 16), τ 40
    ("sclip", "naclip", "voc"): dict(pamr=True, pamr_iter=10, pamr_dilations=(8, 16), logit_scale=40.0),
    ("sclip", "naclip", "ade20k"): dict(pamr=True, pamr_iter=10, pamr_dilations=(8, 16), logit_scale=40.0),
    ("sclip", "naclip", "imagenets50"): dict(pamr=True, pamr_iter=10, pamr_dilations=(8, 16), logit_scale=40.0),
    # ClearCLIP and SCLIP: no PAMR
    ("sclip", "clearclip", "voc"): dict(pamr=False, logit_scale=50.0, pad_to=16, area_thd=None),
    ("sclip", "sclip", "context"): dict(pamr=False, logit_scale=50.0),
    # TagAlign's family: the InferenceConfig defaults, nothing overridden
    ("tagalign", None, "voc"): {},
    ("tagalign", "tagalign", "ade20k"): {},
}


@pytest.mark.parametrize("case", list(PROTOCOL_CASES), ids=lambda c: "-".join(str(x) for x in c))
def test_protocol_and_preset_values_resolve_as_the_spec_states(case):
    protocol, preset, key = case
    inference = InferenceConfig(**protocol_settings(key, protocol, preset)["inference"])
    for name, value in PROTOCOL_CASES[case].items():
        assert getattr(inference, name) == value, (case, name)
    if protocol == "tagalign":
        assert inference == InferenceConfig()


def test_loss_tagging_and_projector_constants():
    from tagalign.models import tagalign as tagalign_model
    from tagalign.models.losses import ImageTextContrastiveLoss, LearnableTemperature, TagClassificationLoss
    from tagalign.models.projector import GatedConvUnit
    from tagalign.models.text import RAM_REWEIGHT_SCALE
    from tagalign.tagging import evaluate

    # reference spec §4-§5: softmax tag loss, both weights 1, clamp 1e-8, two temperatures from 1/0.07 capped at 100
    assert tagalign_model._LOSS_DEFAULTS == {"tag_mode": "softmax", "itc_weight": 1.0, "tag_weight": 1.0,
                                             "prob_clamp": 1e-8, "shared_temperature": False}
    temperature = LearnableTemperature()
    assert math.isclose(temperature().item(), 1 / 0.07, rel_tol=1e-6) and temperature.max_scale == 100.0
    assert math.isclose(ImageTextContrastiveLoss().temperature().item(), 1 / 0.07, rel_tol=1e-6)
    tag_loss = TagClassificationLoss()
    assert tag_loss.mode == "softmax" and math.isclose(tag_loss.temperature().item(), 1 / 0.07, rel_tol=1e-6)
    # tagging spec §2.3 / §4: RAM++'s re-weighting temperature exp(ln(1/0.07)); RAM's entry-0 prompt
    assert RAM_REWEIGHT_SCALE == 1 / 0.07
    assert evaluate.DEFAULT_TEMPLATES == ("a photo of a {}.",)
    assert evaluate.SCORINGS == ("clip", "pooled", "max", "mean")
    # reference spec §3: the projector's channel LayerNorm has eps 1e-5
    assert GatedConvUnit(16).norm.eps == 1e-5


# --------------------------------------------------------------------------------------------- area_thd
# training-free spec §3: a class whose argmax area is <= area_thd x the area predicted as *foreground* (every class
# but 0) is zeroed (the argmax after it: tests/test_protocols.py). Each case: (pixels won by class 0, 1, 2),
# whether class 2 survives area_thd 0.1.
AREA_CASES = {
    "measured against the foreground, not the image": ((60, 32, 8), True),   # 8 > 0.1*40, though 8 <= 0.1*100
    "an area equal to the bound is zeroed": ((60, 36, 4), False),            # 4 <= 0.1*40
    "just above the bound survives": ((55, 40, 5), True),                    # 5 > 0.1*45
}


@pytest.mark.parametrize("case", list(AREA_CASES))
def test_area_thd_measures_against_the_foreground_area(case):
    (bg, first, second), survives = AREA_CASES[case]
    owner = torch.tensor([0] * bg + [1] * first + [2] * second)[torch.randperm(100, generator=torch.Generator()
                                                                                .manual_seed(0))]
    dropped = small_classes(owner.view(10, 10), 3, 0.1)
    assert dropped.tolist() == [False, False, not survives]


# --------------------------------------------------------------------------- re-weighting under max and mean
def test_reweighting_under_max_and_mean_queries_with_the_pooled_projected_feature(tiny_clip):
    """Tagging spec §2.4: the per-image weights come from the mean of the projected patch features (RAM++'s
    V_global), not the CLIP global embedding; each patch is then scored against the re-weighted tag embedding."""
    from tagalign.models import TagAlign
    from tagalign.models.text import DescriptionBank
    from tagalign.tagging.evaluate import TagTexts, score_images

    torch.manual_seed(3)
    model = TagAlign(tiny_clip).eval()
    with torch.no_grad():
        for name, param in model.projector.named_parameters():
            param.add_(0.3 * torch.randn_like(param)) if "gate" not in name else param.fill_(0.5)
    width = tiny_clip.visual.output_dim
    embeddings = F.normalize(torch.randn(3, 4, width), dim=-1)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    bank = DescriptionBank(embeddings * mask[..., None], mask)
    texts = TagTexts(bank=bank, scale=20.0)
    pixels = torch.randn(2, 3, 64, 64)
    scores = score_images(model, pixels, texts, ["max", "mean"])

    dense = model.dense_features(pixels).detach()
    query = F.normalize(dense.mean(dim=(2, 3)), dim=-1)
    patches = F.normalize(dense.flatten(2).transpose(1, 2), dim=-1)
    for b in range(2):
        for t in range(3):
            k = int(mask[t].sum())
            weights = torch.softmax(20.0 * embeddings[t, :k] @ query[b], dim=0)
            tag = F.normalize(weights @ embeddings[t, :k], dim=0)
            cos = patches[b] @ tag
            assert math.isclose(scores["max/reweighted"][b, t].item(), cos.max().item(), abs_tol=1e-5)
            assert math.isclose(scores["mean/reweighted"][b, t].item(), cos.mean().item(), abs_tol=1e-5)


# --------------------------------------------------------------------------------------------- vocabulary ids
CAPTION_TAGS = [  # (objects, attributes) per ok caption; equal counts across and within kinds
    (["dog", "cat"], ["red"]), (["cat", "tree"], ["red", "tall"]), (["dog", "tree"], ["tall"]),
    (["orange"], ["orange"]), (["bird"], ["blue"]), (["apple"], ["blue", "orange"]),
]


def _write_parts(out, records, shards, order_seed):
    parsed = out / "parsed"
    parsed.mkdir(parents=True)
    rng = random.Random(order_seed)
    records = records[:]
    rng.shuffle(records)
    for shard in range(shards):
        with open(parsed / f"part-{shard:05d}-000000.jsonl", "w", encoding="utf-8") as handle:
            for record in records[shard::shards]:
                handle.write(json.dumps(record) + "\n")


def _records():
    return [{"key": f"k{i}", "caption": "c", "status": "ok", "objects": objects, "attributes": attributes}
            for i, (objects, attributes) in enumerate(CAPTION_TAGS)]


def test_vocabulary_ids_follow_count_then_kind_then_tag():
    from tagalign.tags.vocab import TagVocab, count_tags

    counts, _ = count_tags(_records())
    vocab = TagVocab.from_counts(counts, {"object": 3, "attribute": 3})
    # objects: cat 2, dog 2, tree 2, apple 1, bird 1, orange 1 -> top 3 by count then tag: cat, dog, tree
    # attributes: blue 2, orange 2, red 2, tall 2 -> top 3: blue, orange, red
    # rows: count desc, then objects before attributes, then tag
    assert list(zip(vocab.tags, vocab.kinds)) == [
        ("cat", "object"), ("dog", "object"), ("tree", "object"),
        ("blue", "attribute"), ("orange", "attribute"), ("red", "attribute")]


def test_the_same_captions_give_the_same_ids_however_they_were_sharded(tmp_path):
    from tagalign.tags.merge import merge_parsed

    vocabularies = []
    for shards, seed in ((1, 0), (2, 1), (3, 2), (3, 7)):
        out = tmp_path / f"s{shards}-{seed}"
        _write_parts(out, _records(), shards, seed)
        (out / "stats").mkdir()
        for shard in range(shards):
            (out / "stats" / f"shard-{shard:05d}.json").write_text(json.dumps({"shard_id": shard,
                                                                                "num_shards": shards}))
        merge_parsed(out, top_k_objects=4, top_k_attributes=3)
        with open(out / "vocab.csv", newline="", encoding="utf-8") as handle:
            vocabularies.append(list(csv.reader(handle)))
    assert all(v == vocabularies[0] for v in vocabularies)
    assert [row[:2] for row in vocabularies[0][1:]] == [
        ["cat", "object"], ["dog", "object"], ["tree", "object"], ["blue", "attribute"], ["orange", "attribute"],
        ["red", "attribute"], ["apple", "object"]]


def test_a_repeated_label_key_keeps_its_first_row_and_is_counted(tmp_path):
    from tagalign.tags.labels import LabelStore, write_labels

    written = write_labels(tmp_path / "labels.sqlite", [("a", [1, 2]), ("b", [0]), ("a", [3])], 4, "h")
    assert written == {"samples": 2, "duplicate_keys": 1}
    store = LabelStore(tmp_path / "labels.sqlite")
    assert list(store.get("a")) == [1, 2] and list(store.get("b")) == [0]
    assert np.load(tmp_path / "tag_frequency.npy").tolist() == [0.5, 0.5, 0.5, 0.0]


# ----------------------------------------------------------------------------------------- tag normalisation
NORMALISED = {  # every leading determiner, number or quantity word goes, however many there are
    ("the two red cars", "object"): "red car",
    ("a couple of dogs", "object"): "dog",
    ("3 small boats", "object"): "small boat",
    ("some of the many birds", "object"): "bird",
    ("the", "object"): None,
    ("two", "attribute"): None,
    ("their bright red", "attribute"): "bright red",
}


@pytest.mark.nltk
def test_tag_normalisation_strips_every_leading_determiner_and_number():
    from tagalign.tags.normalize import normalize_tag

    assert {case: normalize_tag(*case) for case in NORMALISED} == NORMALISED


# ------------------------------------------------------------------------------------ RAM's threshold compare
def test_a_score_on_the_float32_rounded_threshold_compares_as_ram_does():
    """RAM: ``score >= threshold`` with the fp32 score against a float64 threshold. float32(t) lies just below t here,
    so a score equal to it is not a prediction (a float32 compare would count it)."""
    from tagalign.tagging.metrics import tagging_metrics

    threshold = 0.015210883924737573
    on_edge = np.float32(threshold)
    assert float(on_edge) < threshold
    scores = np.array([[on_edge, 0.9], [0.01, on_edge], [0.5, 0.02]], dtype=np.float32)
    targets = np.array([[1, 1], [0, 1], [1, 0]], dtype=bool)
    result = tagging_metrics(scores, targets, threshold)
    # RAM's formulas in float64: class 0 predicted for image 2 only (TP 1, FP 0); class 1 for images 0 and 2
    predicted = scores.astype(np.float64) >= threshold
    assert predicted.tolist() == [[False, True], [False, False], [True, True]]
    tp = (predicted & targets).sum(0)
    precision, recall = tp / (predicted.sum(0) + 1e-9), tp / (targets.sum(0) + 1e-9)
    assert math.isclose(result["CP"], 100 * precision.mean(), rel_tol=1e-12)
    assert math.isclose(result["CR"], 100 * recall.mean(), rel_tol=1e-12)
    assert result["CR"] == pytest.approx(50.0)  # compared in float32, both edge scores would count: CR 100
    per_class = tagging_metrics(scores, targets, np.array([threshold, threshold]))
    assert per_class["CR"] == result["CR"]
