"""tagalign.load() and the dense-heatmap demo CLI on the tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

import tagalign
from tagalign.models import TagAlign, load_clip, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_load_takes_clip_identity_from_checkpoint(tmp_path):
    torch.manual_seed(0)  # the tiny model's random init is reproduced by the seed, which stands for "same weights"
    trained = TagAlign(load_clip("tagalign-tiny"), surgery_layers=4)
    with torch.no_grad():
        for unit in trained.projector.units:
            unit.gate.fill_(0.25)
    save_checkpoint(trained, tmp_path / "ckpt.pth")
    torch.manual_seed(0)
    model = tagalign.load(tmp_path / "ckpt.pth")
    assert model.surgery_layers == 4 and not model.training
    images = torch.randn(1, 3, 224, 224)
    assert torch.equal(model.dense_features(images), trained.dense_features(images))


def test_demo_writes_heatmaps_and_overlay(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools/demo.py"), "--clip", "tagalign-tiny", "--texts", "red square", "sky",
         "--out", str(out)],
        capture_output=True, text=True, check=True,
    )
    assert "red square: max prob" in result.stdout
    heatmaps, over = Image.open(out / "heatmaps.png"), Image.open(out / "overlay.png")
    assert over.size == (320, 224)  # the generated scene's size
    assert heatmaps.size == (3 * 320, 224 + 16)  # image + 2 heatmaps, one labelled row
