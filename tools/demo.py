"""Dense text-to-pixel heatmaps for one image (or a generated shapes scene when no image is given).

    python tools/demo.py [IMAGE] --texts "red square" "blue circle" [--checkpoint CKPT]
                         [--clip ViT-B-16 --pretrained openai] [--out work_dirs/demo]

Writes OUT/heatmaps.png (the image and one heatmap per text) and OUT/overlay.png (each pixel labelled with the
most probable text, background where every probability is below --bg-thresh).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tagalign  # noqa: E402
from tagalign.data.synthetic import render_scene  # noqa: E402
from tagalign.data.transforms import load_image, resize_probs, resize_short_side, to_tensor  # noqa: E402
from tagalign.models import encode_texts  # noqa: E402
from tagalign.visualize import heatmap_grid, overlay  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", help="image file; omitted: a generated shapes scene")
    parser.add_argument("--texts", nargs="+", help="free-text queries (default: the generated scene's objects)")
    parser.add_argument("--checkpoint", help="trained projector checkpoint; omitted: the CLIP-surgery baseline")
    parser.add_argument("--clip", help="open_clip model name or config JSON (default: ViT-B-16 or the checkpoint's)")
    parser.add_argument("--pretrained", help="open_clip tag or local weights file (default: openai)")
    parser.add_argument("--size", type=int, default=448, help="short side the image is resized to")
    parser.add_argument("--bg-thresh", type=float, default=0.4)
    parser.add_argument("--clip-w", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated scene")
    parser.add_argument("--out", default="work_dirs/demo")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("tagalign").setLevel(logging.INFO)
    if args.image:
        image, texts = load_image(args.image), args.texts
    else:
        scene = render_scene(np.random.default_rng(args.seed), size=(224, 320))
        image = scene.image
        texts = args.texts or sorted({f"{c} {s}" for c, s in scene.objects})
        print(f"generated scene: '{scene.caption}'")
    if not texts:
        raise SystemExit("give at least one text with --texts")

    model = tagalign.api.load(args.checkpoint, clip=args.clip, pretrained=args.pretrained)
    text_emb = encode_texts(model.clip, texts)
    resized = resize_short_side(image, args.size)
    with torch.no_grad():
        probs = model.masks(to_tensor(resized), text_emb, clip_w=args.clip_w)
        probs = resize_probs(probs, image.shape[:2])[0]
    background = torch.full_like(probs[:1], args.bg_thresh)
    labels = torch.cat([background, probs]).argmax(0).numpy()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    heatmap_grid(image, probs.numpy(), texts).save(out / "heatmaps.png")
    overlay(image, labels, ["background", *texts]).save(out / "overlay.png")
    for index, text in enumerate(texts, start=1):
        print(f"{text:>24s}: max prob {probs[index - 1].max():.3f}, area {100 * (labels == index).mean():.1f}%")
    print(f"wrote {out / 'heatmaps.png'} and {out / 'overlay.png'}")


if __name__ == "__main__":
    main()
