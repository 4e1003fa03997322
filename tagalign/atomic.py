"""Atomic file writes: a file is complete or absent, even when the job is killed mid-write.

The data goes to a temporary name beside the target (same file system, same extension, so writers that infer the
format from it still work), is synced to disk, then renamed over the target (``os.replace`` is atomic within a file
system). Standard library only, so the tag pipeline can use it in the vLLM environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "remove_leftover_temporaries"]


def remove_leftover_temporaries(folder: str | os.PathLike, name_pattern: str = "*") -> int:
    """Delete the temporaries that killed writers left in ``folder`` for targets matching ``name_pattern`` (a glob);
    returns how many. Call it only while no other process writes those targets."""
    leftovers = list(Path(folder).glob(f".{name_pattern}.*.tmp*"))  # the names atomic_path gives
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return len(leftovers)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; synced and renamed over ``path`` when the block ends, removed if
    it raises. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    tmp.unlink(missing_ok=True)  # a killed writer's, if it had this process id: start from an empty file
    try:
        yield tmp
        descriptor = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, atomically (:func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"))
