"""One tag normalisation for every parser backend.

Lowercase; strip punctuation, determiners, numbers and quantity words; singular lemma of the head (last) word for
objects, WordNet adjective lemma for attributes; collapse whitespace; reject anything that is not plain lowercase
words (CJK, digits, URLs) and, optionally, words from a stop-list of non-visual terms. Duplicates are merged keeping
first-seen order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .nltk_data import lemmatizer

__all__ = ["NON_VISUAL_WORDS", "normalize_tag", "normalize_tags"]

_LEADING = frozenset(
    "a an the this that these those some any many several few each every another other various lots lot of "
    "one two three four five six seven eight nine ten eleven twelve dozen dozens hundreds thousands "
    "couple pair group bunch its their his her my our your".split()
)
_VALID = re.compile(r"^[a-z][a-z'\- ]*[a-z]$")  # two or more letters
_PUNCT = re.compile(r"[^\w\s'\-]+")
_MAX_WORDS = 4

#: Words that name no visible thing or property (optional stop-list, ``--stop-list``).
NON_VISUAL_WORDS = frozenset(
    "image photo photograph picture pic stock illustration vector view background foreground closeup close-up "
    "shot scene thing stuff item object time day year moment way idea concept design style type kind lot top side "
    "front back part area detail copy space text logo royalty free premium people person".split()
)


def normalize_tag(text: str, kind: str, stop_words: Iterable[str] = ()) -> str | None:
    """The normal form of one object/attribute tag, or None if nothing valid remains."""
    if kind not in ("object", "attribute"):
        raise ValueError(f"tag kind must be 'object' or 'attribute', got '{kind}'")
    text = str(text).lower()
    if "://" in text or "www." in text or "@" in text:
        return None
    words = _PUNCT.sub(" ", text.replace("_", " ")).split()
    while words and (words[0] in _LEADING or words[0].isdigit()):
        words = words[1:]
    words = [w.strip("'-") for w in words if w.strip("'-")]
    if not words or len(words) > _MAX_WORDS:
        return None
    lemma = lemmatizer()
    pos = "n" if kind == "object" else "a"
    words[-1] = lemma.lemmatize(words[-1], pos)
    tag = " ".join(words)
    if not _VALID.match(tag) or tag in _LEADING:
        return None
    stop = set(stop_words)
    if tag in stop or (kind == "object" and words[-1] in stop):
        return None
    return tag


def normalize_tags(texts: Iterable[str], kind: str, stop_words: Iterable[str] = ()) -> list[str]:
    """Normalise a list of tags and merge duplicates (first-seen order)."""
    stop = frozenset(stop_words)
    seen: dict[str, None] = {}
    for text in texts:
        tag = normalize_tag(text, kind, stop)
        if tag is not None:
            seen.setdefault(tag)
    return list(seen)
