"""Class-name sets with synonyms (training-free spec §8): one line per class, synonyms split on ", ".

Every name of a class becomes a text query; a class scores the max over its queries. Sets:

* ``dataset``: the mmseg dataset's class names, one per class (the TCL/TagAlign family).
* ``sclip``: SCLIP's and NACLIP's files: VOC and COCO-Object describe background by 26 names (sky, wall, ...),
  person and tv monitor get expansions, "ship"/"table" rename boat/diningtable; the other datasets use squashed names
  ("trafficlight", "chestofdrawers").
* ``plain``: ClearCLIP's: the same, but a plain "background" and no person/tv expansions.
* ``proxyclip``: ProxyCLIP's (its files split on "; ", stored here as ", "): VOC's 26 background names without the
  person/tv expansions, COCO-Object's 17 background names; its other files equal ``sclip``'s.
* a path to a file in that format.

A name that appears in two classes can never win for the later one (``torch.argmax`` takes the first maximum): in
the ``sclip`` COCO-Object file "bed" is both a background name and class 60. :func:`resolve_duplicates` drops such a
name from the background by default, with a warning; ``keep`` reproduces the authors' files exactly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["NAME_SETS", "class_name_groups", "read_name_file", "resolve_duplicates"]

NAME_SETS = ("dataset", "sclip", "plain", "proxyclip")
_FILES = Path(__file__).parent / "class_names"


def read_name_file(path: str | os.PathLike) -> list[list[str]]:
    """A name file as ``[[name, synonym, ...], ...]``, one entry per class in label order."""
    groups = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        names = [name.strip() for name in line.split(", ")]
        if not line.strip() or not all(names):
            raise ValueError(f"{path}, line {number}: expected one class per line as 'name[, synonym, ...]', "
                             f"got {line!r}")
        groups.append(names)
    return groups


def class_name_groups(key: str, name_set: str, dataset_classes: Sequence[str]) -> list[list[str]]:
    """The queries of each class of dataset ``key`` under ``name_set`` (a set name or a file path).

    A set with no file for ``key`` falls back to ``plain``'s, then ``sclip``'s, then the dataset's own names.
    """
    if name_set == "dataset":
        groups = [[name] for name in dataset_classes]
    elif name_set in NAME_SETS:
        candidates = [_FILES / name_set / f"{key}.txt", _FILES / "sclip" / f"{key}.txt"]
        found = next((c for c in candidates if c.is_file()), None)
        groups = read_name_file(found) if found else [[name] for name in dataset_classes]
    else:
        if not Path(name_set).is_file():
            raise FileNotFoundError(f"class-name file {name_set} not found (or use one of {NAME_SETS})")
        groups = read_name_file(name_set)
    if len(groups) != len(dataset_classes):
        raise ValueError(f"class names '{name_set}' give {len(groups)} classes for dataset '{key}', which has "
                         f"{len(dataset_classes)} (one line per class, in label order, background first if any)")
    return groups


def resolve_duplicates(groups: list[list[str]], policy: str = "drop_from_background",
                       background: bool = False) -> list[list[str]]:
    """Handle names shared by several classes: ``drop_from_background`` removes them from class 0's synonyms when
    class 0 is the background (warning), ``keep`` leaves them (warning: the later class can never win)."""
    if policy not in ("drop_from_background", "keep"):
        raise ValueError(f"duplicate-name policy must be drop_from_background or keep, got '{policy}'")
    owners: dict[str, list[int]] = {}
    for index, names in enumerate(groups):
        for name in dict.fromkeys(names):
            owners.setdefault(name, []).append(index)
    shared = {name: indices for name, indices in owners.items() if len(indices) > 1}
    if not shared:
        return groups
    if policy == "drop_from_background" and background:
        dropped = {name for name, indices in shared.items() if indices[0] == 0}
        if dropped and len(dropped) < len(groups[0]):
            logger.warning("class names: %s also named other classes; dropped from the background's synonyms so "
                           "those classes can be predicted (--keep-duplicate-names reproduces the original files)",
                           sorted(dropped))
            groups = [[n for n in groups[0] if n not in dropped], *groups[1:]]
            shared = {name: indices for name, indices in shared.items() if name not in dropped}
    for name, indices in shared.items():
        logger.warning("class name '%s' is a query of classes %s: only the first of them can win where it scores "
                       "highest", name, indices)
    return groups
