"""The tag vocabulary: per-kind counts over parsed captions, top-K, ``vocab.csv`` (``tag,kind,count``).

A tag's index is its row in ``vocab.csv`` (rows sorted by count, descending; ties by kind, then tag). The same word
can be both an object and an attribute ("orange"): the pair (tag, kind) is the identity.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_path
from .normalize import normalize_tag

__all__ = ["KINDS", "TagVocab", "count_tags", "iter_parsed", "read_tag_list"]

KINDS = ("object", "attribute")
_FIELD = {"object": "objects", "attribute": "attributes"}


def iter_parsed(out_dir: str | Path) -> Iterator[dict]:
    """Every parsed record of every part file (sorted by name: shard, then chunk)."""
    parts = sorted((Path(out_dir) / "parsed").glob("part-*.jsonl"))
    if not parts:
        raise FileNotFoundError(f"no parsed part files in {Path(out_dir) / 'parsed'}: run the parse stage first")
    for part in parts:
        with open(part, encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)


def count_tags(records: Iterable[dict]) -> tuple[dict[str, Counter], int]:
    """Per-kind image counts of each tag over ``ok`` records (each tag once per caption); and the ok count."""
    counts = {kind: Counter() for kind in KINDS}
    images = 0
    for record in records:
        if record["status"] != "ok":
            continue
        images += 1
        for kind in KINDS:
            counts[kind].update(set(record[_FIELD[kind]]))
    return counts, images


@dataclass
class TagVocab:
    tags: list[str]
    kinds: list[str]
    counts: list[int]

    def __post_init__(self) -> None:
        self.index = {(tag, kind): i for i, (tag, kind) in enumerate(zip(self.tags, self.kinds))}
        if len(self.index) != len(self.tags):
            raise ValueError("the vocabulary repeats a (tag, kind) pair")

    def __len__(self) -> int:
        return len(self.tags)

    @classmethod
    def from_counts(cls, counts: dict[str, Counter], top_k: dict[str, int | None], min_count: int = 1) -> TagVocab:
        rows = []
        for kind in KINDS:
            ranked = sorted(((c, t) for t, c in counts[kind].items() if c >= min_count), key=lambda x: (-x[0], x[1]))
            limit = top_k.get(kind)
            rows.extend((tag, kind, count) for count, tag in ranked[: limit if limit is not None else len(ranked)])
        rows.sort(key=lambda r: (-r[2], KINDS.index(r[1]), r[0]))
        return cls([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])

    @classmethod
    def from_list(cls, entries: list[tuple[str, str]], counts: dict[str, Counter]) -> TagVocab:
        """An external vocabulary, in its own order, with counts from the parsed corpus."""
        return cls([t for t, _ in entries], [k for _, k in entries], [counts[k][t] for t, k in entries])

    def ids(self, objects: Iterable[str], attributes: Iterable[str]) -> list[int]:
        found = [self.index.get((t, "object")) for t in objects]
        found += [self.index.get((t, "attribute")) for t in attributes]
        return sorted({i for i in found if i is not None})

    @property
    def hash(self) -> str:
        return hashlib.sha256("\n".join(f"{t}\t{k}" for t, k in zip(self.tags, self.kinds)).encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["tag", "kind", "count"])
            writer.writerows(zip(self.tags, self.kinds, self.counts))

    @classmethod
    def load(cls, path: str | Path) -> TagVocab:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != ["tag", "kind", "count"]:
                raise ValueError(f"{path}: expected header 'tag,kind,count', got {reader.fieldnames}")
            rows = list(reader)
        return cls([r["tag"] for r in rows], [r["kind"] for r in rows], [int(r["count"]) for r in rows])


def read_tag_list(path: str | Path) -> list[tuple[str, str]]:
    """An external tag list: a ``.csv`` with a ``tag`` column (optional ``kind``) or a text file, one tag per line
    (e.g. Tag2Text/RAM's 4,585 tags). Tags are normalised like parsed ones; duplicates are dropped."""
    path = Path(path)
    with open(path, encoding="utf-8") as handle:
        if path.suffix == ".csv":
            reader = csv.DictReader(handle)
            if "tag" not in (reader.fieldnames or []):
                raise ValueError(f"{path}: a csv tag list needs a 'tag' column")
            raw = [(row["tag"], row.get("kind") or "object") for row in reader]
        else:
            raw = [(line.strip(), "object") for line in handle if line.strip() and not line.startswith("#")]
    entries: dict[tuple[str, str], None] = {}
    for tag, kind in raw:
        if kind not in KINDS:
            raise ValueError(f"{path}: tag '{tag}' has kind '{kind}', expected one of {KINDS}")
        normal = normalize_tag(tag, kind)
        if normal is not None:
            entries.setdefault((normal, kind))
    return list(entries)
