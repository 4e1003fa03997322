"""The whole pipeline in minutes on a CPU, with no downloads: a generated shapes world (captions, images, masks)
written as img2dataset shards with parse_tags labels, a tiny CLIP pretrained contrastively on it, TagAlign trained on
top (objects only, and objects + attributes), and zero-shot segmentation with and without background and referring
segmentation, before and after training.

    python tools/quickstart.py [--work-dir work_dirs/quickstart] [--iters 500] [--pretrain-steps 400]
                               [--encoder clearclip]

Writes WORK_DIR/summary.json, WORK_DIR/summary.md (the table), WORK_DIR/overlay.png, WORK_DIR/heatmaps.png, the
pretrained CLIP under WORK_DIR/data/tiny_clip and the checkpoints under WORK_DIR/train (objects + attributes) and
WORK_DIR/train_objects (objects only).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tagalign.models.encoders import ENCODERS  # noqa: E402
from tagalign.quickstart import format_table, run_quickstart  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="work_dirs/quickstart")
    parser.add_argument("--iters", type=int, default=None,
                        help="TagAlign training iterations per model (config default: 500)")
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help="tiny-CLIP contrastive pretraining steps of 64 pairs (default: 400)")
    parser.add_argument("--config", default=str(ROOT / "configs/quickstart.py"))
    parser.add_argument("--encoder", choices=sorted(ENCODERS),
                        help="the dense encoder the projector trains on (default: surgery, TagAlign's; proxyclip reads "
                             "a tiny random DINO ViT-B/8 here, nothing is downloaded)")
    parser.add_argument("--clip", default=None,
                        help="the tiny CLIP's open_clip config, pretrained from scratch on the shapes world (default: "
                             "tagalign-tiny-112; tagalign-tiny-mapvit-112: a SigLIP2-style tower with a MAP head, "
                             "tagalign-tiny-eva02-112, tagalign-tiny-pe-core-112; docs/backbones.md)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("tagalign").setLevel(logging.INFO)
    summary = run_quickstart(args.config, args.work_dir, args.iters, args.encoder, args.pretrain_steps, args.clip)
    clip = summary["clip"]
    table = format_table(summary)
    (Path(args.work_dir) / "summary.md").write_text(table + "\n")
    print(f"\ntiny CLIP ({clip['pretrain_steps']} pretraining steps): zero-shot accuracy {100 * clip['accuracy']:.1f}% "
          f"over {clip['classes']} '{{colour}} {{shape}}' prompts (chance {100 * clip['chance']:.1f}%)")
    print(f"TagAlign: {summary['iterations']} iterations on the {summary['encoder']} encoder\n\n{table}\n")
    print(f"all in {summary['total_seconds'] / 60:.1f} minutes\ncheckpoint: {summary['checkpoint']}\n"
          f"overlay: {summary['overlay']}\nheatmaps: {summary['heatmaps']}")


if __name__ == "__main__":
    main()
