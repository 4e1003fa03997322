"""docs/backbones.md's table of names against open_clip's registry (names and configs only; nothing downloaded):
each --clip/--pretrained pair exists, its QuickGELU and pixel statistics are what load_clip and --norm model use, and
its family is what the adapter finds in a shrunk tower of that config."""

from __future__ import annotations

import re
from pathlib import Path

import open_clip
import pytest
import timm
from torch import nn

from tagalign.models import clip_normalization
from tagalign.models.clip import tag_uses_quick_gelu
from tagalign.models.encoders import as_tower

ROOT = Path(__file__).resolve().parents[1]
OPENAI = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _rows() -> list[list[str]]:
    text = (ROOT / "docs/backbones.md").read_text()
    section = text[text.index("## Names a user types"):text.index("## Encoders on each family")]
    rows = [[c.strip().strip("`") for c in line.split("|")[1:-1]] for line in section.splitlines()
            if line.startswith("| `")]
    assert len(rows) >= 12
    return rows


class _TimmVisual(nn.Module):
    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk, self.head = trunk, nn.Sequential()


def _shrunk_tower_family(name: str) -> str:
    config = open_clip.get_model_config(name)
    vision, embed_dim = dict(config["vision_cfg"]), config["embed_dim"]
    if vision.get("timm_model_name"):
        classes = 0 if vision.get("timm_proj") == "none" else embed_dim
        trunk = timm.create_model(vision["timm_model_name"], pretrained=False, embed_dim=64, depth=1, num_heads=2,
                                  global_pool=vision["timm_pool"], num_classes=classes)
        return as_tower(_TimmVisual(trunk)).family
    vision.update(width=64, layers=1, head_width=32)
    return as_tower(open_clip.model._build_vision_tower(embed_dim, vision)).family


@pytest.mark.parametrize("row", _rows(), ids=lambda row: f"{row[2]}+{row[3]}")
def test_each_listed_name_is_in_open_clips_registry_as_documented(row):
    family, _, name, tag, quick_gelu, statistics = row
    assert open_clip.get_pretrained_cfg(name, tag), f"{name} + {tag} is not in open_clip's pretrained registry"
    assert tag_uses_quick_gelu(name, tag) is (quick_gelu == "yes")
    assert clip_normalization(name, tag) == {"OpenAI": OPENAI, "0.5 / 0.5": HALF}[statistics]
    assert _shrunk_tower_family(name) == family


def test_readme_names_are_the_documented_ones():
    readme = (ROOT / "README.md").read_text()
    pairs = set(re.findall(r"--clip (\S+) --pretrained ([a-z0-9_]+)\b", readme))
    listed = {(row[2], row[3]) for row in _rows()}
    backbone_pairs = {pair for pair in pairs if pair[1] != "openai"}
    assert backbone_pairs and backbone_pairs <= listed
