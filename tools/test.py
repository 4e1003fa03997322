"""Zero-shot semantic segmentation on the benchmarks (reference protocol: short side 448, slide 448/224).

    python tools/test.py --dataset voc [--checkpoint CKPT] [--data-root data] [--out results.json]
    python tools/test.py --dataset all --checkpoint CKPT
    torchrun --nproc_per_node=8 tools/test.py --dataset ade20k --checkpoint CKPT --launcher pytorch
    python tools/test.py --dataset refcoco --split testA --data-root data/refer --checkpoint CKPT   # referring

Without --checkpoint the untrained projector is evaluated: the training-free CLIP-surgery baseline.
Dataset layouts and preparation: docs/datasets.md (semantic), docs/referring.md (RefCOCO/+/g).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmengine.config import DictAction  # noqa: E402

from tagalign.segmentation.benchmarks import BENCHMARKS, EXTRA_BENCHMARKS, MissingDatasetError  # noqa: E402
from tagalign.segmentation.evaluate import evaluate_many, format_table, write_json  # noqa: E402
from tagalign.segmentation.referring import REFERRING  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=[*BENCHMARKS, *EXTRA_BENCHMARKS, *REFERRING, "all"])
    parser.add_argument("--split", help="referring datasets: val, testA, testB (refcoco, refcoco+) or val, test "
                                        "(refcocog, umd); default val")
    parser.add_argument("--binarize", choices=["threshold", "minmax"], default="threshold",
                        help="referring: probability > --bg-thresh, or min-max normalised >= 0.5")
    parser.add_argument("--templates", nargs="+", default=["{}"],
                        help="referring: prompt templates for the expressions (default: the raw expression)")
    parser.add_argument("--data-root", help="folder holding every dataset (default $TAGALIGN_DATA or ./data)")
    parser.add_argument("--checkpoint", help="trained projector checkpoint")
    parser.add_argument("--clip", help="open_clip model name or config JSON (default: the checkpoint's, or ViT-B-16)")
    parser.add_argument("--pretrained", help="open_clip tag or local weights file (default: the checkpoint's/openai)")
    parser.add_argument("--mode", choices=["slide", "whole"], default="slide")
    parser.add_argument("--crop-batch", type=int, default=16, help="windows per forward (memory budget)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--bg-thresh", type=float, default=0.4)
    parser.add_argument("--clip-w", type=float, default=0.3)
    parser.add_argument("--pamr", action="store_true", help="PAMR post-processing (the paper's 'Post' rows)")
    parser.add_argument("--score", choices=["sigmoid", "softmax"], default="sigmoid",
                        help="sigmoid(10*cos - 2.5) per class (reference code) or softmax(10*cos) over classes "
                             "(paper Eq. 8)")
    parser.add_argument("--mix", choices=["probabilities", "similarities"], default="probabilities",
                        help="mix the CLIP branch's probabilities (reference code) or its cosines (paper Eq. 7)")
    parser.add_argument("--feature-surgery", action="store_true",
                        help="CLIP Surgery's label-set feature surgery on the cosine maps (not in TagAlign)")
    parser.add_argument("--norm", choices=["imagenet", "clip"], default="imagenet",
                        help="pixel mean/std: ImageNet's (reference) or CLIP's")
    parser.add_argument("--out", help="write results (mIoU, per-class IoU) to this JSON file")
    parser.add_argument("--save-preds", help="write predicted label maps as PNG files under DIR/<dataset>/")
    parser.add_argument("--work-dir", default="work_dirs/test")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys, key=value")
    return parser.parse_args()


def _inference_options(args) -> dict:
    return dict(mode=args.mode, crop_batch=args.crop_batch, precision=args.precision, bg_thresh=args.bg_thresh,
                clip_w=args.clip_w, pamr=args.pamr, score=args.score, mix=args.mix,
                feature_surgery=args.feature_surgery)


def run_referring(args) -> None:
    import os

    import tagalign
    from tagalign.segmentation.referring import evaluate_referring, format_referring_table

    root = args.data_root or os.environ.get("TAGALIGN_DATA_REFER", "data/refer")
    device = _init_distributed(args.launcher)
    model = tagalign.load(args.checkpoint, clip=args.clip, pretrained=args.pretrained, device=device)
    inference = _inference_options(args)
    result = evaluate_referring(model, root, args.dataset, args.split or "val", args.binarize, args.templates,
                                inference)
    if int(os.environ.get("RANK", 0)) != 0:
        return
    print(format_referring_table([result]))
    if args.out:
        write_json(result, args.out)
        print(f"wrote {args.out}")


def _init_distributed(launcher: str) -> str:
    """Start torch.distributed for --launcher pytorch/slurm (NCCL on GPUs, gloo on CPUs); this process's device."""
    import os

    import torch

    if launcher == "none":
        return "cuda" if torch.cuda.is_available() else "cpu"
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if launcher == "slurm":
        from mmengine.dist import init_dist

        init_dist("slurm", backend=backend)
    else:
        torch.distributed.init_process_group(backend)
    if backend == "nccl":
        local_rank = int(os.environ.get("LOCAL_RANK", torch.distributed.get_rank() % torch.cuda.device_count()))
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return "cpu"


def main() -> None:
    args = parse_args()
    if args.dataset in REFERRING:
        run_referring(args)
        return
    keys = list(BENCHMARKS) if args.dataset == "all" else [args.dataset]
    inference = _inference_options(args)
    try:
        results = evaluate_many(keys, out=args.out, save_preds=args.save_preds, work_dir=args.work_dir,
                                data_root=args.data_root, checkpoint=args.checkpoint, clip=args.clip,
                                pretrained=args.pretrained, inference=inference, launcher=args.launcher,
                                cfg_options=args.cfg_options, norm=args.norm)
    except MissingDatasetError as err:
        sys.exit(f"Not starting: {err}")
    print(format_table(results))
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
