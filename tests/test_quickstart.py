"""The README's main job: the quickstart trains the tiny CLIP's projector to segment the shapes world."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_learns_a_margin_the_untrained_projector_cannot_reach(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools/quickstart.py"), "--work-dir", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iterations"] == 300
    assert summary["miou_untrained"] < 30.0  # four colour classes, random projector
    assert summary["miou_trained"] > 50.0 and summary["miou_trained"] - summary["miou_untrained"] > 25.0
    assert "untrained projector" in result.stdout
    assert Image.open(summary["overlay"]).size == (448, 224)
    assert (tmp_path / "train/tagalign_latest.pth").exists()
    referring = summary["referring"]  # the shapes-ref split through the referring evaluation (no threshold asserted)
    assert referring["trained"]["num_expressions"] == referring["untrained"]["num_expressions"] == 80
    print(json.dumps(summary, indent=2))
