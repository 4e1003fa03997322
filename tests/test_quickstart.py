"""The README's main job: the quickstart trains the tiny CLIP's projector to segment the shapes world."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The README's command: ``python tools/quickstart.py`` (surgery encoder, 300 iterations)."""
    work = tmp_path_factory.mktemp("quickstart")
    result = subprocess.run([sys.executable, str(ROOT / "tools/quickstart.py"), "--work-dir", str(work)],
                            capture_output=True, text=True)
    return work, result


def test_quickstart_learns_a_margin_the_untrained_projector_cannot_reach(default_run):
    tmp_path, result = default_run
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iterations"] == 300 and summary["encoder"] == "surgery"
    assert summary["miou_untrained"] < 30.0  # four colour classes, random projector
    assert summary["miou_trained"] > 50.0 and summary["miou_trained"] - summary["miou_untrained"] > 25.0
    assert "untrained projector" in result.stdout
    assert Image.open(summary["overlay"]).size == (448, 224)
    assert (tmp_path / "train/tagalign_latest.pth").exists()
    referring = summary["referring"]  # the shapes-ref split through the referring evaluation (no threshold asserted)
    assert referring["trained"]["num_expressions"] == referring["untrained"]["num_expressions"] == 80
    print(json.dumps(summary, indent=2))


@pytest.mark.parametrize("encoder", ["clearclip", "naclip"])
def test_quickstart_trains_the_projector_on_another_encoder(encoder, default_run, tmp_path):
    """--encoder E: the projector trains on E's tokens (the "before" number is E's training-free baseline) and the
    checkpoint records E. The shapes world of the default run is reused, not regenerated."""
    source, _ = default_run
    (tmp_path / "data").symlink_to(source / "data", target_is_directory=True)
    result = subprocess.run([sys.executable, str(ROOT / "tools/quickstart.py"), "--work-dir", str(tmp_path),
                             "--encoder", encoder, "--iters", "40"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reusing" in result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["encoder"] == encoder and summary["iterations"] == 40
    assert summary["miou_trained"] > summary["miou_untrained"] + 10.0, summary
    payload = torch.load(summary["checkpoint"], map_location="cpu", weights_only=False)
    assert payload["config"]["encoder"] == encoder
    assert f"({encoder} encoder)" in result.stdout
