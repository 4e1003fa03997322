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
                 "words", "index", "id", "idx", "category", "categories", "category_name", "object_name", "tag_name",
                 "class_name", "label_name", "vocab", "vocabulary", "term", "terms", "noun", "nouns", "text"}


class ReleasedTagsError(ValueError):
    """A released tag file is not in a layout this reader knows, or holds a record that does not fit."""


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def read_object_list(path: str | Path) -> list[str]:
    """The tag names of ``object_list.csv`` in index order (one column, or index + tag; optional header)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            numbered = [(number, row) for number, row in enumerate(csv.reader(handle), start=1)
                        if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ReleasedTagsError(f"{path}, line {line}: not UTF-8 text (byte {err.start}: {err.reason}); expected a "
                                f"UTF-8 CSV") from None
    except csv.Error as err:
        raise ReleasedTagsError(f"{path}: not a readable CSV ({err})") from None
    if not numbered:
        raise ReleasedTagsError(f"{path}: no tags (the file is empty)")
    width = len(numbered[0][1])
    if width not in (1, 2):
        raise ReleasedTagsError(f"{path}, line {numbered[0][0]}: expected one column (tag) or two (index, tag); found "
                                f"{width}")
    for number, row in numbered:
        if len(row) != width:
            raise ReleasedTagsError(f"{path}, line {number}: {len(row)} columns where line {numbered[0][0]} has "
                                    f"{width}; expected the same columns (tag, or index and tag) on every line")
    lines = [number for number, _ in numbered]
    rows = [row for _, row in numbered]
    first = rows[0]
    two_columns = width == 2
    header = (two_columns and not _is_int(first[0])) or (not two_columns and first[0].strip().lower() in _HEADER_WORDS)
    if header:
        logger.info("%s: line %d (%s) read as a header, not a tag", path, lines[0], ",".join(first))
        rows, lines = rows[1:], lines[1:]
    if not two_columns:
        tags = [row[0].strip() for row in rows]
    else:
        tags_by_index: dict[int, str] = {}
        for line, (index, tag) in zip(lines, rows):
            if not _is_int(index):
                raise ReleasedTagsError(f"{path}, line {line}: index '{index}' is not an integer")
            if int(index) in tags_by_index:
                raise ReleasedTagsError(f"{path}, line {line}: index {index} appears twice")
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


def _same_tags(first: object, second: object) -> bool:
    if isinstance(first, list) and isinstance(second, list):
        try:
            return sorted(set(first)) == sorted(set(second))
        except TypeError:  # unhashable entries: the record check below names them
            return first == second
    return first == second


def _read_index(path: Path, num_tags: int, tally: Counter) -> dict[str, list[int]]:
    """``{url: tag indices}``; a URL repeated with the same tags is kept once (counted in ``tally``), a URL repeated
    with other tags is refused (which record would be right cannot be known)."""

    def unique_urls(pairs: list[tuple[str, object]]) -> dict:
        result: dict = {}
        for url, ids in pairs:
            if url in result:
                if not _same_tags(result[url], ids):
                    raise ReleasedTagsError(f"{path}: URL {url!r} appears twice with different tags "
                                            f"({result[url]!r} and {ids!r}); expected each image URL once")
                tally["duplicate_urls"] += 1
                continue
            result[url] = ids
        return result

    try:
        index = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_urls)
    except UnicodeDecodeError as err:
        raise ReleasedTagsError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except ValueError as err:
        if isinstance(err, ReleasedTagsError):
            raise
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
    tally: Counter = Counter()
    index = _read_index(url_index, len(tags), tally)
    if tally["duplicate_urls"]:
        logger.warning("%s: %d URL(s) listed twice with the same tags; each is kept once", url_index,
                       tally["duplicate_urls"])
    counts = Counter(i for ids in index.values() for i in set(ids))
    vocab = TagVocab(tags, ["object"] * len(tags), [counts.get(i, 0) for i in range(len(tags))])
    rows = ((url, sorted(set(ids))) for url, ids in index.items())
    extra = {"source": "released", "object_list": str(object_list), "url_index": str(url_index),
             "label_key": "url", "samples_without_vocab_tags": sum(not ids for ids in index.values()),
             "duplicate_urls_merged": tally["duplicate_urls"]}
    stats = write_merge_outputs(Path(out_dir), vocab, rows, extra)
    logger.info("imported %d released tags and the tags of %d image URLs into %s", len(tags), len(index), out_dir)
    return stats
