"""Checkpoint files for mmengine training: loaded on torch >= 2.6, written atomically.

Loading: mmengine 0.10 loads checkpoints with ``torch.load``'s default, which torch 2.6 switched to
``weights_only=True``; a full training state (optimizer, AMP scaler, mmengine's message hub with its
HistoryBuffers) is then refused and ``--resume`` fails. Local training checkpoints are written by this training
itself, so they are loaded as full pickles here. Remote schemes (http, s3, ...) keep mmengine's loaders.

Writing: mmengine's local file backend opens the target and writes into it, so a job killed during a save leaves a
truncated ``iter_N.pth``. The backend registered here writes a temporary file beside the target, syncs it and
renames it over the target: a checkpoint file is complete or absent. mmengine writes its ``last_checkpoint``
pointer with a plain ``open`` and an absolute path; :func:`latest_checkpoint` therefore also accepts an empty or
dangling pointer and falls back to the newest ``iter_N.pth``, and resolves the pointer inside the work dir it
resumes (a copied dir never continues the original's run).
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import torch
from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.runner.checkpoint import CheckpointLoader

from ..atomic import atomic_write_bytes

__all__ = ["AtomicLocalBackend", "ForeignCheckpointError", "atomic_write_bytes", "latest_checkpoint",
           "load_local_training_checkpoint", "readable_checkpoint"]


@CheckpointLoader.register_scheme(prefixes="", force=True)
def load_local_training_checkpoint(filename: str, map_location=None):
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"checkpoint {filename} does not exist")
    return torch.load(filename, map_location=map_location, weights_only=False)


def latest_checkpoint(work_dir: str | os.PathLike) -> tuple[str | None, str]:
    """The checkpoint ``--resume`` should continue from, and why: mmengine's ``last_checkpoint`` pointer when it
    names an existing file, else the ``iter_N.pth`` with the largest N, else ``None``."""
    work_dir = Path(work_dir)
    pointer = work_dir / "last_checkpoint"
    named = _inside(work_dir, pointer.read_text().strip()) if pointer.is_file() else ""
    if named and Path(named).is_file() and readable_checkpoint(named):
        return named, f"{pointer} names it"
    iterations = sorted(
        ((int(match.group(1)), path) for path in work_dir.glob("iter_*.pth")
         if (match := re.fullmatch(r"iter_(\d+)\.pth", path.name))),
        reverse=True,
    )
    if named and Path(named).is_file():
        reason = f"{pointer} names '{named}', which is damaged (truncated or not a torch checkpoint)"
    else:
        reason = f"{pointer} names a missing file '{named}'" if named else f"{pointer} is missing or empty"
    damaged = []
    for _, path in iterations:
        if readable_checkpoint(path):
            skipped = f" (skipped damaged {', '.join(damaged)})" if damaged else ""
            return str(path), f"{reason}; using the newest readable iteration checkpoint{skipped}"
        damaged.append(path.name)
    if damaged:
        return None, f"{reason}; every iteration checkpoint in {work_dir} is damaged: {', '.join(damaged)}"
    return None, f"no checkpoint in {work_dir}"


class ForeignCheckpointError(RuntimeError):
    """A work dir's resume pointer names a checkpoint of another folder: another run's, never to be continued."""


def _inside(work_dir: Path, named: str) -> str:
    """The pointer's checkpoint resolved inside ``work_dir``: mmengine writes an absolute path, which after the dir is
    copied or moved names the *original* dir. The same file name inside ``work_dir`` is used; a pointer into
    another folder with no such file here is refused, naming both folders."""
    if not named:
        return ""
    target = Path(named) if Path(named).is_absolute() else work_dir / named
    if target.parent.resolve() == work_dir.resolve():
        return str(target)
    local = work_dir / target.name
    if local.is_file():
        return str(local)
    raise ForeignCheckpointError(
        f"{work_dir / 'last_checkpoint'} names {target}, a checkpoint in another folder ({target.parent}), and "
        f"{work_dir} has no {target.name} of its own. A work dir resumes only its own checkpoints: this one was "
        f"probably copied or moved from {target.parent}. Copy the checkpoint into {work_dir}, or delete "
        f"{work_dir / 'last_checkpoint'} to resume from {work_dir}'s newest iter_N.pth.")


def readable_checkpoint(path: str | os.PathLike) -> bool:
    """A torch zip checkpoint whose central directory and every member's CRC check out (a truncated file fails)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose whole-file writes appear complete or not at all."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = "utf-8") -> None:
        atomic_write_bytes(filepath, obj.encode(encoding))


register_backend("local", AtomicLocalBackend, force=True, prefixes="")
