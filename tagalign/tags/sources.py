"""Caption readers that stream ``(key, caption)`` records and never hold the corpus in memory.

Inputs:
* an img2dataset output directory: ``NNNNN.parquet`` (preferred, captions only; rows whose ``status`` is not
  ``success`` are skipped, as they have no image) or, without parquet, ``NNNNN.tar`` (``key.txt`` members); the
  key is img2dataset's sample key;
* a CC12M-style ``.tsv`` (``url<TAB>caption``; key = url);
* a ``.jsonl`` file of ``{"key": ..., "caption": ...}`` objects.

Problems are never fatal and never silent: undecodable bytes are replaced and flagged, a malformed line becomes a
*rejected* record (it is written out as ``failed`` so nothing is lost), and an unreadable or truncated file is
reported in :class:`SourceReport` after the records read before the damage.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CaptionRecord", "SourceReport", "expand_inputs", "iter_records"]


@dataclass
class CaptionRecord:
    key: str
    caption: str
    source: str
    rejected: str | None = None  # why the record could not be read as (key, caption)
    invalid_utf8: bool = False


@dataclass
class SourceReport:
    """File-level problems met while streaming (per run)."""

    files: int = 0
    bad_files: list[dict] = field(default_factory=list)

    def add_error(self, path: Path, error: str, records_read: int) -> None:
        self.bad_files.append({"file": str(path), "error": error, "records_read": records_read})


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), True


def _img2dataset_shards(folder: Path) -> list[Path]:
    """One file per shard: its ``.parquet`` (captions without image bytes) where present, else its ``.tar``."""
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.glob("*.tar")) + sorted(folder.glob("*.parquet")):
        by_stem[path.stem] = path  # a parquet, listed last, replaces its shard's tar
    return [by_stem[stem] for stem in sorted(by_stem)]


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Input files in a deterministic order; an img2dataset directory expands to its parquet (or tar) shards."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            shards = _img2dataset_shards(path)
            if not shards:
                raise FileNotFoundError(f"{path}: no img2dataset shards (*.parquet or *.tar) in this directory")
            files.extend(shards)
        elif path.is_file():
            if path.suffix not in (".tsv", ".jsonl", ".parquet", ".tar"):
                raise ValueError(f"{path}: unsupported caption file (expected .tsv, .jsonl, .parquet or .tar)")
            files.append(path)
        else:
            raise FileNotFoundError(f"caption input '{path}' does not exist")
    return files


def _read_tsv(path: Path) -> Iterator[CaptionRecord]:
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            text, bad_utf8 = _decode(raw.rstrip(b"\r\n"))
            parts = text.split("\t")
            if len(parts) != 2 or not parts[0].strip():
                yield CaptionRecord(f"{path.name}#L{line_no}", text, str(path),
                                    rejected=f"expected 'url<TAB>caption', got {len(parts)} field(s)",
                                    invalid_utf8=bad_utf8)
                continue
            yield CaptionRecord(parts[0].strip(), parts[1], str(path), invalid_utf8=bad_utf8)


def _read_jsonl(path: Path) -> Iterator[CaptionRecord]:
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            text, bad_utf8 = _decode(raw.rstrip(b"\r\n"))
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
                key, caption = obj["key"], obj["caption"]
                if not isinstance(caption, str) or not isinstance(key, str | int):
                    raise TypeError("key must be a string/int and caption a string")
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                yield CaptionRecord(f"{path.name}#L{line_no}", text, str(path),
                                    rejected=f'expected {{"key", "caption"}}: {err}', invalid_utf8=bad_utf8)
                continue
            yield CaptionRecord(str(key), caption, str(path), invalid_utf8=bad_utf8)


def _read_parquet(path: Path) -> Iterator[CaptionRecord]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    columns = [c for c in ("key", "caption", "status") if c in table.schema_arrow.names]
    if "key" not in columns or "caption" not in columns:
        raise ValueError(f"parquet shard lacks 'key'/'caption' columns (has {table.schema_arrow.names})")
    for batch in table.iter_batches(columns=columns, batch_size=8192):
        data = batch.to_pydict()
        statuses = data.get("status") or [None] * len(data["key"])
        for key, caption, status in zip(data["key"], data["caption"], statuses):
            if status is not None and status != "success":
                continue
            yield CaptionRecord(str(key), caption if isinstance(caption, str) else "", str(path))


def _read_tar(path: Path) -> Iterator[CaptionRecord]:
    with tarfile.open(path, "r|*") as archive:
        for member in archive:
            if not member.isfile() or not member.name.endswith(".txt"):
                continue
            handle = archive.extractfile(member)
            text, bad_utf8 = _decode(handle.read() if handle else b"")
            key = Path(member.name).name[: -len(".txt")]
            yield CaptionRecord(key, text, str(path), invalid_utf8=bad_utf8)


_READERS = {".tsv": _read_tsv, ".jsonl": _read_jsonl, ".parquet": _read_parquet, ".tar": _read_tar}


def iter_records(files: Sequence[Path], report: SourceReport) -> Iterator[CaptionRecord]:
    """Every record of every file in order; a damaged file is reported and reading goes on with the next."""
    for path in files:
        report.files += 1
        count = 0
        try:
            for record in _READERS[path.suffix](path):
                count += 1
                yield record
        except (OSError, EOFError, tarfile.TarError, ValueError) as err:
            report.add_error(path, f"{type(err).__name__}: {err}", count)
        except Exception as err:  # pyarrow raises its own error types for damaged parquet files
            if type(err).__module__.startswith("pyarrow"):
                report.add_error(path, f"{type(err).__name__}: {err}", count)
            else:
                raise
