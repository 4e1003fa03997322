"""Unique output names for tools that write one set of files per input (no two inputs ever share an output)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["unique_stems"]


def unique_stems(paths: Sequence[str | Path]) -> list[str]:
    """One output stem per input, in order: the file's stem, or ``stem_ext`` where two inputs share a stem
    (``photo.jpg`` and ``photo.png`` -> ``photo_jpg``, ``photo_png``), with ``_2``, ``_3``... if still equal.
    Every renamed input is logged."""
    paths = [Path(p) for p in paths]
    stems = Counter(p.stem for p in paths)
    names = [f"{p.stem}_{p.suffix.lstrip('.').lower()}" if stems[p.stem] > 1 and p.suffix else p.stem for p in paths]
    used: set[str] = set()
    result = []
    for path, name in zip(paths, names):
        unique, count = name, 1
        while unique in used:
            count += 1
            unique = f"{name}_{count}"
        used.add(unique)
        if unique != path.stem:
            logger.warning("%s shares its name with another input: its outputs are named '%s_*'", path, unique)
        result.append(unique)
    return result
