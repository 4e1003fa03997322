"""LLM tag descriptions in RAM++'s file layout, and the rule that keeps or filters one description.

The file (RAM++'s ``*_llm_tag_descriptions.json``) is a JSON array with one single-key object per tag, in tag
order: ``[{"cat": ["a photo of a cat.", "<description>", ...]}, ...]``. Entry 0 is ``"a photo of a {tag}."`` with
the tag lower-cased; the LLM descriptions follow, grouped by prompt (tagging spec §1.2).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..atomic import atomic_write_text

__all__ = ["DESCRIPTION_PROMPTS", "classify_description", "load_descriptions", "photo_prompt",
           "write_descriptions"]

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


def photo_prompt(tag: str) -> str:
    """RAM++'s entry 0: ``"a photo of a " + tag.lower() + "."`` (the released file's form)."""
    return f"a photo of a {tag.lower()}."


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


def load_descriptions(path: str | os.PathLike) -> dict[str, list[str]]:
    """``{tag: [descriptions]}`` in file order from RAM++'s layout (or a plain ``{tag: [...]}`` object)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the description file {path}: {err}") from None
    items = list(data.items()) if isinstance(data, dict) else None
    if items is None:
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON array of {{tag: [descriptions]}} objects (RAM++'s layout)")
        items = []
        for index, element in enumerate(data):
            if not isinstance(element, dict) or len(element) != 1:
                raise ValueError(f"{path}: element {index} should be an object with exactly one key (the tag), got "
                                 f"{str(element)[:80]!r}")
            items.extend(element.items())
    result: dict[str, list[str]] = {}
    for index, (tag, texts) in enumerate(items):
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{path}: tag {index} ({tag!r}) should map to a list of strings")
        if tag in result:
            raise ValueError(f"{path}: tag {tag!r} appears twice (elements {list(result).index(tag)} and {index})")
        result[tag] = texts
    return result


def write_descriptions(path: str | os.PathLike, descriptions: Mapping[str, Sequence[str]]) -> Path:
    """Write RAM++'s layout (``indent=3`` as its script does), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps([{tag: list(texts)} for tag, texts in descriptions.items()], indent=3,
                                       ensure_ascii=False))
    return path
