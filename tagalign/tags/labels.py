"""Per-sample tag ids keyed by sample key (or URL), stored in SQLite, plus the tag frequency prior.

``labels.sqlite``: table ``labels(key TEXT PRIMARY KEY, tag_ids BLOB)`` (little-endian int32 tag indices into
``vocab.csv``) and table ``meta(name, value)`` (``num_tags``, ``vocab_hash``, ``num_samples``). Random access by key
from any number of data-loader workers, small on disk, no need to hold 12M keys in memory.
``tag_frequency.npy``: float64 ``[T]``, the fraction of labelled samples carrying each tag (balanced softmax prior).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .merge_commit import finish_interrupted_merge

__all__ = ["LabelStore", "write_labels"]


def write_labels(path: str | Path, rows: Iterable[tuple[str, Sequence[int]]], num_tags: int,
                 vocab_hash: str, batch: int = 50_000) -> dict:
    """Write ``(key, tag_ids)`` rows atomically; a repeated key keeps its first row. Returns counts."""
    path = Path(path)
    frequency = np.zeros(num_tags, dtype=np.int64)
    with atomic_path(path) as tmp, closing(sqlite3.connect(tmp)) as connection:  # closed before the rename
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("CREATE TABLE labels (key TEXT PRIMARY KEY, tag_ids BLOB NOT NULL)")
        connection.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
        pending: list[tuple[str, bytes]] = []
        seen = 0

        def flush() -> None:
            connection.executemany("INSERT OR IGNORE INTO labels VALUES (?, ?)", pending)
            pending.clear()

        for key, ids in rows:
            seen += 1
            pending.append((key, np.asarray(ids, dtype="<i4").tobytes()))
            if len(pending) >= batch:
                flush()
        flush()
        stored = connection.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
        for (blob,) in connection.execute("SELECT tag_ids FROM labels"):
            frequency[np.frombuffer(blob, dtype="<i4")] += 1
        meta = {"num_tags": num_tags, "vocab_hash": vocab_hash, "num_samples": stored}
        connection.executemany("INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()])
        connection.commit()
    with atomic_path(path.with_name("tag_frequency.npy")) as tmp:
        np.save(tmp, frequency / max(stored, 1))
    return {"samples": stored, "duplicate_keys": seen - stored}


class LabelStore:
    """Read-only access to ``labels.sqlite``; safe to open in each data-loader worker."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        finish_interrupted_merge(self.path.parent)  # a merge killed after its commit point: finish it first
        if not self.path.is_file():
            raise FileNotFoundError(f"label file {self.path} does not exist (run tools/parse_tags.py merge)")
        self._connection: sqlite3.Connection | None = None
        self._pid = None
        try:
            meta = dict(self._db().execute("SELECT name, value FROM meta").fetchall())
            self.num_tags = int(meta["num_tags"])
            self.vocab_hash = meta["vocab_hash"]
            self.num_samples = int(meta["num_samples"])
        except (sqlite3.DatabaseError, KeyError, ValueError) as err:
            raise ValueError(
                f"{self.path} is not a label file written by tools/parse_tags.py merge (expected an SQLite database "
                f"with tables 'labels' and 'meta'; {type(err).__name__}: {err}). Run the merge stage again."
            ) from err

    def _db(self) -> sqlite3.Connection:
        if self._connection is None or self._pid != os.getpid():  # one connection per process (fork-safe)
            self._connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._pid = os.getpid()
        return self._connection

    def get(self, key: str) -> list[int] | None:
        """The tag ids of ``key``, or None if the key has no label."""
        row = self._db().execute("SELECT tag_ids FROM labels WHERE key = ?", (key,)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype="<i4").tolist()

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return self.num_samples

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_connection"] = None
        return state
