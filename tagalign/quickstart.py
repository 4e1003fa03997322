"""The embedded default: generate the shapes world, train on the tiny CLIP, evaluate before and after.

The evaluation segments each shape by its colour (an attribute tag) with background ignored, the paper's
without-background protocol. (The tiny random text tower maps prompts to nearly parallel vectors, so a
with-background protocol cannot separate shapes from background in this toy world; colour is learnt locally.)

Everything goes through the real formats and code paths: img2dataset-layout shards, parse-stage records turned
into labels by the real merge, tag embeddings by the real embed stage, mmengine training, and the evaluation code of
``tools/test.py`` on a Pascal-VOC-layout split.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from .data.synthetic import (
    render_referring_scene,
    render_scene,
    write_img2dataset_shards,
    write_refer_dataset,
    write_voc_split,
)

logger = logging.getLogger(__name__)

__all__ = ["build_shapes_world", "run_quickstart"]


def build_shapes_world(root: str | os.PathLike, num_train: int = 2000, num_eval: int = 40, seed: int = 0) -> dict:
    """Write the shapes world under ``root``: ``tiny_clip.pt``, ``shards/``, ``tags/``, ``shapes_voc/``.

    A finished world leaves ``world.json``; a later call with the same sizes and seed reuses it (a quickstart on
    another encoder trains on the same data)."""
    from .models.clip import load_clip
    from .tags.embed import embed_vocab
    from .tags.merge import merge_parsed

    root = Path(root)
    marker = root / "world.json"
    params = {"num_train": num_train, "num_eval": num_eval, "seed": seed}
    if marker.is_file():
        world = json.loads(marker.read_text())
        if world.get("params") == params:
            logger.info("shapes world: reusing %s (%d training images)", root, world["train_samples"])
            return {**world, "clip": str(root / "tiny_clip.pt")}
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    clip_file = root / "tiny_clip.pt"
    root.mkdir(parents=True, exist_ok=True)
    torch.save(load_clip("tagalign-tiny").state_dict(), clip_file)

    scenes = [render_scene(rng) for _ in range(num_train)]
    keys = write_img2dataset_shards(root / "shards", [(s.image, s.caption) for s in scenes], per_shard=250)
    # the parse stage's output format, written directly: the generator knows each caption's tags
    (root / "tags/parsed").mkdir(parents=True, exist_ok=True)
    with open(root / "tags/parsed/part-00000-000000.jsonl", "w") as handle:
        for key, scene in zip(keys, scenes):
            handle.write(json.dumps({"key": key, "caption": scene.caption,
                                     "objects": sorted({shape for _, shape in scene.objects}),
                                     "attributes": sorted({colour for colour, _ in scene.objects}),
                                     "status": "ok"}) + "\n")
    (root / "tags/stats").mkdir(parents=True, exist_ok=True)  # the parse stage's shard report: shard 0 of 1 is done
    (root / "tags/stats/shard-00000.json").write_text(json.dumps({"shard_id": 0, "num_shards": 1,
                                                                  "captions": len(keys), "ok": len(keys)}))
    merge_parsed(root / "tags")
    embed_vocab(root / "tags", clip="tagalign-tiny", pretrained=str(clip_file))
    eval_scenes = [render_scene(rng) for _ in range(num_eval)]
    write_voc_split(root / "shapes_voc", eval_scenes)
    # referring split: two shapes of one kind in different colours ("red square" beside "blue square")
    write_refer_dataset(root / "refer", "shapes-ref", [render_referring_scene(rng) for _ in range(num_eval // 2)])
    logger.info("shapes world: %d training images in %s, %d evaluation images", len(keys), root / "shards",
                num_eval)
    world = {"clip": str(clip_file), "train_samples": len(keys), "eval_images": num_eval, "params": params}
    partial = marker.with_suffix(".json.partial")
    partial.write_text(json.dumps(world))
    partial.replace(marker)  # written last and atomically: a world cut off half-way is rebuilt
    return world


def run_quickstart(config: str | os.PathLike = "configs/quickstart.py", work_root: str | os.PathLike | None = None,
                   max_iters: int | None = None, encoder: str | None = None) -> dict:
    """Generate data, evaluate the untrained projector, train, evaluate again, write an overlay image.

    ``encoder`` puts the projector on another dense encoder (``clearclip``, ``naclip``, ...; default: the config's
    ``model.encoder``, else ``surgery``); the "before" number is then that encoder's training-free baseline."""
    from mmengine.config import Config

    from .segmentation.evaluate import evaluate
    from .training.run import train

    cfg = Config.fromfile(str(config))
    data_root = Path(work_root) / "data" if work_root else Path(cfg.data_root)
    work_dir = Path(work_root) / "train" if work_root else Path(cfg.work_dir)
    if work_root:
        _retarget(cfg, Path(cfg.data_root), data_root)
    if max_iters:
        cfg.train_cfg.max_iters = max_iters
        cfg.default_hooks.checkpoint.interval = max(max_iters // 2, 1)
    if encoder:
        cfg.model.encoder = encoder
    encoder = cfg.model.get("encoder", "surgery")
    world = build_shapes_world(data_root)
    eval_kwargs = dict(data_root=data_root, clip="tagalign-tiny", pretrained=world["clip"],
                       inference=dict(crop=224, stride=112))
    before = evaluate("shapes", work_dir=work_dir.parent / "eval_untrained", encoder=encoder, **eval_kwargs)
    runner = train(cfg, work_dir=work_dir)
    checkpoint = Path(runner.work_dir) / "tagalign_latest.pth"
    after = evaluate("shapes", checkpoint=str(checkpoint), work_dir=work_dir.parent / "eval_trained", **eval_kwargs)
    overlay_path = _write_overlay(checkpoint, world["clip"], data_root / "shapes_voc", work_dir.parent)
    referring = _referring(checkpoint, world["clip"], data_root / "refer", encoder)
    summary = {"encoder": encoder, "miou_untrained": before["mIoU"], "miou_trained": after["mIoU"],
               "checkpoint": str(checkpoint),
               "overlay": str(overlay_path), "iterations": cfg.train_cfg.max_iters, "referring": referring}
    (work_dir.parent / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _referring(checkpoint: Path, clip_file: str, refer_root: Path, encoder: str) -> dict:
    """mIoU / oIoU on the shapes referring split, untrained vs trained projector (same code as tools/test.py)."""
    from .api import load
    from .segmentation.referring import evaluate_referring

    scores = {}
    for name, ckpt in (("untrained", None), ("trained", checkpoint)):
        model = load(ckpt, clip="tagalign-tiny", pretrained=clip_file, encoder=encoder)
        result = evaluate_referring(model, refer_root, "shapes-ref", "val", inference=dict(crop=224, stride=112),
                                    short_side=224, progress=False)
        scores[name] = {k: result[k] for k in ("mIoU", "oIoU", "precision@0.5", "num_expressions")}
    return scores


def _retarget(cfg, old: Path, new: Path) -> None:
    """Point every path of the config that lives under ``old`` at ``new``."""
    def fix(value):
        return str(value).replace(str(old), str(new)) if isinstance(value, str) and str(old) in value else value

    cfg.model.pretrained = fix(cfg.model.pretrained)
    cfg.model.tag_embeddings = fix(cfg.model.tag_embeddings)
    cfg.model.tag_frequency = fix(cfg.model.tag_frequency)
    cfg.train_dataloader.dataset.shards = fix(cfg.train_dataloader.dataset.shards)
    cfg.train_dataloader.dataset.labels = fix(cfg.train_dataloader.dataset.labels)


def _write_overlay(checkpoint: Path, clip_file: str, voc_root: Path, out_dir: Path) -> Path:
    from PIL import Image

    from .api import load
    from .data.synthetic import COLOURS, EVAL_CLASSES
    from .data.transforms import load_image, to_tensor
    from .models.clip import encode_texts
    from .segmentation.inference import InferenceConfig, predict_probabilities
    from .visualize import overlay

    model = load(checkpoint, clip="tagalign-tiny", pretrained=clip_file)
    image = load_image(sorted((voc_root / "JPEGImages").glob("*.jpg"))[0])
    texts = encode_texts(model.clip, list(EVAL_CLASSES))
    probs = predict_probabilities(model, to_tensor(image), texts, False, InferenceConfig(crop=224, stride=112))
    labels = probs[0].argmax(0).numpy()  # what is scored: the colour class of every pixel (background unscored)
    path = out_dir / "overlay.png"
    canvas = Image.new("RGB", (image.shape[1] * 2, image.shape[0]))
    canvas.paste(Image.fromarray(image), (0, 0))
    palette = [COLOURS[name] for name in EVAL_CLASSES]
    canvas.paste(overlay(image, labels, list(EVAL_CLASSES), colours=palette), (image.shape[1], 0))
    canvas.save(path)
    return path
