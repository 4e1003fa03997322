"""LLM tag descriptions in RAM++'s file layout: reading, writing and entry 0.

The file (RAM++'s ``*_llm_tag_descriptions.json``) is a JSON array with one single-key object per tag, in tag
order: ``[{"cat": ["a photo of a cat.", "<description>", ...]}, ...]``. Entry 0 is ``"a photo of a {tag}."`` with
the tag lower-cased; the LLM descriptions follow, grouped by prompt (tagging spec §1.2). Standard library only: the
describe stage writes it from vLLM's environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..atomic import atomic_write_text

__all__ = ["load_descriptions", "photo_prompt", "write_descriptions"]


def photo_prompt(tag: str) -> str:
    """RAM++'s entry 0: ``"a photo of a " + tag.lower() + "."`` (the released file's form)."""
    return f"a photo of a {tag.lower()}."


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
