"""tagalign.load / segment / tag and tools/demo.py on the tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import tagalign
from tagalign.data.synthetic import render_scene
from tagalign.data.transforms import load_image
from tagalign.models import TagAlign, encode_texts, load_clip, save_checkpoint
from tagalign.visualize import overlay, text_size

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model with a non-identity projector, saved as a checkpoint; its CLIP weights saved to a file."""
    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    clip = load_clip("tagalign-tiny")
    torch.save(clip.state_dict(), root / "clip.pt")
    model = TagAlign(load_clip("tagalign-tiny", str(root / "clip.pt")), surgery_layers=6)
    with torch.no_grad():
        for unit in model.projector.units:
            unit.gate.fill_(0.25)
    save_checkpoint(model, root / "ckpt.pth")
    image = render_scene(np.random.default_rng(1), size=(180, 260)).image
    Image.fromarray(image).save(root / "scene.jpg", quality=95)
    return root, model.eval()


def test_load_takes_clip_identity_from_checkpoint(trained):
    root, model = trained
    loaded = tagalign.load(root / "ckpt.pth")
    assert loaded.surgery_layers == 6 and not loaded.training
    images = torch.randn(1, 3, 224, 224)
    assert torch.equal(loaded.dense_features(images), model.dense_features(images))


def test_segment_equals_the_tools_test_segmentor(trained, tmp_path):
    """The same image and texts through TagAlignSegmentor + mmseg's test pipeline (what tools/test.py runs)."""
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope

    from tagalign.segmentation import segmentor  # noqa: F401  (registers)
    from tagalign.segmentation.evaluate import IMAGENET_MEAN_255, IMAGENET_STD_255
    from tagalign.segmentation.segmentor import TagAlignSegmentor

    init_default_scope("mmseg")
    root, _ = trained
    names = ["background", "red square", "blue circle", "green triangle"]
    seg = TagAlignSegmentor(names, checkpoint=str(root / "ckpt.pth"), keep_logits=True, data_preprocessor=dict(
        type="SegDataPreProcessor", mean=IMAGENET_MEAN_255, std=IMAGENET_STD_255, bgr_to_rgb=True)).eval()
    pipeline = Compose([dict(type="LoadImageFromFile"), dict(type="Resize", scale=(2048, 448), keep_ratio=True),
                        dict(type="PackSegInputs")])
    data = seg.data_preprocessor({k: [v] for k, v in pipeline({"img_path": str(root / "scene.jpg")}).items()})
    with torch.no_grad():
        sample = seg.predict(data["inputs"], data["data_samples"])[0]
    expected_labels = sample.pred_sem_seg.data[0].numpy()
    expected_probs = sample.seg_logits.data[1:].numpy()

    result = tagalign.segment(tagalign.load(root / "ckpt.pth"), root / "scene.jpg", names[1:])
    assert result.labels.shape == (180, 260)
    assert np.abs(result.probabilities - expected_probs).max() < 1e-5
    assert (result.labels == expected_labels).mean() > 0.999
    assert result.names == names and abs(sum(result.areas.values()) - (result.labels > 0).mean()) < 1e-9


def test_synonyms_take_the_max_and_texts_parse(trained):
    root, model = trained
    single = tagalign.segment(model, root / "scene.jpg", ["red square", "blue circle"], background=False)
    merged = tagalign.segment(model, root / "scene.jpg", ["red square, blue circle"], background=False)
    assert np.allclose(merged.probabilities[0], single.probabilities.max(0), atol=1e-6)
    assert tagalign.inference.parse_texts("cat, sofa") == [["cat"], ["sofa"]]
    assert tagalign.inference.parse_texts(["tv, television", "cat"]) == [["tv", "television"], ["cat"]]
    with pytest.raises(ValueError, match="at least one text"):
        tagalign.segment(model, root / "scene.jpg", [" , "])
    with pytest.raises(ValueError, match="cannot read image"):
        tagalign.segment(model, root / "missing.jpg", ["cat"])


def test_tag_ranks_equal_a_direct_cosine_computation(trained):
    root, model = trained
    words = ["red", "green", "blue", "yellow", "square", "circle", "triangle", "sky", "grass"]
    tags = tagalign.tag(model, root / "scene.jpg", top_k=5, vocab=words)
    image = np.asarray(Image.open(root / "scene.jpg").convert("RGB")).astype(np.float32)
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    pixels = torch.from_numpy(((image - mean) / std).astype(np.float32)).permute(2, 0, 1)[None]
    pixels = F.interpolate(pixels, size=(224, 224), mode="bilinear", align_corners=False)
    feature = model.dense_features(pixels).mean(dim=(2, 3))[0]
    embeddings = encode_texts(model.clip, words, ["a photo of a {}."])
    cosine = F.cosine_similarity(embeddings, feature[None], dim=-1)
    order = cosine.argsort(descending=True)[:5].tolist()
    assert [t for t, _ in tags] == [words[i] for i in order]
    assert np.allclose([s for _, s in tags], cosine[order].tolist(), atol=1e-5)
    with pytest.raises(ValueError, match="no tag vocabulary"):
        tagalign.tag(model, root / "scene.jpg")


