"""The quickstart's pictures: a with-background segmentation overlay per model, and referring heatmaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..data.synthetic import SHAPE_CLASSES
from .world import quickstart_vfm_weights

__all__ = ["write_figures"]


def write_figures(checkpoints: dict[str, Path | None], world: dict, data_root: Path, out_dir: Path,
                  encoder: str) -> dict:
    """``overlay.png``: the first with-background evaluation image and each model's segmentation of it into the
    shapes and the prompted background (the headline with-background column's rule: the most probable of the four).
    ``heatmaps.png``: per model, the probability maps of the two expressions of the first referring image ("red
    square" / "blue square") and of the shape's name."""
    import pickle

    from ..api import load
    from ..data.transforms import load_image, resize_short_side, to_tensor
    from ..models.clip import encode_texts
    from ..segmentation.inference import InferenceConfig, predict_probabilities
    from ..visualize import heatmap_grid, overlay
    from .world import INFERENCE

    config = InferenceConfig(**INFERENCE)
    models = {name: load(ckpt, clip=world["clip_name"], pretrained=world["clip"], encoder=encoder,
                         vfm_weights=quickstart_vfm_weights(encoder))
              for name, ckpt in checkpoints.items()}

    image = load_image(sorted((data_root / "shapes_bg_voc/JPEGImages").glob("*.jpg"))[0])
    panels = [Image.fromarray(image)]
    for name, model in models.items():
        texts = encode_texts(model.clip, list(SHAPE_CLASSES))  # "background" is prompted like the shapes
        probs = predict_probabilities(model, to_tensor(image), texts, False, config)
        panel = overlay(image, probs[0].argmax(0).numpy(), list(SHAPE_CLASSES))
        _caption(panel, name)
        panels.append(panel)
    overlay_path = out_dir / "overlay.png"
    _save_row(panels, overlay_path)

    refs = pickle.loads((data_root / "refer/shapes-ref/refs(unc).p").read_bytes())
    first = refs[0]["file_name"]
    texts = [ref["sentences"][0]["raw"] for ref in refs if ref["file_name"] == first]
    texts.append(texts[0].split()[-1])  # the shape's name alone
    ref_image = resize_short_side(load_image(data_root / "refer/images/mscoco/images/train2014" / first), 224)
    maps = []
    for model in models.values():
        probs = predict_probabilities(model, to_tensor(ref_image), encode_texts(model.clip, texts), False, config)
        maps.append(probs[0].numpy())
    heatmaps_path = out_dir / "heatmaps.png"
    heatmap_grid(ref_image, np.stack(maps), texts, rows=list(models)).save(heatmaps_path)
    return {"overlay": str(overlay_path), "heatmaps": str(heatmaps_path)}


def _caption(panel: Image.Image, text: str) -> None:
    from PIL import ImageDraw

    draw = ImageDraw.Draw(panel)
    draw.text((4, panel.height - 16), text, fill=(255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0))


def _save_row(panels: list[Image.Image], path: Path) -> None:
    canvas = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), (255, 255, 255))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width
    canvas.save(path)
