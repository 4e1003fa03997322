"""NLTK backend on real captions with the real tagger; normalisation; missing NLTK data."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tagalign.tags.normalize import NON_VISUAL_WORDS, normalize_tag, normalize_tags
from tagalign.tags.parsers import NLTKParser

pytestmark = pytest.mark.nltk  # NLTK's tagger and WordNet (tests/conftest.py)


@pytest.fixture(scope="module")
def nltk_parser():
    return NLTKParser()


def test_issue_examples(nltk_parser):
    first, second = nltk_parser.parse(["a black cat sitting on a red sofa", "two dogs playing in the green grass"])
    assert (first.objects, first.attributes, first.status) == (["cat", "sofa"], ["black", "red"], "ok")
    assert (second.objects, second.attributes) == (["dog", "grass"], ["green"])


def test_tagger_noise_is_kept(nltk_parser):
    """The baseline measures the tagger as it is: 'grey' before 'sky' comes out as a noun."""
    result = nltk_parser.parse(["wet fields under a grey sky"])[0]
    assert "grey" in result.objects and "field" in result.objects


@pytest.mark.parametrize("raw,kind,expected", [
    ("Two Dogs", "object", "dog"), ("the Traffic Lights!", "object", "traffic light"), ("3 glasses", "object", "glass"),
    ("RED", "attribute", "red"), ("東京", "object", None), ("http://x.com/a", "object", None),
    ("a", "object", None), ("big old rusty red car", "object", None), ("ice-cream", "object", "ice-cream"),
])
def test_normalize_tag(raw, kind, expected):
    assert normalize_tag(raw, kind) == expected


def test_normalize_merges_duplicates_and_applies_stop_list():
    assert normalize_tags(["Dogs", "dog", "a dog", "stock photo", "cat"], "object") == ["dog", "stock photo", "cat"]
    assert normalize_tags(["Dogs", "stock photo", "photo", "cat"], "object", NON_VISUAL_WORDS) == ["dog", "cat"]


def test_missing_nltk_data_names_the_download_command(tmp_path):
    code = "from tagalign.tags.parsers import NLTKParser; NLTKParser()"
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "python -m nltk.downloader averaged_perceptron_tagger_eng wordnet" in result.stderr
