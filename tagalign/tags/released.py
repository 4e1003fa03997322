"""The authors' released tags (Dec 2024) in our label formats: ``object_list.csv`` + ``CC12M_url_object_index.json``.

``object_list.csv`` is the tag vocabulary in index order. Its exact layout is not documented, so any of these is
read: one column (the tag) or two (index, tag), with or without a header row. ``CC12M_url_object_index.json`` maps
each image URL to its tag indices. The result is the merge stage's set of files (``vocab.csv``, ``labels.sqlite``
keyed by URL, ``tag_frequency.npy``, ``merge_stats.json``), written as a set like a merge; the embed stage and
training with ``label_key="url"`` then work unchanged. Every malformed record is named with its file and position.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

from .vocab import TagVocab

logger = logging.getLogger(__name__)

__all__ = ["ReleasedTagsError", "import_released", "read_object_list"]

_HEADER_WORDS = {"tag", "tags", "name", "names", "object", "objects", "label", "labels", "class", "classes", "word",
                 "index", "id", "idx"}


class ReleasedTagsError(ValueError):
    """A released tag file is not in a layout this reader knows, or holds a record that does not fit."""


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def read_object_list(path: str | Path) -> list[str]:
    """The tag names of ``object_list.csv`` in index order (one column, or index + tag; optional header)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        raise ReleasedTagsError(f"{path}: no tags (the file is empty)")
    widths = {len(row) for row in rows[1:]} or {len(rows[0])}
    if len(widths) != 1 or widths.pop() not in (1, 2):
        raise ReleasedTagsError(f"{path}: expected one column (tag) or two (index, tag) on every row; found rows of "
                                f"{sorted({len(r) for r in rows})} columns")
    first = rows[0]
    two_columns = len(first) == 2
    header = (two_columns and not _is_int(first[0])) or (not two_columns and first[0].strip().lower() in _HEADER_WORDS)
    if header:
        rows = rows[1:]
    if not two_columns:
        tags = [row[0].strip() for row in rows]
    else:
        tags_by_index: dict[int, str] = {}
        for line, (index, tag) in enumerate(rows, start=2 if header else 1):
            if not _is_int(index):
                raise ReleasedTagsError(f"{path}, row {line}: index '{index}' is not an integer")
            if int(index) in tags_by_index:
                raise ReleasedTagsError(f"{path}, row {line}: index {index} appears twice")
            tags_by_index[int(index)] = tag.strip()
        if sorted(tags_by_index) != list(range(len(tags_by_index))):
            missing = sorted(set(range(len(tags_by_index))) - set(tags_by_index))[:5]
            raise ReleasedTagsError(f"{path}: indices must run 0..{len(tags_by_index) - 1} without gaps; missing "
                                    f"{missing}")
        tags = [tags_by_index[i] for i in range(len(tags_by_index))]
    for position, tag in enumerate(tags):
        if not tag:
            raise ReleasedTagsError(f"{path}: tag {position} is empty")
    duplicates = [tag for tag, count in Counter(tags).items() if count > 1]
    if duplicates:
        raise ReleasedTagsError(f"{path}: tags {duplicates[:5]} appear more than once")
    return tags


def _read_index(path: Path, num_tags: int) -> dict[str, list[int]]:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ReleasedTagsError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(index, dict):
        raise ReleasedTagsError(f"{path}: expected an object {{image URL: [tag indices]}}, got a "
                                f"{type(index).__name__}")
    for url, ids in index.items():
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise ReleasedTagsError(f"{path}, record {url!r}: expected a list of integer tag indices, got {ids!r}")
        bad = [i for i in ids if not 0 <= i < num_tags]
        if bad:
            raise ReleasedTagsError(f"{path}, record {url!r}: tag indices {bad[:5]} are outside 0..{num_tags - 1} "
                                    f"(the object list has {num_tags} tags)")
    return index


def import_released(object_list: str | Path, url_index: str | Path, out_dir: str | Path) -> dict:
    """Write the merge outputs for the released tags under ``out_dir``; returns the merge statistics."""
    from .merge import write_merge_outputs

    object_list, url_index = Path(object_list), Path(url_index)
    tags = read_object_list(object_list)
    index = _read_index(url_index, len(tags))
    counts = Counter(i for ids in index.values() for i in set(ids))
    vocab = TagVocab(tags, ["object"] * len(tags), [counts.get(i, 0) for i in range(len(tags))])
    rows = ((url, sorted(set(ids))) for url, ids in index.items())
    extra = {"source": "released", "object_list": str(object_list), "url_index": str(url_index),
             "label_key": "url", "samples_without_vocab_tags": sum(not ids for ids in index.values())}
    stats = write_merge_outputs(Path(out_dir), vocab, rows, extra)
    logger.info("imported %d released tags and the tags of %d image URLs into %s", len(tags), len(index), out_dir)
    return stats
