"""RAM++'s description prompts and the rule that keeps or filters one LLM description (the describe stage).

The description file itself (RAM++'s layout) is read and written by :mod:`tagalign.models.description_file`.
"""

from __future__ import annotations

import re

__all__ = ["DESCRIPTION_PROMPTS", "classify_description", "mentions_tag"]

#: RAM++'s five prompts, worded as in its generation script; "a(n)" is kept literally (spec §1.1).
DESCRIPTION_PROMPTS: tuple[str, ...] = (
    "Describe concisely what a(n) {tag} looks like:",
    "How can you identify a(n) {tag} concisely?",
    "What does a(n) {tag} look like concisely?",
    "What are the identifying characteristics of a(n) {tag}:",
    "Please provide a concise description of the visual characteristics of {tag}:",
)

_STOP_WORDS = frozenset("a an the of on in at to with and or for by from no".split())
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[^\d\s])[.!?](?=\s|$)")  # not a list number such as "1."


def _stems(tag: str) -> list[str]:
    """The tag's content words, shortened so plurals and simple inflections still match ("knife" -> "kni")."""
    words = [w for w in _WORD.findall(tag.lower().replace("_", " ")) if w not in _STOP_WORDS] or \
        _WORD.findall(tag.lower())
    return [w if len(w) <= 4 else w[:-2] for w in words]


def mentions_tag(text: str, tag: str) -> bool:
    """True if one of the tag's content words (or its stem) starts a word of ``text``."""
    lowered = text.lower()
    return any(re.search(rf"(?<![a-z0-9]){re.escape(stem)}", lowered) for stem in _stems(tag))


def classify_description(text: str, tag: str, finish_reason: str | None = "stop") -> tuple[str, str]:
    """``(status, kept_text)`` for one LLM answer.

    Status: ``kept``; ``trimmed`` (the answer hit the length limit mid-sentence and is cut back to its last full
    sentence); ``empty``; ``cut`` (hit the length limit with no full sentence); ``off_topic`` (no word of the tag
    in it). Only ``kept`` and ``trimmed`` answers go into the description file.
    """
    text = text.strip()
    if not text:
        return "empty", ""
    status = "kept"
    if finish_reason == "length" and text[-1] not in ".!?":
        ends = list(_SENTENCE_END.finditer(text))
        if not ends:
            return "cut", ""
        text, status = text[: ends[-1].end()].strip(), "trimmed"
    if not mentions_tag(text, tag):
        return "off_topic", ""
    return status, text
