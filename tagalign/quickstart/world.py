"""The quickstart's shapes world on disk, and the tiny CLIP pretrained on it.

``build_shapes_world(root)`` writes, in the real formats:
- ``shards/``: img2dataset webdataset shards of the training images and their captions (in varied words);
- ``tags/`` (objects and attributes) and ``tags_objects/`` (objects only, ``--top-k-attributes 0``): the parse
  stage's records turned into vocabulary, labels and tag embeddings by the real merge and embed stages;
- ``tiny_clip/``: a tiny CLIP whose two towers were trained contrastively on the training pairs, as an open_clip
  hub-style folder;
- ``shapes_voc/`` (colours, background ignored), ``shapes_bg_voc/`` (shapes, background scored) and ``refer/``
  (``shapes-ref``: "the red square" beside a blue square): the evaluation splits;
- ``tagging/``: a tagging split in RAM's layout (``shapes_taglist.txt``, ``shapes_annots.txt``, ``imgs/``): the tags
  of an image are the colours and shapes it shows; one image in eight shows none.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..data.synthetic import (
    COLOURS,
    SHAPES,
    describe_objects,
    render_referring_scene,
    render_scene,
    write_img2dataset_shards,
    write_refer_dataset,
    write_voc_split,
)
from ..models.pretrain import PretrainConfig, pretrain_clip, save_open_clip_folder, to_clip_input, zero_shot_accuracy
from ..tagging.benchmark import write_benchmark

logger = logging.getLogger(__name__)

__all__ = ["CLIP_NAME", "INFERENCE", "TAG_DIRS", "WORLD_VERSION", "build_shapes_world", "quickstart_vfm_weights"]

#: The tiny CLIP's architecture (``tagalign/models/model_configs``): 8 blocks of width 64, 16-pixel patches, 112 px.
CLIP_NAME = "tagalign-tiny-112"
#: Bumped whenever the world's content changes, so an older world on disk is rebuilt rather than reused.
WORLD_VERSION = 3
TAG_DIRS = {"objects+attributes": "tags", "objects": "tags_objects"}
#: Sliding-window settings of every evaluation (short side 224 = twice the tiny CLIP's 112 px, as the reference
#: evaluates its 224 px CLIP at 448).
INFERENCE = dict(crop=224, stride=112)


def quickstart_vfm_weights(encoder: str) -> str | None:
    """``tiny`` for an encoder that reads a second vision model (the quickstart downloads nothing), else None."""
    from ..models.encoders import needs_vfm

    return "tiny" if needs_vfm(encoder) else None


def build_shapes_world(root: str | os.PathLike, num_train: int = 2000, num_eval: int = 40, seed: int = 0,
                       pretrain: PretrainConfig | None = None, clip_name: str = CLIP_NAME) -> dict:
    """Write the shapes world under ``root`` and return its ``world.json`` record.

    A finished world leaves ``world.json`` (written last, atomically); a later call with the same sizes, seed and
    pretraining settings reuses it, so quickstarts on other encoders train on the same data and the same CLIP.
    ``clip_name`` is the tiny CLIP's open_clip config (any tower family, e.g. ``tagalign-tiny-mapvit-112``)."""
    from ..tags.embed import embed_vocab
    from ..tags.merge import merge_parsed

    pretrain = pretrain or PretrainConfig()
    root = Path(root)
    marker = root / "world.json"
    params = {"version": WORLD_VERSION, "num_train": num_train, "num_eval": num_eval, "seed": seed,
              "pretrain": asdict(pretrain), **({"clip_name": clip_name} if clip_name != CLIP_NAME else {})}
    if marker.is_file():
        world = json.loads(marker.read_text())
        if world.get("params") == params:
            logger.info("shapes world: reusing %s (%d training images, tiny CLIP zero-shot accuracy %.1f%%)", root,
                        world["train_samples"], 100 * world["clip_zero_shot"]["accuracy"])
            return world
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    logger.info("shapes world: drawing %d training images with captions", num_train)
    # one image in eight shows no shape ("a striped background"), as many real images lack any given object
    scenes = [render_scene(rng, min_objects=0, max_objects=0) if i % 8 == 7 else render_scene(rng)
              for i in range(num_train)]
    captions, mentions, backgrounds = zip(*(describe_objects(scene.objects, rng) for scene in scenes))
    keys = write_img2dataset_shards(root / "shards", [(s.image, c) for s, c in zip(scenes, captions)], per_shard=250)
    _write_parse_records(root / TAG_DIRS["objects+attributes"], keys, captions, mentions, backgrounds)
    merge_parsed(root / TAG_DIRS["objects+attributes"])
    shutil.rmtree(root / TAG_DIRS["objects"], ignore_errors=True)
    shutil.copytree(root / TAG_DIRS["objects+attributes"], root / TAG_DIRS["objects"],
                    ignore=shutil.ignore_patterns("vocab.csv", "labels.sqlite*", "tag_*", "merge_stats.json"))
    merge_parsed(root / TAG_DIRS["objects"], top_k_attributes=0)

    clip_dir, zero_shot = _pretrain_tiny_clip(root, scenes, captions, rng, pretrain, clip_name)
    for tag_dir in TAG_DIRS.values():
        embed_vocab(root / tag_dir, clip=clip_name, pretrained=str(clip_dir))

    eval_scenes = [render_scene(rng) for _ in range(num_eval)]
    write_voc_split(root / "shapes_voc", eval_scenes)  # by colour, background ignored
    write_voc_split(root / "shapes_bg_voc", eval_scenes, classes=SHAPES, by="shape")  # by shape, with background
    write_refer_dataset(root / "refer", "shapes-ref", [render_referring_scene(rng) for _ in range(num_eval // 2)])
    tag_scenes = [render_scene(rng, min_objects=0, max_objects=0) if i % 8 == 7 else render_scene(rng)
                  for i in range(num_eval)]
    write_benchmark(root / "tagging", "shapes", [*COLOURS, *SHAPES],
                    [(s.image, sorted({c for c, _ in s.objects}) + sorted({sh for _, sh in s.objects}))
                     for s in tag_scenes])
    logger.info("shapes world: %d training images in %s, %d evaluation images per split", len(keys), root / "shards",
                num_eval)
    world = {"clip": str(clip_dir), "clip_name": clip_name, "clip_zero_shot": zero_shot, "train_samples": len(keys),
             "eval_images": num_eval, "params": params}
    partial = marker.with_suffix(".json.partial")
    partial.write_text(json.dumps(world, indent=2))
    partial.replace(marker)  # written last and atomically: a world cut off half-way is rebuilt
    return world


def _write_parse_records(tag_dir: Path, keys: list[str], captions, mentions, backgrounds) -> None:
    """The parse stage's output for the captions, written directly: the generator knows what each caption
    mentions (objects: the shapes, and "background" where named; attributes: the colours, and "striped")."""
    (tag_dir / "parsed").mkdir(parents=True, exist_ok=True)
    with open(tag_dir / "parsed/part-00000-000000.jsonl", "w") as handle:
        for key, caption, mentioned, background in zip(keys, captions, mentions, backgrounds):
            objects = {shape for _, shape in mentioned} | ({"background"} if background else set())
            attributes = {colour for colour, _ in mentioned if colour} | ({"striped"} if background else set())
            handle.write(json.dumps({"key": key, "caption": caption, "objects": sorted(objects),
                                     "attributes": sorted(attributes),
                                     "status": "ok"}) + "\n")
    (tag_dir / "stats").mkdir(parents=True, exist_ok=True)  # the parse stage's shard report: shard 0 of 1 is done
    (tag_dir / "stats/shard-00000.json").write_text(json.dumps({"shard_id": 0, "num_shards": 1,
                                                                "captions": len(keys), "ok": len(keys)}))


class CropPairs:
    """Pretraining batches from the training scenes: half are whole images with their captions, half are random
    square crops (30-80% of the side) captioned with the objects that have at least half their area inside, or as
    a background. Seeing objects and background at many scales and places, as CLIP's web images do, is what makes
    its patch tokens say what is under them."""

    def __init__(self, scenes, captions: list[str], size: int, crop_fraction: float = 0.5):
        self.scenes, self.captions, self.size, self.crop_fraction = scenes, captions, size, crop_fraction

    def __call__(self, rng: np.random.Generator, count: int) -> tuple[torch.Tensor, list[str]]:
        images, captions = [], []
        for index in rng.choice(len(self.scenes), count, replace=False):
            scene = self.scenes[index]
            if rng.random() >= self.crop_fraction:
                images.append(scene.image)
                captions.append(self.captions[index])
                continue
            height, width = scene.mask.shape
            side = int(rng.uniform(0.3, 0.8) * min(height, width))
            top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
            window = scene.mask[top:top + side, left:left + side]
            kept = [obj for k, obj in enumerate(scene.objects, start=1)
                    if (window == k).sum() * 2 >= (scene.mask == k).sum()]
            images.append(scene.image[top:top + side, left:left + side])
            captions.append(describe_objects(kept, rng)[0])
        return to_clip_input(images, self.size), captions


def _pretrain_tiny_clip(root: Path, scenes, captions: list[str], rng: np.random.Generator,
                        config: PretrainConfig, clip_name: str = CLIP_NAME) -> tuple[Path, dict]:
    """Pretrain the tiny CLIP on the training pairs, save it, and measure its zero-shot accuracy on held-out
    one-object images against the 12 prompts "a photo of a {colour} {shape}."."""
    import open_clip

    model_cfg = open_clip.get_model_config(clip_name)
    size = model_cfg["vision_cfg"]["image_size"]
    logger.info("tiny CLIP: pretraining both towers on %d image-caption pairs (%d steps of %d, %d px)",
                len(scenes), config.steps, config.batch_size, size)
    start = time.time()
    model = pretrain_clip(model_cfg, CropPairs(scenes, list(captions), size), config)
    seconds = time.time() - start
    clip_dir = save_open_clip_folder(model, model_cfg, root / "tiny_clip")
    classes = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    held_out = [render_scene(rng, max_objects=1) for _ in range(240)]
    accuracy = zero_shot_accuracy(model, to_clip_input([s.image for s in held_out], size),
                                  [classes.index(s.objects[0]) for s in held_out],
                                  [f"a photo of a {colour} {shape}." for colour, shape in classes])
    result = {"accuracy": accuracy, "chance": 1 / len(classes), "classes": len(classes), "images": len(held_out),
              "pretrain_seconds": round(seconds, 1)}
    logger.info("tiny CLIP: zero-shot accuracy %.1f%% on %d held-out images over %d '{colour} {shape}' prompts "
                "(chance %.1f%%), pretrained in %.0f s", 100 * accuracy, len(held_out), len(classes),
                100 / len(classes), seconds)
    return clip_dir, result
