"""The merge stage's all-or-nothing commit of its outputs.

The outputs (``vocab.csv``, ``labels.sqlite``, ``tag_frequency.npy``, ``merge_stats.json``) change together or not
at all: they are written into ``OUT/.merge-staging/``, synced, then a journal ``OUT/.merge-commit.json`` is written
(the commit point) and the files are renamed into place. A merge killed before the journal leaves the previous set
untouched; one killed after it is completed by :func:`finish_interrupted_merge`, which merge, embed and training
(through :class:`tagalign.tags.labels.LabelStore`) call before they read the files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["JOURNAL", "MERGE_OUTPUTS", "STAGING", "apply_journal", "finish_interrupted_merge", "staging_dir"]

MERGE_OUTPUTS = ("vocab.csv", "labels.sqlite", "tag_frequency.npy", "merge_stats.json")
#: The folder outputs are written into, and the journal whose presence is the commit point.
STAGING = ".merge-staging"
JOURNAL = ".merge-commit.json"


def staging_dir(out_dir: Path) -> Path:
    """The folder the merge writes its outputs into before :func:`commit_staged` (created)."""
    staging = out_dir / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def finish_interrupted_merge(out_dir: str | Path) -> bool:
    """Complete a merge that was killed after its commit point, or drop one killed before it. True if completed."""
    out_dir = Path(out_dir)
    staging, journal = out_dir / STAGING, out_dir / JOURNAL
    if not journal.exists():  # killed before the commit point: the previous set stands, drop the new one
        shutil.rmtree(staging, ignore_errors=True)
        journal.with_name(f"{JOURNAL}.tmp").unlink(missing_ok=True)
        return False
    apply_journal(out_dir)
    logger.info("%s: completed an interrupted merge (all of %s are from it)", out_dir, ", ".join(MERGE_OUTPUTS))
    return True


def apply_journal(out_dir: Path) -> None:
    """Rename the journal's staged files into place, then drop the journal and the staging folder."""
    staging, journal = out_dir / STAGING, out_dir / JOURNAL
    for name in json.loads(journal.read_text())["files"]:
        if (staging / name).exists():
            os.replace(staging / name, out_dir / name)
    journal.unlink()
    shutil.rmtree(staging, ignore_errors=True)
