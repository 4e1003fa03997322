"""The merge stage: vocabulary from every parsed part, then labels and the frequency prior.

The outputs change together or not at all: they are staged, synced, then committed by a journal
(:mod:`.merge_commit`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from .labels import write_labels
from .merge_commit import JOURNAL, MERGE_OUTPUTS, apply_journal, finish_interrupted_merge, staging_dir
from .vocab import TagVocab, count_tags, iter_parsed, read_tag_list

logger = logging.getLogger(__name__)

__all__ = ["MERGE_OUTPUTS", "IncompleteParseError", "finish_interrupted_merge", "merge_parsed",
           "write_merge_outputs"]



class IncompleteParseError(RuntimeError):
    """Some parse shards have not finished: merging now would label only part of the data."""


def _check_parse_finished(out_dir: Path) -> None:
    """Every shard of the parse run must have written its ``stats/shard-*.json``."""
    reports = {}
    for path in sorted((out_dir / "stats").glob("shard-*.json")):
        report = json.loads(path.read_text())
        reports[int(report["shard_id"])] = int(report["num_shards"])
    part_shards = {int(p.name.split("-")[1]) for p in (out_dir / "parsed").glob("part-*.jsonl")}
    counts = set(reports.values())
    if len(counts) > 1:
        raise IncompleteParseError(f"{out_dir}/stats: shard reports disagree on the shard count ({sorted(counts)})")
    expected = set(range(counts.pop())) if counts else set()
    missing = sorted((expected | part_shards) - set(reports))
    if missing:
        raise IncompleteParseError(
            f"{out_dir}: parse shard(s) {missing[:10]} have not finished (no stats/shard-NNNNN.json"
            f"{'' if not expected else f' of {len(expected)} shards'}). Run `tools/parse_tags.py parse` for them "
            f"(the same command resumes) before merging; merging now would label only part of the data."
        )


def _sync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_merge_outputs(out_dir: Path, vocab: TagVocab, rows: Iterable[tuple[str, list[int]]],
                        extra: dict) -> dict:
    """Stage ``vocab.csv``, ``labels.sqlite`` (+ ``tag_frequency.npy``) and ``merge_stats.json``, then commit them
    as a set (see the module docstring). ``rows`` may count into ``extra``'s values lazily: they are read after the
    labels are written. Returns the statistics."""
    finish_interrupted_merge(out_dir)
    staging = staging_dir(out_dir)
    vocab.save(staging / "vocab.csv")
    written = write_labels(staging / "labels.sqlite", rows, len(vocab), vocab.hash)
    stats = {
        **{k: (v() if callable(v) else v) for k, v in extra.items()},
        "labelled_samples": written["samples"],
        "duplicate_keys": written["duplicate_keys"],
        "num_tags": len(vocab),
        "vocab_hash": vocab.hash,
    }
    (staging / "merge_stats.json").write_text(json.dumps(stats, indent=2))
    for name in MERGE_OUTPUTS:
        _sync(staging / name)
    journal_tmp = out_dir / f"{JOURNAL}.tmp"
    journal_tmp.write_text(json.dumps({"files": list(MERGE_OUTPUTS)}))
    _sync(journal_tmp)
    os.replace(journal_tmp, out_dir / JOURNAL)  # the commit point
    apply_journal(out_dir)
    return stats


def merge_parsed(out_dir: str | Path, top_k_objects: int | None = 10_000, top_k_attributes: int | None = 1_000,
                 min_count: int = 1, vocab_from: str | Path | None = None) -> dict:
    """Write ``vocab.csv``, ``labels.sqlite``, ``tag_frequency.npy`` and ``merge_stats.json`` under ``out_dir``.

    Two streaming passes over the part files (count, then label); memory holds only the tag counters.
    """
    out_dir = Path(out_dir)
    finish_interrupted_merge(out_dir)
    _check_parse_finished(out_dir)
    counts, ok_images = count_tags(iter_parsed(out_dir))
    if vocab_from:
        vocab = TagVocab.from_list(read_tag_list(vocab_from), counts)
    else:
        vocab = TagVocab.from_counts(counts, {"object": top_k_objects, "attribute": top_k_attributes}, min_count)
    logger.info("vocabulary: %d tags (%d objects, %d attributes) from %d tagged captions", len(vocab),
                vocab.kinds.count("object"), vocab.kinds.count("attribute"), ok_images)
    tally = {"records": 0, "failed": 0, "without_tags": 0}

    def rows():
        for record in iter_parsed(out_dir):
            tally["records"] += 1
            if record["status"] != "ok":
                tally["failed"] += 1
                continue
            ids = vocab.ids(record["objects"], record["attributes"])
            tally["without_tags"] += not ids
            yield record["key"], ids

    stats = write_merge_outputs(out_dir, vocab, rows(), {
        "records": lambda: tally["records"],
        "failed_records": lambda: tally["failed"],
        "samples_without_vocab_tags": lambda: tally["without_tags"],
        "vocab_from": str(vocab_from) if vocab_from else None,
    })
    logger.info("labels: %d samples (%d failed records left out, %d duplicate keys, %d without any vocabulary tag)",
                stats["labelled_samples"], stats["failed_records"], stats["duplicate_keys"],
                stats["samples_without_vocab_tags"])
    return stats
