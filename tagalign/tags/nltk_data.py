"""Access to NLTK's tagger and WordNet with a clear error when their data is missing."""

from __future__ import annotations

import functools

DOWNLOAD_HINT = "python -m nltk.downloader averaged_perceptron_tagger_eng wordnet"


class MissingNLTKDataError(RuntimeError):
    """NLTK data (tagger or WordNet) is not installed where NLTK looks (NLTK_DATA)."""


def _require(resource: str, name: str) -> None:
    import nltk

    try:
        nltk.data.find(resource)
    except LookupError as err:
        raise MissingNLTKDataError(
            f"NLTK's {name} is not installed (looked for '{resource}' in {nltk.data.path}). Install it with:\n"
            f"    {DOWNLOAD_HINT}\nor point the NLTK_DATA environment variable at a folder that holds it."
        ) from err


@functools.lru_cache(maxsize=1)
def lemmatizer():
    """WordNet lemmatizer (warmed up, so a missing WordNet fails here and not mid-run)."""
    _require("corpora/wordnet", "WordNet corpus")
    from nltk.stem import WordNetLemmatizer

    lemma = WordNetLemmatizer()
    lemma.lemmatize("dogs", "n")
    return lemma


@functools.lru_cache(maxsize=1)
def pos_tagger():
    """NLTK's averaged-perceptron English POS tagger."""
    _require("taggers/averaged_perceptron_tagger_eng", "English POS tagger")
    from nltk.tag import PerceptronTagger

    return PerceptronTagger()
