"""A web demo: segment and tag your own images in the browser (Gradio).

    python tools/app.py                                   # the quickstart's model (run tools/quickstart.py first)
    python tools/app.py --checkpoint CKPT [--vocab data/tags/tag_embeddings.pt]
    python tools/app.py --clip ViT-B-16 --pretrained /weights/ViT-B-16.pt     # untrained projector (CLIP surgery)
    python tools/app.py --clip ViT-B-16 --pretrained W --encoder cass --vfm-weights DINO_FILE  # another encoder
    python tools/app.py --host 0.0.0.0 --port 7860                            # serve to other machines

It never downloads anything at start: with no arguments it serves work_dirs/quickstart's trained model, or says how
to make it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tagalign  # noqa: E402
from tagalign.models import ENCODERS  # noqa: E402
from tagalign.webapp import SegmentationDemo, build_app  # noqa: E402

QUICKSTART = Path("work_dirs/quickstart")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="trained projector checkpoint (default: the quickstart's)")
    parser.add_argument("--clip", help="open_clip model name or config JSON (default: the checkpoint's)")
    parser.add_argument("--pretrained", help="open_clip tag or local weights file (default: the checkpoint's)")
    parser.add_argument("--encoder", choices=list(ENCODERS),
                        help="dense encoder (default: the checkpoint's, else surgery); docs/encoders.md")
    parser.add_argument("--vfm", help="second vision model of a VFM-guided encoder (proxyclip, cass; default: DINO "
                                      "ViT-B/8)")
    parser.add_argument("--vfm-weights", help="its weights: a local file or 'tiny' (default: the checkpoint's/hub)")
    parser.add_argument("--vocab", help="tag_embeddings.pt for the image's top tags (default: the quickstart's)")
    parser.add_argument("--examples", help="folder of example images (default: the quickstart's evaluation images)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    checkpoint, vocab, examples = args.checkpoint, args.vocab, args.examples
    if checkpoint is None and args.clip is None:
        checkpoint = QUICKSTART / "train/tagalign_latest.pth"
        if not checkpoint.is_file():
            sys.exit(f"No model to serve: {checkpoint} does not exist. Run `python tools/quickstart.py` first (about "
                     f"five minutes on a CPU), or pass --checkpoint CKPT, or --clip NAME --pretrained WEIGHTS.")
        vocab = vocab or _existing(QUICKSTART / "data/tags/tag_embeddings.pt")
        examples = examples or _existing(QUICKSTART / "data/shapes_voc/JPEGImages")
    model = tagalign.load(checkpoint, clip=args.clip, pretrained=args.pretrained,
                          encoder=args.encoder, vfm=args.vfm, vfm_weights=args.vfm_weights)
    example_files = sorted(str(p) for p in Path(examples).glob("*.jpg"))[:6] if examples else []
    app = build_app(SegmentationDemo(model, vocab=vocab), examples=example_files)
    print(f"serving {checkpoint or args.clip} on http://{args.host}:{args.port}", flush=True)
    app.launch(server_name=args.host, server_port=args.port, share=False, show_error=True)


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() else None


if __name__ == "__main__":
    main()
