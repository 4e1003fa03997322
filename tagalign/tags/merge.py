"""The merge stage: vocabulary from every parsed part, then labels and the frequency prior."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .labels import write_labels
from .vocab import TagVocab, count_tags, iter_parsed, read_tag_list

logger = logging.getLogger(__name__)

__all__ = ["merge_parsed"]


def merge_parsed(out_dir: str | Path, top_k_objects: int | None = 10_000, top_k_attributes: int | None = 1_000,
                 min_count: int = 1, vocab_from: str | Path | None = None) -> dict:
    """Write ``vocab.csv``, ``labels.sqlite``, ``tag_frequency.npy`` and ``merge_stats.json`` under ``out_dir``.

    Two streaming passes over the part files (count, then label); memory holds only the tag counters.
    """
    out_dir = Path(out_dir)
    counts, ok_images = count_tags(iter_parsed(out_dir))
    if vocab_from:
        vocab = TagVocab.from_list(read_tag_list(vocab_from), counts)
    else:
        vocab = TagVocab.from_counts(counts, {"object": top_k_objects, "attribute": top_k_attributes}, min_count)
    vocab.save(out_dir / "vocab.csv")
    logger.info("vocabulary: %d tags (%d objects, %d attributes) from %d tagged captions", len(vocab),
                vocab.kinds.count("object"), vocab.kinds.count("attribute"), ok_images)

    total = failed = 0
    without_tags = 0

    def rows():
        nonlocal total, failed, without_tags
        for record in iter_parsed(out_dir):
            total += 1
            if record["status"] != "ok":
                failed += 1
                continue
            ids = vocab.ids(record["objects"], record["attributes"])
            without_tags += not ids
            yield record["key"], ids

    written = write_labels(out_dir / "labels.sqlite", rows(), len(vocab), vocab.hash)
    stats = {
        "records": total,
        "failed_records": failed,
        "labelled_samples": written["samples"],
        "duplicate_keys": written["duplicate_keys"],
        "samples_without_vocab_tags": without_tags,
        "num_tags": len(vocab),
        "vocab_hash": vocab.hash,
        "vocab_from": str(vocab_from) if vocab_from else None,
    }
    tmp = out_dir / ".merge_stats.json.tmp"
    tmp.write_text(json.dumps(stats, indent=2))
    os.replace(tmp, out_dir / "merge_stats.json")
    logger.info("labels: %d samples (%d failed records left out, %d duplicate keys, %d without any vocabulary tag)",
                stats["labelled_samples"], failed, written["duplicate_keys"], without_tags)
    return stats
