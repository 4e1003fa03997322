"""The parse stage: stream captions, tag them in chunks, write ``OUT/parsed/part-SSSSS-CCCCCC.jsonl`` atomically.

Every input record appears exactly once in the part files, as
``{"key", "caption", "objects", "attributes", "status"}`` (plus ``"error"``/``"raw"`` when ``status`` is
``"failed"``). Work is split deterministically into ``num_shards`` shards: by file when there are at least as many
input files as shards, else by record index. Each shard's records are cut into chunks of ``chunk_size``; a chunk's
part file (and its ``.stats.json`` sidecar) is renamed into place only when complete, so a killed run resumes by
skipping the chunks already written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..atomic import atomic_write_text, remove_leftover_temporaries
from .parsers import ParseResult, TagParser
from .sources import CaptionRecord, SourceReport, expand_inputs, iter_records

logger = logging.getLogger(__name__)

__all__ = ["ResumeMismatchError", "parse_captions", "shard_from_environment"]

MAX_CAPTION_CHARS = 1000
CJK_CHARACTERS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


class ResumeMismatchError(RuntimeError):
    """Existing part files do not match the input (it changed, or different shard settings were used)."""


def shard_from_environment() -> tuple[int, int]:
    """``(num_shards, shard_id)`` from SLURM (SLURM_NTASKS/SLURM_PROCID) or torchrun (WORLD_SIZE/RANK)."""
    for total, rank in (("SLURM_NTASKS", "SLURM_PROCID"), ("WORLD_SIZE", "RANK")):
        if os.environ.get(total) and os.environ.get(rank):
            return int(os.environ[total]), int(os.environ[rank])
    return 1, 0


def _shard_records(files: Sequence[Path], num_shards: int, shard_id: int,
                   report: SourceReport) -> Iterator[CaptionRecord]:
    if len(files) >= num_shards:
        yield from iter_records([f for i, f in enumerate(files) if i % num_shards == shard_id], report)
        return
    for index, record in enumerate(iter_records(files, report)):
        if index % num_shards == shard_id:
            yield record


def _chunks(records: Iterator[CaptionRecord], size: int) -> Iterator[list[CaptionRecord]]:
    chunk: list[CaptionRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _keys_digest(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode("utf-8", errors="surrogatepass")).hexdigest()


def _part_keys(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["key"] for line in handle if line.strip()]


def _check_settings(parsed_dir: Path, settings: dict) -> None:
    """Refuse to resume into part files written with another shard count or chunk size, naming what changed."""
    for existing in sorted(parsed_dir.glob("settings-*.json")):
        saved = json.loads(existing.read_text())
        changed = [f"--{name.replace('_', '-')} {saved.get(name)} -> {settings[name]}"
                   for name in ("num_shards", "chunk_size") if saved.get(name) != settings[name]]
        if changed:
            raise ResumeMismatchError(
                f"{parsed_dir} holds part files written with other settings ({existing.name}: {', '.join(changed)}). "
                f"Resuming would lose or repeat captions: rerun with the earlier settings, or use a new output "
                f"directory."
            )


def _resume_decision(part: Path, sidecar: Path, keys: list[str]) -> bool:
    """True if the finished part holds exactly ``keys``; False if the input grew past it (re-parse the chunk)."""
    stats = json.loads(sidecar.read_text())
    if stats.get("keys_sha256") == _keys_digest(keys):
        return True
    done = _part_keys(part)
    if done == keys:
        return True
    if len(done) < len(keys) and keys[: len(done)] == done:
        logger.info("%s: the input now has %d captions in this chunk (was %d); tagging the chunk again", part.name,
                    len(keys), len(done))
        return False
    first_diff = next((i for i, (a, b) in enumerate(zip(done, keys)) if a != b), min(len(done), len(keys)))
    raise ResumeMismatchError(
        f"{part} does not match the input: caption {first_diff} of this chunk was "
        f"{done[first_diff] if first_diff < len(done) else '(none)'!r}, the input now gives "
        f"{keys[first_diff] if first_diff < len(keys) else '(none)'!r}. The input changed: use a new output directory."
    )


def _tag_chunk(chunk: list[CaptionRecord], parser: TagParser, max_chars: int) -> tuple[list[dict], Counter]:
    stats: Counter = Counter(captions=len(chunk))
    rows: list[dict | None] = [None] * len(chunk)
    to_parse: list[int] = []
    for i, record in enumerate(chunk):
        stats["invalid_utf8"] += record.invalid_utf8
        row = {"key": record.key, "caption": record.caption, "objects": [], "attributes": []}
        if record.rejected:
            stats["malformed_records"] += 1
            rows[i] = {**row, "status": "failed", "error": record.rejected}
        elif not record.caption.strip():
            stats["empty_captions"] += 1
            rows[i] = {**row, "status": "failed", "error": "empty caption"}
        else:
            stats["cjk_captions"] += bool(CJK_CHARACTERS.search(record.caption))
            stats["truncated_captions"] += len(record.caption) > max_chars
            rows[i] = row
            to_parse.append(i)
    results: list[ParseResult] = parser.parse([chunk[i].caption[:max_chars] for i in to_parse]) if to_parse else []
    for i, result in zip(to_parse, results):
        row = rows[i]
        row.update(objects=result.objects, attributes=result.attributes, status=result.status)
        if result.status != "ok":
            stats["parse_failures"] += 1
            row.update(error=result.error, raw=result.raw)
    stats["ok"] = sum(r["status"] == "ok" for r in rows)
    stats["failed"] = len(rows) - stats["ok"]
    return rows, stats


def parse_captions(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    parser: TagParser,
    num_shards: int = 1,
    shard_id: int = 0,
    chunk_size: int = 10_000,
    max_chars: int = MAX_CAPTION_CHARS,
    progress: bool = True,
) -> dict:
    """Tag every caption of this shard; returns the shard's statistics (also written to ``OUT/stats/``)."""
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard id {shard_id} is outside 0..{num_shards - 1}")
    out_dir = Path(out_dir)
    parsed_dir, stats_dir = out_dir / "parsed", out_dir / "stats"
    parsed_dir.mkdir(parents=True, exist_ok=True)
    stats_dir.mkdir(parents=True, exist_ok=True)
    remove_leftover_temporaries(parsed_dir, f"part-{shard_id:05d}-*")  # left by a killed run of this shard
    files = expand_inputs(inputs)
    report = SourceReport()
    totals: Counter = Counter()
    resumed = 0
    start = time.monotonic()
    last_log = start
    settings = {"num_shards": num_shards, "shard_id": shard_id, "chunk_size": chunk_size}
    _check_settings(parsed_dir, settings)
    settings_file = parsed_dir / f"settings-{shard_id:05d}.json"
    if not settings_file.exists():
        atomic_write_text(settings_file, json.dumps(settings))
    index = -1
    for index, chunk in enumerate(_chunks(_shard_records(files, num_shards, shard_id, report), chunk_size)):
        part = parsed_dir / f"part-{shard_id:05d}-{index:06d}.jsonl"
        sidecar = part.with_suffix(".stats.json")
        keys = [record.key for record in chunk]
        if part.exists() and sidecar.exists() and _resume_decision(part, sidecar, keys):
            totals.update({k: v for k, v in json.loads(sidecar.read_text()).items() if isinstance(v, int)})
            resumed += 1
            continue
        rows, stats = _tag_chunk(chunk, parser, max_chars)
        stats = {**stats, "keys_sha256": _keys_digest(keys)}
        atomic_write_text(sidecar, json.dumps(dict(stats)))
        atomic_write_text(part, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        totals.update({k: v for k, v in stats.items() if isinstance(v, int)})
        now = time.monotonic()
        if progress and (now - last_log > 10 or index == 0):
            last_log = now
            done = totals["captions"]
            logger.info("shard %d/%d: %d captions tagged (%d ok, %d failed), %.0f captions/s", shard_id, num_shards,
                        done, totals["ok"], totals["failed"], done / max(now - start, 1e-9))
    leftover = sorted(p.name for p in parsed_dir.glob(f"part-{shard_id:05d}-*.jsonl")
                      if int(p.stem.rsplit("-", 1)[1]) > index)
    if leftover:
        raise ResumeMismatchError(
            f"{parsed_dir}: {', '.join(leftover[:3])} hold captions the input no longer has (it has {index + 1} "
            f"chunks for shard {shard_id}). The input shrank or changed: use a new output directory."
        )
    summary = {
        "shard_id": shard_id,
        "num_shards": num_shards,
        "parser": parser.name,
        **{k: int(totals.get(k, 0)) for k in ("captions", "ok", "failed", "parse_failures", "empty_captions",
                                              "malformed_records", "invalid_utf8", "cjk_captions",
                                              "truncated_captions")},
        "input_files": report.files,
        "bad_files": report.bad_files,
        "chunks_resumed": resumed,
    }
    atomic_write_text(stats_dir / f"shard-{shard_id:05d}.json", json.dumps(summary, indent=2))
    logger.info("shard %d/%d done: %d captions (%d ok, %d failed); %d bad input files; %d chunks were already done",
                shard_id, num_shards, summary["captions"], summary["ok"], summary["failed"], len(report.bad_files),
                resumed)
    return summary
