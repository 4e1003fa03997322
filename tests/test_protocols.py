"""The two evaluation protocols (training-free spec §10): the segmentor against a per-window statement of each,
written out here, on a tiny CLIP with random biases and LayerNorm affines; the per-dataset table and the class-name
files against the spec's numbers."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from mmseg.structures import SegDataSample

from tagalign.models import dense_features
from tagalign.models.pamr import pamr
from tagalign.segmentation.class_names import class_name_groups, resolve_duplicates
from tagalign.segmentation.inference import InferenceConfig
from tagalign.segmentation.protocols import protocol_settings
from tagalign.segmentation.segmentor import TagAlignSegmentor

CLASSES = [["sky", "wall", "tree"], "cat", ["person", "person in shirt"], "dog", "car"]  # class 0: background names
TEMPLATES = ["a photo of a {}.", "a blurry photo of the {}.", "art of the {}."]
QUERIES = ["sky", "wall", "tree", "cat", "person", "person in shirt", "dog", "car"]
QUERY_CLASS = [0, 0, 0, 1, 2, 2, 3, 4]


def _segmentor(clip_file, encoder, protocol, **kwargs):
    seg = TagAlignSegmentor(CLASSES, clip="tagalign-tiny", pretrained=clip_file, encoder=encoder,
                            templates=TEMPLATES, inference=dict(protocol=protocol), keep_logits=True, **kwargs)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a "trained" projector, so the CLIP mix is a visible step
        for name, param in seg.tagalign.projector.named_parameters():
            if name.endswith("gate"):
                param.copy_(0.5 + torch.rand(param.shape, generator=generator))
    return seg


def _random_texts(count, dim, seed):
    return F.normalize(torch.randn(count, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _statement_texts(clip, normalize_each):
    """Spec §0: t_q = normalize(mean over templates of [normalized] text embeddings)."""
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    rows = []
    for name in QUERIES:
        emb = clip.encode_text(tokenizer([t.format(name) for t in TEMPLATES])).float()
        rows.append((F.normalize(emb, dim=-1) if normalize_each else emb).mean(0))
    return F.normalize(torch.stack(rows), dim=-1)


def _windows(height, width, crop, stride):
    """SCLIP's grid: max(H - c + s - 1, 0) // s + 1 windows per side, clamped to end inside the image."""
    for row in range(max(height - crop + stride - 1, 0) // stride + 1):
        for col in range(max(width - crop + stride - 1, 0) // stride + 1):
            y2, x2 = min(row * stride + crop, height), min(col * stride + crop, width)
            yield max(y2 - crop, 0), y2, max(x2 - crop, 0), x2


def _cos(features, texts):
    return torch.einsum("bchw,nc->bnhw", F.normalize(features, dim=1), texts)


@torch.no_grad()
def _sclip_statement(seg, encoder, image, texts, cfg: InferenceConfig, out_size):
    """Spec §10.2 per window: symmetric zero pad to pad_to, mixed cosines on the grid, bilinear up to the padded
    window, pad cut off; windows averaged; bilinear to the original size; PAMR there (against the image resized to
    it); softmax(τ·cos) over all queries; max over a class's queries; area_thd; argmax; prob_thd -> class 0."""
    model, clip = seg.tagalign, seg.tagalign.clip

    def window(crop):
        h, w = crop.shape[-2:]
        ph = (-h) % cfg.pad_to if cfg.pad_to else 0
        pw = (-w) % cfg.pad_to if cfg.pad_to else 0
        top, left = ph // 2, pw // 2
        padded = F.pad(crop, (left, pw - left, top, ph - top))
        grid = ((1 - cfg.clip_w) * _cos(model.dense_features(padded), texts)
                + cfg.clip_w * _cos(dense_features(clip, padded, encoder=encoder), texts))
        up = F.interpolate(grid, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return up[:, :, top : top + h, left : left + w]

    height, width = image.shape[-2:]
    if cfg.mode == "whole":
        average = window(image)
    else:
        total = torch.zeros(1, len(texts), height, width)
        count = torch.zeros(1, 1, height, width)
        for y1, y2, x1, x2 in _windows(height, width, cfg.crop, cfg.stride):
            total[:, :, y1:y2, x1:x2] += window(image[:, :, y1:y2, x1:x2])
            count[:, :, y1:y2, x1:x2] += 1
        average = total / count
    cosines = F.interpolate(average, size=out_size, mode="bilinear", align_corners=False)
    if cfg.pamr:
        guide = F.interpolate(image, size=out_size, mode="bilinear", align_corners=False)
        cosines = pamr(guide, cosines, cfg.pamr_iter, cfg.pamr_dilations)
    query_probs = torch.softmax(cfg.logit_scale * cosines, dim=1)[0]
    probs = torch.stack([query_probs[[q for q, c in enumerate(QUERY_CLASS) if c == k]].max(0).values
                         for k in range(len(CLASSES))])
    if cfg.area_thd is not None:
        winners = probs.argmax(0)
        areas = torch.tensor([(winners == k).sum().item() for k in range(1, len(CLASSES))], dtype=torch.float32)
        for k in range(1, len(CLASSES)):
            if areas[k - 1] <= cfg.area_thd * areas.sum():
                probs[k] = 0
    labels = probs.argmax(0)
    labels[probs.max(0).values < cfg.prob_thd] = 0
    return probs, labels


def gap_threshold(top_probs: torch.Tensor) -> float:
    """A prob_thd in the widest gap between the top probabilities of the middle half of the pixels, so no pixel
    sits within float error of it (the softmax may be computed in another order)."""
    levels = top_probs.flatten().sort().values
    middle = levels[len(levels) // 4 : 3 * len(levels) // 4]
    widest = (middle[1:] - middle[:-1]).argmax()
    return (middle[widest] + middle[widest + 1]).item() / 2


def _predict(seg, image, out_size):
    sample = SegDataSample(metainfo=dict(ori_shape=out_size, img_shape=tuple(image.shape[-2:]),
                                         pad_shape=tuple(image.shape[-2:])))
    return seg.predict(image, [sample])[0]


def _assert_same_labels(labels, expected, probs):
    """Labels equal wherever the top two classes are not tied within float error."""
    top2 = probs.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > 1e-5
    assert decided.float().mean() > 0.95
    assert torch.equal(labels[decided], expected[decided])


SCLIP_CASES = {
    # ClearCLIP: 73-px windows zero-padded 3|4 to 80, τ 50, prob_thd
    "clearclip-pad": ("clearclip", (90, 130), (120, 170), dict(crop=73, stride=40, pad_to=16, logit_scale=50.0,
                                                              prob_thd="median")),
    # SCLIP on VOC: τ 65, area_thd, prob_thd; output smaller than the network input (the resize step)
    "sclip-area": ("sclip", (96, 128), (70, 100), dict(crop=64, stride=32, logit_scale=65.0, area_thd="between",
                                                      prob_thd="median")),
    # NACLIP on VOC: the whole image, PAMR on the full-resolution cosines
    "naclip-whole-pamr": ("naclip", (80, 112), (100, 140), dict(mode="whole", pamr=True, pamr_iter=10,
                                                                pamr_dilations=(8, 16))),
}


@pytest.mark.parametrize("case", sorted(SCLIP_CASES))
def test_sclip_protocol_equals_its_per_window_statement(case, clip_file):
    encoder, input_size, out_size, fields = SCLIP_CASES[case]
    seg = _segmentor(clip_file, encoder, "sclip")
    texts = _random_texts(len(QUERIES), seg.text_emb.shape[1], seed=3)  # well-separated queries
    seg.text_emb = texts
    image = torch.randn(1, 3, *input_size, generator=torch.Generator().manual_seed(4))
    fields = {**fields, "protocol": "sclip", "mix": "similarities"}
    probs, labels = _sclip_statement(seg, encoder, image, texts, InferenceConfig(
        **{**fields, "prob_thd": 0.0, "area_thd": None}), out_size)
    if fields.get("area_thd") == "between":  # a threshold between the two smallest foreground areas
        areas = torch.bincount(labels.flatten(), minlength=len(CLASSES))[1:].float()
        fractions = (areas[areas > 0] / areas.sum()).sort().values
        assert len(fractions) >= 2, "the case needs two foreground classes"
        fields["area_thd"] = (fractions[0] + fractions[1]).item() / 2
    if fields.get("prob_thd") == "median":  # a threshold that moves about half of the pixels to class 0
        fields["prob_thd"] = gap_threshold(probs.max(0).values)
    cfg = InferenceConfig(**fields)
    seg.inference_cfg = cfg
    expected_probs, expected = _sclip_statement(seg, encoder, image, texts, cfg, out_size)
    result = _predict(seg, image, out_size)
    assert result.pred_sem_seg.data.shape == (1, *out_size)
    assert torch.allclose(result.seg_logits.data, expected_probs, atol=1e-5)
    _assert_same_labels(result.pred_sem_seg.data[0], expected, expected_probs)
    # each optional step of the case changes the result (so the comparison above covers it)
    for step, off in (("prob_thd", 0.0), ("area_thd", None), ("pamr", False), ("pad_to", 0)):
        if step in fields and fields[step] != off:
            probs, labels = _sclip_statement(seg, encoder, image, texts, InferenceConfig(**{**fields, step: off}),
                                             out_size)
            changed = not torch.equal(labels, expected) or not torch.allclose(probs, expected_probs, atol=1e-4)
            assert changed, f"{case}: {step} changes nothing here"


def test_sclip_protocol_text_embeddings_normalise_each_template(clip_file):
    seg = _segmentor(clip_file, "sclip", "sclip", normalize_each_template=True)
    expected = _statement_texts(seg.tagalign.clip, normalize_each=True)
    assert torch.allclose(F.normalize(seg.text_emb, dim=-1), expected, atol=1e-5)  # cosines normalise it
    assert not torch.allclose(expected, _statement_texts(seg.tagalign.clip, normalize_each=False), atol=1e-4)
    assert seg.query_class.tolist() == QUERY_CLASS and seg.num_classes == len(CLASSES)


def test_the_80_openai_templates():
    from tagalign.models.templates import OPENAI_IMAGENET_TEMPLATES, TEMPLATE_SETS

    assert len(OPENAI_IMAGENET_TEMPLATES) == len(set(OPENAI_IMAGENET_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in OPENAI_IMAGENET_TEMPLATES)
    assert OPENAI_IMAGENET_TEMPLATES[:2] == ("a bad photo of a {}.", "a photo of many {}.")  # OpenAI's order
    assert OPENAI_IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    assert TEMPLATE_SETS["simple"] == ("a photo of a {}.",)


@torch.no_grad()
def _tagalign_statement(seg, image, texts, cfg: InferenceConfig, out_size, with_background):
    """Reference spec §6 per window: sigmoid(10·cos − 2.5) on the grid for the projected and the CLIP branch, mixed
    as probabilities, (PAMR at 1/4 of the window,) bilinear up to the window; constant bg_thresh channel; windows
    averaged; a class takes the max over its queries; bilinear to the original size; argmax."""
    model, clip = seg.tagalign, seg.tagalign.clip

    def window(crop):
        def sig(features):
            return torch.sigmoid(cfg.scale * _cos(features, texts) + cfg.bias)

        grid = (1 - cfg.clip_w) * sig(model.dense_features(crop)) + cfg.clip_w * sig(
            dense_features(clip, crop, encoder="surgery", depth=seg.tagalign.surgery_layers))
        if cfg.pamr:  # TCL's recipe: refined at 1/pamr_stride of the window, then up to the window
            small = (crop.shape[-2] // cfg.pamr_stride, crop.shape[-1] // cfg.pamr_stride)
            grid = pamr(crop, F.interpolate(grid, size=small, mode="bilinear", align_corners=False), cfg.pamr_iter,
                        cfg.pamr_dilations)
        return F.interpolate(grid, size=crop.shape[-2:], mode="bilinear", align_corners=False)

    height, width = image.shape[-2:]
    total = torch.zeros(1, len(texts), height, width)
    count = torch.zeros(1, 1, height, width)
    for y1, y2, x1, x2 in _windows(height, width, cfg.crop, cfg.stride):
        total[:, :, y1:y2, x1:x2] += window(image[:, :, y1:y2, x1:x2])
        count[:, :, y1:y2, x1:x2] += 1
    query_probs = (total / count)[0]
    first = 1 if with_background else 0
    per_class = [torch.full_like(query_probs[0], cfg.bg_thresh)] if with_background else []
    per_class += [query_probs[[q for q, c in enumerate(QUERY_CLASS[first * 3 :]) if c == k]].max(0).values
                  for k in range(first, len(CLASSES))]
    probs = F.interpolate(torch.stack(per_class)[None], size=out_size, mode="bilinear", align_corners=False)[0]
    return probs, probs.argmax(0)


@pytest.mark.parametrize("with_background", [False, True])
def test_tagalign_protocol_with_synonyms_equals_its_per_window_statement(with_background, clip_file):
    classes = [["background"], *CLASSES[1:]] if with_background else CLASSES
    seg = TagAlignSegmentor(classes, clip="tagalign-tiny", pretrained=clip_file, templates=TEMPLATES,
                            inference=dict(crop=64, stride=32))
    with torch.no_grad():
        for name, param in seg.tagalign.projector.named_parameters():
            if name.endswith("gate"):
                param.fill_(0.7)
    texts = _random_texts(len(seg.query_class), seg.text_emb.shape[1], seed=11)
    seg.text_emb = texts
    assert seg.with_background == with_background  # a bare "background" is the constant channel, never a prompt
    image = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(6))
    expected_probs, expected = _tagalign_statement(seg, image, texts, seg.inference_cfg, (120, 150),
                                                   with_background)
    result = _predict(seg, image, (120, 150))
    _assert_same_labels(result.pred_sem_seg.data[0], expected, expected_probs)
    assert len(expected.unique()) == len(CLASSES)  # every class wins somewhere


# ---------------------------------------------------------------------------------------------- settings tables
# spec §10.3: short side / crop / stride / τ / prob_thd (None: whole image)
SPEC_TABLE = {
    "sclip": {"voc": (336, 224, 112, 65, 0.1), "context": (336, 224, 112, 50, 0.1),
              "coco_object": (336, 224, 112, 50, 0.1), "voc20": (336, 224, 112, 40, 0.0),
              "context59": (336, 224, 112, 40, 0.0), "coco_stuff": (448, 224, 112, 40, 0.0),
              "cityscapes": (560, 224, 112, 40, 0.0), "ade20k": (336, 224, 112, 40, 0.0)},
    "naclip": {"voc": (336, None, None, 40, 0.1), "context": (336, 224, 112, 40, 0.1),
               "coco_object": (336, 224, 112, 40, 0.1), "voc20": (336, None, None, 40, 0.0),
               "context59": (336, 224, 112, 40, 0.0), "coco_stuff": (336, 224, 112, 40, 0.0),
               "cityscapes": (560, 224, 112, 40, 0.0), "ade20k": (336, 224, 112, 40, 0.0)},
    "clearclip": {"voc": (448, 448, 224, 50, 0.5), "context": (448, 448, 224, 50, 0.15),
                  "coco_object": (448, 448, 224, 50, 0.4), "voc20": (448, 448, 224, 50, 0.0),
                  "context59": (448, 448, 224, 50, 0.0), "coco_stuff": (448, 448, 224, 50, 0.0),
                  "cityscapes": (448, 224, 224, 50, 0.0), "ade20k": (448, 448, 224, 50, 0.0)},
    "proxyclip": {"voc": (336, 336, 112, 40, 0.2), "context": (336, 336, 112, 40, 0.15),
                  "coco_object": (336, 336, 112, 40, 0.25), "voc20": (336, 336, 112, 40, 0.0),
                  "context59": (336, 336, 112, 40, 0.0), "coco_stuff": (336, 336, 112, 40, 0.0),
                  "cityscapes": (448, 224, 112, 40, 0.0), "ade20k": (448, 336, 112, 40, 0.0)},
}
SPEC_TABLE["sc_clip"] = {"voc": (336, 224, 112, 50, 0.15), "context": (336, 224, 112, 40, 0.15),
                         "coco_object": (336, 224, 112, 55, 0.35), "voc20": (336, 224, 112, 40, 0.0),
                         "context59": (336, 224, 112, 40, 0.0), "coco_stuff": (336, 224, 112, 40, 0.0),
                         "cityscapes": (560, 224, 112, 40, 0.0), "ade20k": (336, 224, 112, 40, 0.0)}
SPEC_TABLE["resclip"] = {"voc": (336, None, None, 40, 0.1), "context": (336, 224, 112, 40, 0.1),
                         "coco_object": (336, 224, 112, 40, 0.1), "voc20": (336, None, None, 40, 0.0),
                         "context59": (336, 224, 112, 40, 0.0), "coco_stuff": (336, 224, 112, 40, 0.0),
                         "cityscapes": (560, 224, 112, 40, 0.0), "ade20k": (336, 224, 112, 40, 0.0)}
SPEC_TABLE["cass"] = {"voc": (336, None, None, 40, 0.1), "context": (336, 224, 112, 40, 0.1),
                      "coco_object": (336, 224, 112, 40, 0.1), "voc20": (336, 224, 112, 40, 0.0),
                      "context59": (336, 224, 112, 40, 0.0), "coco_stuff": (336, 224, 112, 40, 0.0),
                      "cityscapes": (560, 224, 112, 40, 0.0), "ade20k": (336, 224, 112, 40, 0.0)}
SPEC_TABLE["trident"] = {"voc": (448, 336, 224, 40, 0.2), "context": (576, 336, 224, 40, 0.15),
                         "coco_object": (448, 336, 224, 40, 0.25), "voc20": (336, 336, 112, 40, 0.0),
                         "context59": (576, 336, 224, 40, 0.0), "coco_stuff": (448, 336, 224, 40, 0.0),
                         "cityscapes": (688, 336, 224, 40, 0.0), "ade20k": (576, 336, 224, 40, 0.0)}
TRIDENT_COS = {"voc20": (0.0, True), "cityscapes": (3.0, False), "ade20k": (1.2, False)}  # others (1.2, True)
# spec-2 §10, CASS's text adjustment: g_w, α, h_thr
CASS_TEXT = {"voc": (0.10, 0.03, 0.10), "context": (0.25, 0.04, 0.09), "coco_object": (0.25, 0.01, 0.10),
             "voc20": (0.40, 0.02, 0.10), "context59": (0.25, 0.04, 0.09), "coco_stuff": (0.20, 0.02, 0.02),
             "cityscapes": (0.10, 0.03, 0.14), "ade20k": (0.30, 0.05, 0.06)}
SPEC_TABLE["lposs"] = SPEC_TABLE["lposs_plus"] = {key: (448, 224, 112, 40, 0.0) for key in SPEC_TABLE["sc_clip"]}
# spec-2 §10, ResCLIP's encoder options: temp_thd, (τ, λ) RCS, (τ, λ) SFR
RESCLIP_OPTIONS = {"voc": (0.50, 2.0, 0.3, 2.2, 0.7), "context": (0.30, 2.0, 0.3, 1.8, 0.7),
                   "coco_object": (0.11, 2.0, 0.4, 1.8, 0.7), "voc20": (0.10, 2.0, 0.6, 2.1, 0.6),
                   "context59": (0.25, 2.0, 0.4, 1.8, 0.7), "coco_stuff": (0.11, 2.0, 0.4, 1.8, 0.7),
                   "cityscapes": (0.10, 2.0, 0.2, 2.1, 0.6), "ade20k": (0.25, 2.0, 0.3, 2.1, 0.7)}
PAD_TO = {"clearclip": 16, "proxyclip": 56}
NAME_SET = {"clearclip": "plain", "proxyclip": "proxyclip", "trident": "proxyclip"}


@pytest.mark.parametrize("preset", sorted(SPEC_TABLE))
def test_presets_follow_the_spec_table(preset):
    for key, (short, crop, stride, tau, prob_thd) in SPEC_TABLE[preset].items():
        settings = protocol_settings(key, "sclip", preset, with_background=key in ("voc", "context", "coco_object"))
        inference = settings["inference"]
        assert settings["short_side"] == short, (preset, key)
        assert (inference["logit_scale"], inference["prob_thd"]) == (tau, prob_thd), (preset, key)
        if crop is None:
            assert inference["mode"] == "whole", (preset, key)
        else:
            assert (inference.get("mode", "slide"), inference["crop"], inference["stride"]) == ("slide", crop, stride)
        assert settings["norm"] == "model" and settings["templates"] == "openai80"
        assert settings["normalize_each_template"] is True
        assert inference["pamr"] is (preset == "naclip")
        assert inference.get("lposs", False) is preset.startswith("lposs")
        assert inference.get("lposs_plus", False) is (preset == "lposs_plus")
        assert inference["area_thd"] == (0.1 if preset in ("sclip", "sc_clip") and key == "voc" else None)
        assert inference["pad_to"] == PAD_TO.get(preset, 0)
        assert settings["class_names"] == NAME_SET.get(preset, "sclip")
        if preset == "resclip":
            options = settings["encoder_options"]
            assert options["base"] == "naclip"
            assert tuple(options[name] for name in ("temp_thd", "tau_rcs", "lambda_rcs", "tau_sfr", "lambda_sfr")) \
                == RESCLIP_OPTIONS[key], key
        elif preset == "cass":  # its singular-value stretch is off on VOC20 and Cityscapes
            assert settings.get("encoder_options", {}).get("stretch", True) is (key not in ("voc20", "cityscapes"))
            assert inference["cass_adjust"] is True
            assert (inference["cass_global_weight"], inference["cass_alpha"],
                    inference["cass_cluster_threshold"]) == CASS_TEXT[key], key
            assert inference.get("cass_crop_cls", False) is (key == "cityscapes")
        elif preset == "trident":  # ProxyCLIP's proxy attention, its mean over all windows, DINO ViT-B/16, SAM
            assert settings["encoder_options"] == {"batch_mean": True} and settings["vfm"] == "dino_vitb16"
            assert inference["trident"] is True
            assert (inference.get("trident_cos_fac", 1.2), inference.get("trident_refine_neg_cos", True)) == \
                TRIDENT_COS.get(key, (1.2, True)), key
        else:
            assert "encoder_options" not in settings


def test_a_presets_encoder_options_yield_to_the_users(tmp_path):
    from tagalign.segmentation.evaluate import build_test_config

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000033\n")
    config = build_test_config("voc", data_root=tmp_path, protocol="sclip", preset="resclip",
                               encoder_options={"temp_thd": 0.2})
    model = config.model
    assert model.encoder == "resclip" and model.inference.mode == "whole"
    assert model.encoder_options == dict(base="naclip", tau_rcs=2.0, tau_sfr=2.2, lambda_sfr=0.7, temp_thd=0.2,
                                         lambda_rcs=0.3)
    assert config.tagalign_settings.model.encoder_options == model.encoder_options
    other = build_test_config("voc", data_root=tmp_path, protocol="sclip", preset="resclip", encoder="naclip")
    assert other.model.encoder_options is None  # another encoder than the preset's gets none of its options


def test_resclip_is_compared_with_the_row_of_its_base():
    from tagalign.segmentation.benchmarks import published_reference

    assert published_reference("resclip", False, False)[1]["voc"] == 61.1  # on NACLIP, the published method
    assert published_reference("resclip", False, False, {"base": "sclip"})[1]["voc20"] == 84.6
    assert published_reference("resclip", False, False, {"base": "clearclip"})[1]["voc20"] == 87.1
    assert published_reference("resclip", False, False, {"base": "vanilla"}) is None


def test_tagalign_protocol_is_the_reference_evaluation():
    settings = protocol_settings("voc", "tagalign")
    assert settings["norm"] == "imagenet" and settings["templates"] == "simple"
    assert settings["class_names"] == "dataset" and settings["normalize_each_template"] is False
    reference = InferenceConfig(**settings["inference"])
    assert (reference.protocol, reference.crop, reference.stride, reference.bg_thresh) == ("tagalign", 448, 224, 0.4)
    with pytest.raises(ValueError, match="belongs to the 'sclip' protocol"):
        protocol_settings("voc", "tagalign", "naclip")


def _dataset_classes(key):
    from mmseg.registry import DATASETS

    import tagalign.segmentation.evaluate  # noqa: F401  (registers the dataset types)
    from tagalign.segmentation.benchmarks import BENCHMARKS

    return list(DATASETS.get(BENCHMARKS[key].dataset_type).METAINFO["classes"])


BG_NAMES = ["sky", "wall", "tree", "wood", "grass", "road", "sea", "river", "mountain", "sands", "desk", "bed",
            "building", "cloud", "lamp", "door", "window", "wardrobe", "ceiling", "shelf", "curtain", "stair", "floor",
            "hill", "rail", "fence"]


def test_sclip_name_files_have_the_spec_counts():
    """Spec §8: VOC 21 classes / 56 queries, VOC20 20/30, COCO-Object 81/113; the rest one name per class."""
    counts = {"voc": (21, 56), "voc20": (20, 30), "coco_object": (81, 113)}
    for key in ("voc", "voc20", "coco_object", "context", "context59", "coco_stuff", "cityscapes", "ade20k"):
        classes = _dataset_classes(key)
        groups = class_name_groups(key, "sclip", classes)
        queries = sum(len(g) for g in groups)
        assert (len(groups), queries) == counts.get(key, (len(classes), len(classes))), key
        plain = class_name_groups(key, "plain", classes)
        assert sum(len(g) for g in plain) == len(classes), key
    voc = class_name_groups("voc", "sclip", _dataset_classes("voc"))
    assert voc[0] == BG_NAMES and len(voc[15]) == 7 and len(voc[20]) == 5
    assert voc[4] == ["ship"] and voc[11] == ["table"]
    coco = class_name_groups("coco_object", "sclip", _dataset_classes("coco_object"))
    assert coco[0] == BG_NAMES and len(coco[1]) == 8 and coco[60] == ["bed"]
    assert class_name_groups("voc", "plain", _dataset_classes("voc"))[0] == ["background"]
    # ProxyCLIP's (spec-1 §8): VOC 46 queries (26 background names, no person/tv expansion), COCO-Object 97 (17
    # background names), VOC20 plain; its other files are SCLIP's
    proxy_counts = {"voc": 46, "voc20": 20, "coco_object": 97}
    for key in ("voc", "voc20", "coco_object", "context", "ade20k"):
        classes = _dataset_classes(key)
        groups = class_name_groups(key, "proxyclip", classes)
        assert sum(len(g) for g in groups) == proxy_counts.get(key, len(classes)), key
    proxy_voc = class_name_groups("voc", "proxyclip", _dataset_classes("voc"))
    assert proxy_voc[0] == BG_NAMES and proxy_voc[15] == ["person"]
    assert class_name_groups("coco_object", "proxyclip", _dataset_classes("coco_object"))[0] == [
        *BG_NAMES[:14], "floor", "hill", "rail"]


def test_the_coco_object_bed_clash_does_not_lose_a_class(caplog):
    groups = class_name_groups("coco_object", "sclip", _dataset_classes("coco_object"))
    with caplog.at_level("WARNING"):
        fixed = resolve_duplicates(groups, "drop_from_background", background=True)
    assert "bed" not in fixed[0] and fixed[60] == ["bed"] and len(fixed[0]) == 25
    assert "bed" in caplog.text
    kept = resolve_duplicates(groups, "keep", background=True)  # the authors' files, exactly
    assert kept[0] == BG_NAMES and kept[60] == ["bed"]


def test_bed_can_win_under_the_default_policy(clip_file):
    """Identical "bed" queries in the background and in class "bed": kept, argmax gives every "bed" pixel to the
    background (the first maximum); dropped from the background, exactly those pixels go to "bed"."""
    names = [["sky", "bed"], "cat", "bed"]
    sky, cat, bed = _random_texts(3, 64, seed=7)
    image = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(8))
    labels = {}
    for policy, texts in (("keep", [sky, bed, cat, bed]), ("drop_from_background", [sky, cat, bed])):
        seg = TagAlignSegmentor(names, clip="tagalign-tiny", pretrained=clip_file, templates=TEMPLATES,
                                inference=dict(protocol="sclip", crop=64, stride=32), duplicate_names=policy,
                                has_background=True)
        assert len(seg.query_class) == len(texts)
        seg.text_emb = torch.stack(texts)
        labels[policy] = _predict(seg, image, (64, 96)).pred_sem_seg.data[0]
    assert not (labels["keep"] == 2).any()
    moved = labels["drop_from_background"] == 2
    assert moved.any() and bool((labels["keep"][moved] == 0).all())
    assert torch.equal(labels["keep"][~moved], labels["drop_from_background"][~moved])