def test_demo_writes_overlay_and_heatmaps_for_a_directory(trained, tmp_path):
    root, _ = trained
    images = tmp_path / "images"
    images.mkdir()
    Image.open(root / "scene.jpg").save(images / "a.jpg")
    Image.open(root / "scene.jpg").resize((130, 90)).save(images / "b.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "words.txt").write_text("red\nsquare\nsky\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/demo.py"), str(images), "--texts", "red square", "tv, monitor",
         "--checkpoint", str(root / "ckpt.pth"), "--out", str(out), "--compare-clip", "--tags", "2",
         "--vocab", str(tmp_path / "words.txt")],
        capture_output=True, text=True,
    )
    # the unreadable file is reported, the others are done, and the exit status says that one failed
    assert result.returncode == 1 and "1 of 3 image(s) could not be segmented: broken" in result.stderr
    assert "broken.jpg: cannot read image" in result.stdout and "tags: " in result.stdout
    for name, (width, height) in {"a": (260, 180), "b": (130, 90)}.items():
        assert Image.open(out / f"{name}_overlay.png").size == (width, height)
        # image + 2 text columns; two labelled rows (TagAlign, untrained CLIP surgery)
        assert Image.open(out / f"{name}_heatmaps.png").size == (3 * width, 2 * (height + text_size(width) + 8))


def test_demo_without_texts_is_an_error(trained):
    root, _ = trained
    result = subprocess.run([sys.executable, str(ROOT / "tools/demo.py"), str(root / "scene.jpg")],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "at least one query" in result.stderr


def test_descriptions_replace_the_templates_in_segment_and_the_demo(trained, tmp_path):
    """A description file's texts prompt the names it describes: "red" described as "a photo of a blue." segments
    exactly as "blue" does; the demo's tags come from the file's tags, re-weighted per image."""
    from tagalign.models.description_file import write_descriptions

    root, model = trained
    described = tagalign.segment(model, root / "scene.jpg", ["red", "green"], short_side=224,
                                 descriptions={"red": ["a photo of a blue."]})
    plain = tagalign.segment(model, root / "scene.jpg", ["blue", "green"], short_side=224)
    assert np.allclose(described.probabilities, plain.probabilities, atol=1e-5)
    descriptions = {"red": ["a photo of a red.", "A red thing."], "square": ["a photo of a square.", "Four sides."],
                    "sky": ["a photo of a sky."]}
    write_descriptions(tmp_path / "d.json", descriptions)
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/demo.py"), str(root / "scene.jpg"), "--texts", "red", "--checkpoint",
         str(root / "ckpt.pth"), "--out", str(tmp_path / "out"), "--tags", "3", "--descriptions",
         str(tmp_path / "d.json"), "--tag-prompts", "reweighted", "--short-side", "224"],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = tagalign.tag(model, root / "scene.jpg", top_k=3, descriptions=descriptions, prompts="reweighted")
    assert "tags: " + ", ".join(f"{t} ({s:.2f})" for t, s in expected) in result.stdout
    assert sorted(t for t, _ in expected) == ["red", "sky", "square"]


def test_demo_picks_another_encoder_and_its_second_model(trained, clip_file, tmp_path):
    """tools/demo.py --encoder proxyclip --vfm-weights tiny: the untrained projector on ProxyCLIP's tokens (a tiny
    DINO ViT-B/8); its overlay equals tagalign.segment on the same model."""
    root, _ = trained
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/demo.py"), str(root / "scene.jpg"), "--texts", "red", "blue",
         "--clip", "tagalign-tiny", "--pretrained", clip_file, "--encoder", "proxyclip", "--vfm-weights", "tiny",
         "--out", str(out), "--short-side", "224"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    model = tagalign.load(clip="tagalign-tiny", pretrained=clip_file, encoder="proxyclip", vfm_weights="tiny")
    assert model.vfm.name == "dino_vitb8"
    expected = tagalign.segment(model, root / "scene.jpg", ["red", "blue"], short_side=224)
    assert np.array_equal(np.asarray(Image.open(out / "scene_overlay.png")),
                          np.asarray(overlay(load_image(root / "scene.jpg"), expected.labels, expected.names)))
