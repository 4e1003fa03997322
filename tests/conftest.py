"""Shared fixtures: a tiny random open_clip CLIP (tagalign/models/model_configs) with non-zero biases and LayerNorm
affine parameters in both towers (tests/random_affine.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub access here: fail fast instead of retrying
# NLTK's tagger and WordNet for offline tests: $NLTK_DATA, else the project's shared/nltk_data beside the checkout
for _parent in Path(__file__).resolve().parents[1:4]:
    if (_parent / "shared" / "nltk_data").is_dir():
        os.environ.setdefault("NLTK_DATA", str(_parent / "shared" / "nltk_data"))
        break

from random_affine import randomize_affine_  # noqa: E402

import tagalign  # noqa: E402,F401  (installs the mmcv._ext stub before any mmseg import)
from tagalign.models import load_clip  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGALIGN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_clip():
    torch.manual_seed(0)
    return randomize_affine_(load_clip("tagalign-tiny"), seed=0)
