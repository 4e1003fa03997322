"""Shared fixtures: a tiny random open_clip CLIP (tagalign/models/model_configs) with non-zero biases and LayerNorm
affine parameters in both towers (tests/random_affine.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub access here: fail fast instead of retrying
# NLTK's tagger and WordNet: $NLTK_DATA, else the project's shared/nltk_data beside the checkout, else a cache folder
# that the first run fills by downloading them (see pytest_collection_modifyitems)
NLTK_RESOURCES = {"taggers/averaged_perceptron_tagger_eng": "averaged_perceptron_tagger_eng",
                  "corpora/wordnet": "wordnet"}
for _parent in Path(__file__).resolve().parents[1:4]:
    if (_parent / "shared" / "nltk_data").is_dir():
        os.environ.setdefault("NLTK_DATA", str(_parent / "shared" / "nltk_data"))
        break
else:
    os.environ.setdefault("NLTK_DATA", str(Path(os.environ.get("TAGALIGN_CACHE_ROOT", Path.home() / ".cache" /
                                                                "tagalign")) / "nltk_data"))

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


@pytest.fixture(scope="session")
def clip_file(tiny_clip, tmp_path_factory):
    """The tiny CLIP's weights as a file, for code that loads a CLIP by name and weights path."""
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(tiny_clip.state_dict(), path)
    return str(path)


def pytest_configure(config):
    config.addinivalue_line("markers", "nltk: needs NLTK's English POS tagger and WordNet (downloaded once if missing)")


def ensure_nltk_data() -> str | None:
    """Download the missing NLTK resources into $NLTK_DATA once; the reason if that is impossible, else None."""
    import nltk

    folder = os.environ["NLTK_DATA"]
    missing = []
    for resource, package in NLTK_RESOURCES.items():
        try:
            nltk.data.find(resource, paths=[folder])
        except LookupError:
            missing.append(package)
    for package in missing:
        if not nltk.download(package, download_dir=folder, quiet=True, raise_on_error=False):
            return (f"the NLTK tests need {missing} in NLTK_DATA={folder}, and downloading them failed (no internet?). "
                    f"Run `python -m nltk.downloader -d {folder} {' '.join(missing)}` on a machine with internet, or "
                    f"point NLTK_DATA at a folder that holds them; or deselect them with -m 'not nltk'.")
    return None


def pytest_collection_modifyitems(session, config, items):
    if any(item.get_closest_marker("nltk") for item in items):
        problem = ensure_nltk_data()
        if problem:
            pytest.exit(problem, returncode=3)
