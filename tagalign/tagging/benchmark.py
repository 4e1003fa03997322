"""The tagging benchmarks in the layout of RAM's repository (``datasets/``; tagging spec §3), and their reader.

``<root>/<folder>/<name>_taglist.txt`` has one tag per line; ``<name>_annots.txt`` one image per line: the image
field, then either ``,tag,tag...`` (tags by name: OpenImages) or ``,i j k`` (0-based taglist indices, space
separated: ImageNet-Multi, HICO). A line with only the image field is an image without tags. Images live under
``<root>/<folder>/imgs/``; an image field without an extension gets ``.jpg`` (OpenImages' ``test/<id>``).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MissingDatasetError

logger = logging.getLogger(__name__)

__all__ = ["TAGGING_BENCHMARKS", "TaggingBenchmark", "TaggingSpec", "count_missing_images", "read_benchmark",
           "resolve_benchmark", "write_benchmark"]


@dataclass(frozen=True)
class TaggingSpec:
    key: str
    folder: str
    taglist: str
    annots: str
    annots_format: str  # "names" or "indices"
    descriptions: str | None = None  # RAM++'s released description file, when there is one
    paper: dict[str, float] = field(default_factory=dict)  # RAM++ paper mAP, Table 2 (Swin-B) / Table 15 (Swin-L)
    caveat: str = ""


_OI_CAVEAT = ("RAM++ rows: RAM++ paper Table 2 (Swin-B; the released checkpoint is Swin-L, Table 15). CLIP rows: "
              "backbone and scoring not stated in the paper (likely ViT-B/16, raw cosine).")

TAGGING_BENCHMARKS: dict[str, TaggingSpec] = {
    spec.key: spec for spec in (
        TaggingSpec("openimages_common", "openimages_common_214", "openimages_common_214_ram_taglist.txt",
                    "openimages_common_214_ram_annots.txt", "names",
                    paper={"CLIP hand-written": 73.6, "CLIP LLM descriptions": 76.6, "RAM-14M": 86.5,
                           "RAM++-14M Swin-B": 86.6, "RAM++-14M Swin-L": 86.4},
                    caveat=_OI_CAVEAT + " No description file is released for these 214 tags."),
        TaggingSpec("openimages_rare", "openimages_rare_200", "openimages_rare_200_ram_taglist.txt",
                    "openimages_rare_200_ram_annots.txt", "names",
                    descriptions="openimages_rare_200_llm_tag_descriptions.json",
                    paper={"CLIP hand-written": 66.2, "CLIP LLM descriptions": 70.2, "RAM-14M": 68.8,
                           "RAM++-14M Swin-B": 75.4, "RAM++-14M Swin-L": 75.0},
                    caveat=_OI_CAVEAT + " The paper calls this split OpenImages-uncommon."),
        TaggingSpec("imagenet_multi", "imagenet_multi", "imagenet_multi_1000_taglist.txt",
                    "imagenet_multi_1000_annots.txt", "indices",
                    caveat="Not comparable with the paper: its ImageNet-Multi columns use 5,000-image common/uncommon "
                           "subsets that were never released; this file is the full ReaL labelling (50,000 images, "
                           "1,000 classes)."),
        TaggingSpec("hico", "hico", "hico_600_taglist.txt", "hico_600_annots.txt", "indices",
                    paper={"CLIP hand-written": 26.8, "CLIP LLM descriptions": 29.8, "RAM-14M": 32.9,
                           "RAM++-14M Swin-B": 37.7, "RAM++-14M Swin-L": 39.2},
                    caveat="How HICO's ambiguous labels were mapped and whether underscores were replaced before "
                           "prompting are not stated by the authors."),
    )
}


@dataclass
class TaggingBenchmark:
    """A benchmark read into memory: tag names, image paths and ``targets`` ``[images, tags]`` (bool)."""

    name: str
    tags: list[str]
    images: list[Path]
    targets: np.ndarray
    spec: TaggingSpec | None = None
    root: Path | None = None

    @property
    def released_descriptions(self) -> Path | None:
        """RAM++'s description file in the benchmark folder, when the benchmark has one and it is there."""
        if self.spec is None or self.spec.descriptions is None or self.root is None:
            return None
        path = self.root / self.spec.descriptions
        return path if path.is_file() else None


def _lines(path: Path) -> list[str]:
    """The file's lines; a last line without "\\n" is kept (HICO's and ImageNet's files have none)."""
    try:
        return path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {err.start}: {err.reason}); expected one entry per "
                         f"line in UTF-8") from None


_INDICES = re.compile(r"\d+( \d+)*")


def _detect_format(rows: list[tuple[int, list[str]]]) -> str:
    fields = [f for _, tags in rows for f in tags]
    return "indices" if fields and all(_INDICES.fullmatch(f) for f in fields) else "names"


