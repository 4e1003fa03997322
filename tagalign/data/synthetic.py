"""A generated "shapes" world: coloured shapes on textured backgrounds, with captions and per-pixel masks.

It needs no download, so the quickstart, the demo default and the tests can run anywhere.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
#: Each kind of shape has its own surface, as object classes do (fur, bark, brick): a patch inside a shape carries
#: local evidence of its kind, not only its colour. Brightness is modulated by +-TEXTURE_CONTRAST around the colour.
TEXTURES: dict[str, str] = {"square": "checks", "circle": "rings", "triangle": "dots"}
TEXTURE_CONTRAST = 70


@dataclass
class Scene:
    image: np.ndarray  # [H, W, 3] uint8 RGB
    mask: np.ndarray  # [H, W] int: 0 background, k = k-th object (1-based)
    objects: list[tuple[str, str]] = field(default_factory=list)  # (colour, shape) per object

    @property
    def caption(self) -> str:
        names = [f"a {colour} {shape}" for colour, shape in self.objects]
        return ("a picture of " + ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]).strip()

    def describe(self, rng: np.random.Generator) -> str:
        """The caption in varied words (see :func:`describe_objects`)."""
        return describe_objects(self.objects, rng)[0]


def describe_objects(objects: Sequence[tuple[str, str]], rng: np.random.Generator,
                     colour_rate: float = 0.5) -> tuple[str, list[tuple[str | None, str]], bool]:
    """``(colour, shape)`` objects as a caption in varied words, what it mentions, and whether it mentions the
    background: a random frame (half of them name the striped background, as real captions name the grass or the
    sky), the objects in random order, each with its colour at ``colour_rate`` ("a red square") else without ("a
    square"), as real captions leave attributes out. No object gives a caption of the background alone."""
    if not objects:
        return EMPTY_CAPTIONS[int(rng.integers(len(EMPTY_CAPTIONS)))], [], True
    mentioned = [(colour if rng.random() < colour_rate else None, shape)
                 for colour, shape in (objects[i] for i in rng.permutation(len(objects)))]
    names = [f"a {colour} {shape}" if colour else f"a {shape}" for colour, shape in mentioned]
    listed = ", ".join(names[:-1]) + (f" {CONJUNCTIONS[int(rng.integers(len(CONJUNCTIONS)))]} "
                                      if len(names) > 1 else "") + names[-1]
    frame = CAPTION_FRAMES[int(rng.integers(len(CAPTION_FRAMES)))]
    return frame.format(listed), mentioned, "background" in frame


#: Frames and conjunctions of :func:`describe_objects`; half of the frames name the background.
CAPTION_FRAMES: tuple[str, ...] = ("a picture of {}", "a photo of {}.", "there is {}.", "{}.",
                                   "{} on a striped background", "a photo of {} against a striped background.",
                                   "{} in front of a striped background", "a picture of {} on a striped background")
CONJUNCTIONS: tuple[str, ...] = ("and", "next to", "beside")
#: Captions of scenes without objects.
EMPTY_CAPTIONS: tuple[str, ...] = ("a striped background", "a photo of an empty striped background.",
                                   "nothing but a striped background", "an empty background with stripes")


def _shape_mask(shape: str, height: int, width: int, cy: int, cx: int, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    if shape == "square":
        return (np.abs(yy - cy) <= radius) & (np.abs(xx - cx) <= radius)
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    if shape == "triangle":  # apex up
        inside_rows = (yy >= cy - radius) & (yy <= cy + radius)
        half_width = (yy - (cy - radius)) / 2
        return inside_rows & (np.abs(xx - cx) <= half_width)
    raise ValueError(f"unknown shape '{shape}'")


def render_scene(rng: np.random.Generator, size: tuple[int, int] = (224, 224), max_objects: int = 2,
                 radius: tuple[float, float] = (0.15, 0.28), min_objects: int = 1) -> Scene:
    """One scene with min_objects..max_objects non-overlapping coloured shapes on a noisy, striped background; shape
    radii are drawn from ``radius`` (fractions of the short side)."""
    image = _background(rng, size)
    count = int(rng.integers(min_objects, max_objects + 1))
    return _draw(rng, image, count, radius, lambda: SHAPES[int(rng.integers(len(SHAPES)))],
                 lambda: list(COLOURS)[int(rng.integers(len(COLOURS)))])


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    base = rng.integers(90, 160, size=3)
    stripes = (np.sin(np.arange(width) / rng.uniform(3, 9))[None, :, None] * 12).astype(np.int16)
    noise = rng.normal(0, 10, size=(height, width, 3)).astype(np.int16)
    return np.clip(base[None, None, :] + stripes + noise, 0, 255).astype(np.uint8)


def _draw(rng: np.random.Generator, image: np.ndarray, count: int, radius: tuple[float, float],
          pick_shape: Callable[[], str], pick_colour: Callable[[], str]) -> Scene:
    """Place ``count`` shapes without overlap (one that finds no room in 20 tries is left out); the shape is picked
    per placement attempt, the colour once placed. ``image`` (the background) is painted in place."""
    height, width = size = image.shape[:2]
    mask = np.zeros((height, width), dtype=np.int64)
    objects: list[tuple[str, str]] = []
    for _ in range(count):
        for _attempt in range(20):
            r = int(rng.uniform(*radius) * min(size))
            cy, cx = int(rng.integers(r, height - r)), int(rng.integers(r, width - r))
            shape = pick_shape()
            region = _shape_mask(shape, height, width, cy, cx, r)
            if not (mask[region] > 0).any():
                break
        else:
            continue
        colour = pick_colour()
        objects.append((colour, shape))
        mask[region] = len(objects)
        texture = _texture(TEXTURES[shape], region, cy, cx, period=max(4, min(size) // 14))
        shade = (np.array(COLOURS[colour]) + TEXTURE_CONTRAST * texture[:, None]
                 + rng.normal(0, 6, size=(int(region.sum()), 3)))
        image[region] = np.clip(shade, 0, 255).astype(np.uint8)
    return Scene(image=image, mask=mask, objects=objects)


def _texture(kind: str, region: np.ndarray, cy: int, cx: int, period: int) -> np.ndarray:
    """+-1 per pixel of ``region`` (row-major order): ``checks`` (a checkerboard), ``rings`` (concentric around the
    centre) or ``dots`` (light dots on a dark grid), ``period`` pixels per light+dark cycle."""
    yy, xx = np.nonzero(region)
    half = period / 2
    if kind == "checks":
        phase = (np.floor((yy - cy) / half) + np.floor((xx - cx) / half)) % 2
    elif kind == "rings":
        phase = np.floor(np.hypot(yy - cy, xx - cx) / half) % 2
    elif kind == "dots":
        phase = (np.hypot((yy - cy) % period - half, (xx - cx) % period - half) < period / 4).astype(float)
    else:
        raise ValueError(f"unknown texture '{kind}'")
    return 2.0 * phase - 1.0


# ------------------------------------------------------------------------------------------ on-disk writers
#: Classes of the colour split: the colour (attribute) of each shape; background is not scored (VOC20-style).
EVAL_CLASSES: tuple[str, ...] = tuple(COLOURS)
#: Classes of the shape split, scored with background (VOC-style): what each object is.
SHAPE_CLASSES: tuple[str, ...] = ("background", *SHAPES)


def write_img2dataset_shards(root: Path, samples: Sequence[tuple[np.ndarray, str]], per_shard: int = 500,
                             failed_every: int = 0, with_parquet: bool = True) -> list[str]:
    """Write ``(image, caption)`` samples in img2dataset's webdataset layout: ``NNNNN.tar`` (``key.jpg``,
    ``key.txt``, ``key.json``), ``NNNNN.parquet`` and ``NNNNN_stats.json``. Returns the keys in the tars.

    ``failed_every=k`` marks every k-th sample as a failed download (in the parquet, not in the tar), as
    img2dataset does.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for start in range(0, len(samples), per_shard):
        shard_id = start // per_shard
        rows: dict[str, list] = {"key": [], "caption": [], "url": [], "status": [], "error_message": []}
        with tarfile.open(root / f"{shard_id:05d}.tar", "w") as archive:
            for index in range(start, min(start + per_shard, len(samples))):
                image, caption = samples[index]
                key = f"{shard_id:05d}{index - start:04d}"
                failed = bool(failed_every) and index % failed_every == failed_every - 1
                url = f"http://shapes.invalid/{index}.jpg"
                rows["key"].append(key)
                rows["caption"].append(caption)
                rows["url"].append(url)
                rows["status"].append("failed_to_download" if failed else "success")
                rows["error_message"].append("HTTP 404" if failed else None)
                if failed:
                    continue
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="JPEG", quality=92)
                meta = {"key": key, "url": url, "caption": caption, "status": "success"}
                for name, data in ((f"{key}.jpg", buffer.getvalue()), (f"{key}.txt", caption.encode()),
                                   (f"{key}.json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
                keys.append(key)
        if with_parquet:
            pq.write_table(pa.table(rows), root / f"{shard_id:05d}.parquet")
        (root / f"{shard_id:05d}_stats.json").write_text(json.dumps({"count": len(rows["key"])}))
    return keys


def write_voc_split(root: Path, scenes: Sequence[Scene], classes: Sequence[str] = EVAL_CLASSES,
                    by: str = "colour") -> list[str]:
    """Scenes as a Pascal-VOC-layout segmentation split: 0 = background, else 1 + the index in ``classes`` (which
    do not list the background) of each object's colour (``by="colour"``) or shape (``by="shape"``)."""
    if by not in ("colour", "shape"):
        raise ValueError(f"by must be 'colour' or 'shape', got '{by}'")
    root = Path(root)
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids = []
    for index, scene in enumerate(scenes):
        label = np.zeros(scene.mask.shape, dtype=np.uint8)
        for k, (colour, shape) in enumerate(scene.objects, start=1):
            label[scene.mask == k] = 1 + list(classes).index(colour if by == "colour" else shape)
        image_id = f"shapes_{index:05d}"
        Image.fromarray(scene.image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        Image.fromarray(label).save(root / "SegmentationClass" / f"{image_id}.png")
        ids.append(image_id)
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids) + "\n")
    return ids


def render_referring_scene(rng: np.random.Generator, size: tuple[int, int] = (224, 224)) -> Scene:
    """Two shapes of the same kind in different colours ("red square" beside "blue square"): only the attribute
    tells which one an expression refers to."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    while True:
        colours = iter(np.array(list(COLOURS))[rng.choice(len(COLOURS), size=2, replace=False)].tolist())
        scene = _draw(rng, _background(rng, size), 2, (0.15, 0.25), lambda: shape, colours.__next__)
        if len(scene.objects) == 2:
            return scene


def _uncompressed_rle(binary: np.ndarray) -> dict:
    """COCO's uncompressed RLE: column-major run lengths, starting with a (possibly empty) run of zeros."""
    flat = binary.flatten(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return {"size": list(binary.shape), "counts": [int(r) for r in runs]}


def write_refer_dataset(root: Path, dataset: str, scenes: Sequence[Scene], split: str | Sequence[str] = "val",
                        split_by: str = "unc") -> int:
    """Scenes in the refer layout: ``root/dataset/refs(split_by).p``, ``root/dataset/instances.json`` (COCO
    annotations; squares as polygons, circles as compressed RLE, triangles as uncompressed RLE) and
    ``root/images/mscoco/images/train2014/COCO_train2014_<id>.jpg``. One ref per object, two sentences each
    ("red square", "the red square"). ``split`` is one split for all scenes or one per scene. Returns the number
    of sentences."""
    import pickle

    from pycocotools import mask as mask_utils

    root = Path(root)
    image_dir = root / "images/mscoco/images/train2014"
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / dataset).mkdir(parents=True, exist_ok=True)
    images, annotations, refs = [], [], []
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]
    sentences = 0
    for image_index, scene in enumerate(scenes):
        image_id = 100000 + image_index
        file_name = f"COCO_train2014_{image_id:012d}.jpg"
        Image.fromarray(scene.image).save(image_dir / file_name, quality=95)
        height, width = scene.mask.shape
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for k, (colour, shape) in enumerate(scene.objects, start=1):
            binary = np.asfortranarray((scene.mask == k).astype(np.uint8))
            ann_id = image_id * 10 + k
            if shape == "square":
                ys, xs = np.nonzero(binary)
                x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
                segmentation = [[x0, y0, x1, y0, x1, y1, x0, y1]]
            elif shape == "circle":
                rle = mask_utils.encode(binary)
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            else:
                segmentation = _uncompressed_rle(binary)
            ys, xs = np.nonzero(binary)
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": SHAPES.index(shape) + 1,
                                "segmentation": segmentation, "area": float(binary.sum()), "iscrowd": 0,
                                "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1),
                                         float(np.ptp(ys) + 1)]})
            texts = [f"{colour} {shape}", f"the {colour} {shape}"]
            sent_ids = [ann_id * 10 + j for j in range(len(texts))]
            scene_split = split if isinstance(split, str) else split[image_index]
            refs.append({"ref_id": ann_id, "ann_id": ann_id, "image_id": image_id, "split": scene_split,
                         "category_id": SHAPES.index(shape) + 1, "file_name": file_name, "sent_ids": sent_ids,
                         "sentences": [{"sent_id": s, "raw": t, "sent": t, "tokens": t.split()}
                                       for s, t in zip(sent_ids, texts)]})
            sentences += len(texts)
    (root / dataset / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    with open(root / dataset / f"refs({split_by}).p", "wb") as handle:
        pickle.dump(refs, handle)
    return sentences
