"""Segment and tag your own images with free-text queries.

    python tools/demo.py IMAGE_OR_DIR --texts "cat" "brown cat" "tv, television, monitor" [--checkpoint CKPT]
                         [--clip ViT-B-16 --pretrained openai] [--out work_dirs/demo] [--compare-clip]
                         [--tags 20 --vocab data/tags/tag_embeddings.pt]
                         [--descriptions tag_descriptions.json [--tag-prompts descriptions|reweighted]]

Per image, writes OUT/<name>_overlay.png (label map over the image, colour legend) and OUT/<name>_heatmaps.png (one
heatmap per text; with --compare-clip a second row shows the untrained CLIP-surgery baseline). A text with commas
lists synonyms of one class. Without --checkpoint the projector is untrained (the CLIP-surgery baseline). Without an
image, a generated shapes scene is used.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

import tagalign  # noqa: E402
from tagalign.data.synthetic import render_scene  # noqa: E402
from tagalign.data.transforms import load_image  # noqa: E402
from tagalign.feature_cache import PatchFeatureCache  # noqa: E402
from tagalign.inference import parse_texts  # noqa: E402
from tagalign.models import ENCODERS, TagAlign  # noqa: E402
from tagalign.models.description_file import load_descriptions  # noqa: E402
from tagalign.output_names import unique_stems  # noqa: E402
from tagalign.visualize import heatmap_grid, overlay  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # any letter case


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", help="an image file or a directory of images")
    parser.add_argument("--texts", nargs="+", help="queries; 'a, b' = synonyms of one class")
    parser.add_argument("--checkpoint", help="trained projector checkpoint (tagalign_latest.pth)")
    parser.add_argument("--clip", help="open_clip model name or config JSON (default: the checkpoint's, or ViT-B-16)")
    parser.add_argument("--pretrained", help="open_clip tag or local weights file (default: the checkpoint's/openai)")
    parser.add_argument("--encoder", choices=list(ENCODERS),
                        help="dense encoder (default: the checkpoint's, else surgery); docs/encoders.md")
    parser.add_argument("--vfm", help="second vision model of a VFM-guided encoder (proxyclip, cass; default: DINO "
                                      "ViT-B/8)")
    parser.add_argument("--vfm-weights", help="its weights: a local file or 'tiny' (default: the checkpoint's/hub)")
    parser.add_argument("--out", default="work_dirs/demo")
    parser.add_argument("--no-background", action="store_true", help="label every pixel with a text")
    parser.add_argument("--bg-thresh", type=float, default=0.4)
    parser.add_argument("--whole", action="store_true", help="one forward on the whole image instead of sliding")
    parser.add_argument("--short-side", type=int, default=448, help="resize the short side to this (reference 448)")
    parser.add_argument("--compare-clip", action="store_true", help="also show the untrained CLIP-surgery heatmaps")
    parser.add_argument("--tags", type=int, default=0, help="print this many top tags per image (needs --vocab)")
    parser.add_argument("--vocab", help="tag_embeddings.pt from tools/parse_tags.py, or a text file of words")
    parser.add_argument("--descriptions", help="RAM++ tag-description file (tools/parse_tags.py describe): texts it "
                                               "describes are prompted with their descriptions; with --tags, the "
                                               "tags' descriptions")
    parser.add_argument("--tag-prompts", choices=["template", "descriptions", "reweighted"], default="template",
                        help="--tags: tag texts (reweighted: RAM++'s per-image re-weighting of the descriptions)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated scene (no image given)")
    return parser.parse_args()


def _images(args) -> list[tuple[str, np.ndarray | Path]]:
    if not args.image:
        scene = render_scene(np.random.default_rng(args.seed), size=(224, 320))
        if not args.texts:
            args.texts = sorted({f"{colour} {shape}" for colour, shape in scene.objects})
        return [("shapes", scene.image)]
    path = Path(args.image)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
        return list(zip(unique_stems(files), files))  # photo.jpg and photo.png get photo_jpg_* and photo_png_*
    if not path.is_file():
        raise SystemExit(f"image '{path}' does not exist")
    return [(path.stem, path)]


def _vocab(value: str | None):
    if value is None or value.endswith(".pt"):
        return value
    return [line.strip() for line in Path(value).read_text().splitlines() if line.strip()]


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("tagalign").setLevel(logging.INFO)
    images = _images(args)
    if not args.texts:
        raise SystemExit("give at least one query with --texts")
    if args.tags and not (args.vocab or args.descriptions):
        raise SystemExit("--tags needs --vocab (tag_embeddings.pt from tools/parse_tags.py, or a file of words) or "
                         "--descriptions (its tags are the vocabulary)")
    model = tagalign.load(args.checkpoint, clip=args.clip, pretrained=args.pretrained,
                          encoder=args.encoder, vfm=args.vfm, vfm_weights=args.vfm_weights)
    baseline = None
    if args.compare_clip:  # same frozen encoder: its features are computed once per image for both rows
        baseline = TagAlign(model.clip, **model.encoder_config).eval()
        PatchFeatureCache(capacity=2).attach(model, baseline)
    vocab = _vocab(args.vocab)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    descriptions = load_descriptions(args.descriptions) if args.descriptions else None  # read once
    options = dict(background=not args.no_background, slide=not args.whole, bg_thresh=args.bg_thresh,
                   short_side=args.short_side, descriptions=descriptions)
    parse_texts(args.texts)  # duplicate or empty queries: stop before any image
    failed, outputs = [], []
    for name, source in tqdm(images, desc="images", disable=len(images) == 1):
        try:
            array = load_image(source)
            result = tagalign.segment(model, array, args.texts, **options)
        except ValueError as err:
            print(f"skipping {source}: {err}")
            failed.append(name)
            continue
        rows, maps = ["TagAlign"], [result.probabilities]
        if baseline is not None:
            rows.append("CLIP surgery (untrained)")
            maps.append(tagalign.segment(baseline, array, args.texts, **options).probabilities)
        written = [out / f"{name}_overlay.png", out / f"{name}_heatmaps.png"]
        overlay(array, result.labels, result.names).save(written[0])
        heatmap_grid(array, np.stack(maps), result.classes, rows=rows).save(written[1])
        areas = ", ".join(f"{text} {100 * area:.1f}%" for text, area in result.areas.items())
        print(f"{name}: {areas} -> {', '.join(p.name for p in written)}")
        outputs.extend(written)
        if args.tags:
            tags = tagalign.tag(model, array, top_k=args.tags, vocab=vocab, descriptions=descriptions,
                                prompts=args.tag_prompts)
            print("  tags: " + ", ".join(f"{t} ({s:.2f})" for t, s in tags))
    print(f"wrote {len(outputs)} files ({len(images) - len(failed)} image(s): overlay and heatmaps) to {out}")
    if failed:
        raise SystemExit(f"{len(failed)} of {len(images)} image(s) could not be segmented: {', '.join(failed)}")


if __name__ == "__main__":
    main()