def read_benchmark(taglist: str | os.PathLike, annots: str | os.PathLike, images: str | os.PathLike,
                   annots_format: str = "auto", name: str = "custom",
                   spec: TaggingSpec | None = None) -> TaggingBenchmark:
    """Read a taglist and an annotation file; errors name the file, the line and what was expected."""
    taglist, annots, images = Path(taglist), Path(annots), Path(images)
    for path in (taglist, annots):
        if not path.is_file():
            raise MissingDatasetError(f"tagging benchmark '{name}': {path} does not exist (docs/tagging.md)")
    tags = [line.strip() for line in _lines(taglist) if line.strip()]
    if not tags:
        raise ValueError(f"{taglist}: no tag in the taglist (the file is empty or blank); expected one tag per line")
    columns: dict[str, list[int]] = {}
    for index, tag in enumerate(tags):
        columns.setdefault(tag, []).append(index)  # duplicate names share targets, as in RAM's metric code
    rows: list[tuple[int, list[str]]] = []
    paths: list[Path] = []
    first_line: dict[Path, tuple[int, list[str]]] = {}
    repeated = 0
    for number, line in enumerate(_lines(annots), start=1):
        if not line.strip():
            continue
        image, _, rest = line.strip().partition(",")
        path = images / (image if Path(image).suffix else f"{image}.jpg")
        fields = [f.strip() for f in rest.split(",") if f.strip()]
        if path in first_line:  # an image listed twice would be scored twice
            earlier, earlier_fields = first_line[path]
            if sorted(earlier_fields) != sorted(fields):
                raise ValueError(f"{annots}:{number}: image {image!r} is listed again with other tags (first at line "
                                 f"{earlier}); expected each image once")
            repeated += 1
            continue
        first_line[path] = (number, fields)
        paths.append(path)
        rows.append((number, fields))
    if not rows:
        raise ValueError(f"{annots}: no image listed (the file is empty or blank); expected lines "
                         f"'image,tag,tag,...'")
    if repeated:
        logger.warning("%s: %d image(s) listed twice with the same tags; each is scored once", annots, repeated)
    if annots_format == "auto":
        annots_format = _detect_format(rows)
    if annots_format not in ("names", "indices"):
        raise ValueError(f"annots_format must be names, indices or auto; got {annots_format!r}")
    targets = np.zeros((len(rows), len(tags)), dtype=bool)
    for row, (number, fields) in enumerate(rows):
        if annots_format == "indices":
            fields = [i for f in fields for i in f.split()]
        for value in fields:
            if annots_format == "names":
                if value not in columns:
                    raise ValueError(f"{annots}:{number}: tag {value!r} is not in {taglist.name}")
                targets[row, columns[value]] = True
            else:
                if not value.isdigit() or int(value) >= len(tags):
                    raise ValueError(f"{annots}:{number}: expected 0-based indices into the {len(tags)} tags of "
                                     f"{taglist.name}, got {value!r}")
                targets[row, int(value)] = True
    if not targets.any():
        raise ValueError(f"{annots}: none of its {len(rows)} images carries a tag of {taglist.name}: mAP, CP and CR "
                         f"are undefined; expected at least one tagged image")
    return TaggingBenchmark(name, tags, paths, targets, spec)


def count_missing_images(benchmark: TaggingBenchmark) -> int:
    """How many of the benchmark's image files are absent; raises when none is there (a wrong image folder)."""
    missing = sum(not path.is_file() for path in benchmark.images)
    if benchmark.images and missing == len(benchmark.images):
        raise MissingDatasetError(
            f"tagging benchmark '{benchmark.name}': none of its {len(benchmark.images)} images exists (first expected: "
            f"{benchmark.images[0]}). Put the images there (docs/tagging.md), or point --images/--data-root at them."
        )
    return missing


def resolve_benchmark(key: str, data_root: str | os.PathLike | None) -> TaggingBenchmark:
    """A named benchmark under ``<data_root or $TAGALIGN_DATA or ./data>/<folder>`` (RAM's ``datasets/``)."""
    spec = TAGGING_BENCHMARKS[key]
    parent = Path(data_root or os.environ.get("TAGALIGN_DATA", "data"))
    root = parent / spec.folder if (parent / spec.folder).is_dir() else parent
    if not (root / spec.taglist).is_file():
        raise MissingDatasetError(
            f"tagging benchmark '{key}' not found: expected {parent / spec.folder / spec.taglist} (RAM's "
            f"datasets/{spec.folder} folder; see docs/tagging.md). Set --data-root to the folder holding {spec.folder}."
        )
    logger.info("tagging benchmark '%s': using %s", key, root)
    benchmark = read_benchmark(root / spec.taglist, root / spec.annots, root / "imgs", spec.annots_format, key, spec)
    benchmark.root = root
    return benchmark


def write_benchmark(folder: str | os.PathLike, name: str, tags: list[str], items: list[tuple[np.ndarray, list[str]]],
                    annots_format: str = "names") -> tuple[Path, Path, Path]:
    """Write a benchmark in RAM's layout (PNG images under ``imgs/``); returns ``(taglist, annots, images)``."""
    from PIL import Image

    folder = Path(folder)
    images = folder / "imgs"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (array, present) in enumerate(items):
        file = f"{name}_{index:05d}.png"
        Image.fromarray(array).save(images / file)
        fields = present if annots_format == "names" else [" ".join(str(tags.index(t)) for t in present)]
        lines.append(",".join([file, *[f for f in fields if f]]))
    taglist, annots = folder / f"{name}_taglist.txt", folder / f"{name}_annots.txt"
    taglist.write_text("\n".join(tags) + "\n")
    annots.write_text("\n".join(lines) + "\n")
    return taglist, annots, images
