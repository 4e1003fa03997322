"""Zero-shot semantic segmentation on the benchmarks (reference protocol: short side 448, slide 448/224).

    python tools/test.py --dataset voc [--checkpoint CKPT] [--data-root data] [--out results.json]
    python tools/test.py --dataset all --checkpoint CKPT
    torchrun --nproc_per_node=8 tools/test.py --dataset ade20k --checkpoint CKPT --launcher pytorch
    python tools/test.py --dataset refcoco --split testA --data-root data/refer --checkpoint CKPT   # referring

    python tools/test.py --dataset all --encoder naclip --protocol sclip        # a training-free method
    python tools/test.py --dataset voc --preset naclip                          # NACLIP's own settings
    python tools/test.py --dataset voc20 --encoder all --protocol sclip --out cmp.json   # + cmp.md table

Without --checkpoint the untrained projector is evaluated: the chosen encoder's training-free baseline (default
encoder: surgery). --protocol picks the evaluation family (tagalign: 448, slide 448/224, sigmoid, constant
background; sclip: 336, slide 224/112, softmax with prob_thd, synonym files, 80 templates); --preset a method's own
settings; every single switch below overrides both. Encoders and protocols: docs/encoders.md.
Dataset layouts and preparation: docs/datasets.md (semantic), docs/referring.md (RefCOCO/+/g).

Open-set image tagging on RAM's benchmarks (docs/tagging.md): mAP as RAM's code computes it, CP/CR/F1 at a threshold

    python tools/test.py --task tagging --dataset openimages_rare --checkpoint CKPT --scoring clip pooled max \
        --prompts template descriptions reweighted --descriptions openimages_rare_200_llm_tag_descriptions.json
    python tools/test.py --task tagging --dataset custom --taglist my_taglist.txt --annots my_annots.txt --images DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmengine.config import DictAction  # noqa: E402

from tagalign.errors import MissingDatasetError  # noqa: E402
from tagalign.models.encoders import (  # noqa: E402
    ENCODERS,
    UnsupportedTowerError,
    check_encoder,
    describe_options,
    needs_vfm,
)
from tagalign.models.templates import TEMPLATE_SETS  # noqa: E402
from tagalign.models.vfm import VFM_CATALOG, VfmWeightsUnavailableError  # noqa: E402
from tagalign.segmentation.benchmarks import (  # noqa: E402
    BENCHMARKS,
    EXTRA_BENCHMARKS,
    LARGE_BENCHMARKS,
    published_reference,
)
from tagalign.segmentation.class_names import NAME_SETS  # noqa: E402
from tagalign.segmentation.evaluate import (  # noqa: E402
    comparison_table,
    evaluate_many,
    format_table,
    resolve_settings,
    write_json,
)
from tagalign.segmentation.protocols import PRESETS, PROTOCOLS  # noqa: E402
from tagalign.segmentation.referring import BINARIZE_MODES, REFERRING  # noqa: E402
from tagalign.tagging.benchmark import TAGGING_BENCHMARKS  # noqa: E402
from tagalign.tagging.evaluate import PROMPTS, SCORINGS  # noqa: E402


def _option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not NAME=VALUE (e.g. sigma=3.0)")
    return name.strip(), value.strip()


def _check_encoder_options(args) -> None:
    """Refuse unknown, mistyped or out-of-range encoder options before any model or dataset is loaded."""
    args.encoder_options = dict(args.encoder_options) if args.encoder_options else None
    if (args.vfm or args.vfm_weights) and args.encoder not in (None, "all") and not needs_vfm(args.encoder):
        sys.exit(f"Not starting: encoder '{args.encoder}' reads no second vision model; leave out --vfm/--vfm-weights")
    if not args.encoder_options:
        return
    if args.encoder == "all":
        sys.exit("Not starting: --encoder-options belongs to one encoder; leave it out with --encoder all")
    encoder = args.encoder or (PRESETS[args.preset][1] if args.preset else None)
    if encoder is None and args.checkpoint:
        from tagalign.models.checkpoint import read_checkpoint

        encoder = read_checkpoint(args.checkpoint)["config"].get("encoder", "surgery")
    try:
        args.encoder_options = check_encoder(encoder or "surgery", args.encoder_options)
    except ValueError as err:
        sys.exit(f"Not starting: {err}")


_SEMANTIC = (*BENCHMARKS, *LARGE_BENCHMARKS, *EXTRA_BENCHMARKS)
_ALONE = (*REFERRING, *TAGGING_BENCHMARKS, "custom")
_GROUPS = {"all": list(BENCHMARKS), "all+large": [*BENCHMARKS, *LARGE_BENCHMARKS]}


def _dataset_keys(text: str) -> str:
    """--dataset: one referring/tagging key, a group, or semantic keys separated by commas."""
    keys = [key.strip() for key in text.split(",")]
    if len(keys) == 1 and (keys[0] in _ALONE or keys[0] in _GROUPS):
        return keys[0]
    unknown = [key for key in keys if key not in _SEMANTIC]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown dataset(s) {unknown}; choose a semantic benchmark "
                                         f"({', '.join(_SEMANTIC)}), all, all+large, or one of {', '.join(_ALONE)}")
    return ",".join(dict.fromkeys(keys))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["segmentation", "tagging"], default="segmentation")
    parser.add_argument("--dataset", required=True, type=_dataset_keys, metavar="KEY[,KEY...]",
                        help=f"one of {', '.join(_ALONE)}; or semantic benchmarks, comma-separated, from "
                             f"{', '.join(_SEMANTIC)}; all: the ten of the paper; all+large: those and "
                             f"{', '.join(LARGE_BENCHMARKS)}")
    parser.add_argument("--split", help="referring datasets: val, testA, testB (refcoco, refcoco+) or val, test "
                                        "(refcocog, umd); default val")
    parser.add_argument("--binarize", choices=list(BINARIZE_MODES), default="threshold",
                        help="referring: probability > --bg-thresh, min-max normalised >= 0.5, or above the "
                             "probability of the prompt 'background' (docs/referring.md)")
    parser.add_argument("--templates", nargs="+", default=["{}"],
                        help="referring: prompt templates for the expressions (default: the raw expression)")
    parser.add_argument("--data-root", help="folder holding every dataset (default $TAGALIGN_DATA or ./data)")
    parser.add_argument("--checkpoint", help="trained projector checkpoint")
    parser.add_argument("--clip", help="open_clip model name or config JSON (default: the checkpoint's, or ViT-B-16)")
    parser.add_argument("--pretrained", help="open_clip tag or local weights file (default: the checkpoint's/openai)")
    parser.add_argument("--encoder", choices=[*ENCODERS, "all"],
                        help="dense encoder (default: the checkpoint's, the preset's, or surgery); all: every "
                             "training-free encoder, one comparison table")
    parser.add_argument("--encoder-options", nargs="+", type=_option, metavar="NAME=VALUE",
                        help="options of the chosen encoder, e.g. sigma=3.0; each encoder's: "
                             + " | ".join(f"{name}: {describe_options(fn)}" for name, fn in ENCODERS.items()))
    parser.add_argument("--vfm", choices=list(VFM_CATALOG),
                        help="the second vision model of a VFM-guided encoder (proxyclip; default: the checkpoint's, "
                             "else the encoder's own, DINO ViT-B/8); docs/encoders.md")
    parser.add_argument("--vfm-weights", help="its weights: a local file, or 'tiny' for a seeded tiny random model "
                                              "(tests, CPU); default: the checkpoint's, else the Hugging Face hub")
    parser.add_argument("--protocol", choices=PROTOCOLS, help="evaluation family (default: the preset's, or tagalign)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a method's own settings (and its encoder)")
    # single switches; unset ones come from the protocol/preset table for each dataset
    parser.add_argument("--mode", choices=["slide", "whole"])
    parser.add_argument("--short-side", type=int, help="resize the short side to this (long side <= 2048)")
    parser.add_argument("--crop", type=int, help="slide window size")
    parser.add_argument("--stride", type=int, help="slide window stride")
    parser.add_argument("--pad-to", type=int, help="zero-pad windows to a multiple of this (sclip protocol)")
    parser.add_argument("--crop-batch", type=int, help="windows per forward (memory budget; default 16)")
    parser.add_argument("--map-budget-mb", type=float, help="memory for full-resolution class maps; the classes are "
                                                            "scored a chunk at a time within it (default 256)")
    parser.add_argument("--save-logits", help="also write each image's per-class maps (float16 .npy, classes x H x "
                                              "W) under DIR/<dataset>/; holds all classes at full resolution")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--bg-thresh", type=float, help="tagalign protocol: constant background score (0.4)")
    parser.add_argument("--clip-w", type=float, help="weight of the frozen CLIP branch (0.3)")
    parser.add_argument("--pamr", action=argparse.BooleanOptionalAction, help="PAMR post-processing")
    parser.add_argument("--lposs", action=argparse.BooleanOptionalAction,
                        help="LPOSS: propagate the window scores over all windows' patches with a second model's "
                             "features (--lposs-vfm; any encoder)")
    parser.add_argument("--lposs-plus", action=argparse.BooleanOptionalAction,
                        help="LPOSS+: then propagate the averaged maps over the image's pixels (colour graph)")
    parser.add_argument("--cass-adjust", action=argparse.BooleanOptionalAction,
                        help="CASS's object-level text adjustment of each window's scores (on in --preset cass)")
    parser.add_argument("--trident", action=argparse.BooleanOptionalAction,
                        help="Trident: windows spliced into one map and aggregated by SAM's last attention over the "
                             "whole image (on in --preset trident)")
    parser.add_argument("--sam-weights", help="Trident's SAM ViT-B image encoder: a local file or 'tiny' (default: the "
                                              "hub)")
    parser.add_argument("--lposs-vfm", choices=list(VFM_CATALOG), default="dino_vitb16",
                        help="LPOSS's second model (its last block's attention values; default dino_vitb16)")
    parser.add_argument("--lposs-vfm-weights", help="its weights: a local file or 'tiny' (default: the hub)")
    parser.add_argument("--score", choices=["sigmoid", "softmax"],
                        help="tagalign protocol: sigmoid(10*cos - 2.5) per class (reference code) or softmax(10*cos) "
                             "over classes (paper Eq. 8)")
    parser.add_argument("--mix", choices=["probabilities", "similarities"],
                        help="mix the CLIP branch's probabilities (reference code) or its cosines (paper Eq. 7)")
    parser.add_argument("--feature-surgery", action=argparse.BooleanOptionalAction,
                        help="CLIP Surgery's label-set feature surgery on the cosine maps")
    parser.add_argument("--logit-scale", type=float, help="sclip protocol: softmax temperature")
    parser.add_argument("--prob-thd", type=float, help="sclip protocol: class 0 below this top probability")
    parser.add_argument("--area-thd", type=float, help="sclip protocol: drop classes under this share of the "
                                                       "foreground")
    parser.add_argument("--norm", choices=["imagenet", "clip", "model"],
                        help="pixel mean/std: ImageNet's (the tagalign protocol's), OpenAI CLIP's, or model: the "
                             "CLIP's own, from its weights' config (the sclip protocol's; 0.5/0.5 for SigLIP, PE-Core)")
    parser.add_argument("--prompt-set", choices=sorted(TEMPLATE_SETS), help="templates for the class names")
    parser.add_argument("--class-names", help=f"class-name set ({', '.join(NAME_SETS)}) or a file: one line per "
                                              f"class, synonyms split on ', '")
    parser.add_argument("--keep-duplicate-names", action="store_true",
                        help="keep names shared by two classes as the original files have them (COCO-Object's "
                             "'bed' is then never predicted); default: drop them from the background's synonyms")
    tagging = parser.add_argument_group("tagging (--task tagging; docs/tagging.md)")
    tagging.add_argument("--scoring", nargs="+", choices=SCORINGS, default=["clip", "pooled"],
                         help="clip: global CLIP embedding; pooled: mean projected dense feature; max/mean: over "
                              "patch cosines")
    tagging.add_argument("--prompts", nargs="+", choices=PROMPTS, default=["template"],
                         help="tag texts: a template, the description ensemble, or RAM++'s re-weighted descriptions")
    parser.add_argument("--descriptions", help="tag descriptions in RAM++'s JSON layout (tools/parse_tags.py "
                                               "describe). Tagging: for --prompts descriptions/reweighted (default: "
                                               "the benchmark's released file, if any); segmentation: class names "
                                               "found in it are prompted with their description ensemble")
    tagging.add_argument("--threshold", type=float, default=0.25, help="CP/CR/F1: tag predicted iff score >= this")
    tagging.add_argument("--threshold-file", help="one threshold per taglist line (overrides --threshold)")
    tagging.add_argument("--reweight-scale", type=float,
                         help="re-weighting temperature (default: the checkpoint's learned one, else 1/0.07)")
    tagging.add_argument("--image-size", type=int, help="square input size (default: the CLIP's)")
    tagging.add_argument("--batch-size", type=int, default=32)
    tagging.add_argument("--taglist", help="custom benchmark: one tag per line")
    tagging.add_argument("--annots", help="custom benchmark: image[,tag...] or image[,i j k] per line")
    tagging.add_argument("--images", help="custom benchmark: the folder the annotation's image fields are under")
    tagging.add_argument("--annots-format", choices=["auto", "names", "indices"], default="auto")
    parser.add_argument("--out", help="write results (mIoU, per-class IoU; or tagging metrics) to this JSON file")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the results already in --out (or the comparison JSON) whose settings equal this "
                             "run's; evaluate the rest")
    parser.add_argument("--save-preds", help="write predicted label maps as PNG files under DIR/<dataset>/")
    parser.add_argument("--work-dir", default="work_dirs/test")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys, key=value")
    return parser.parse_args()


_INFERENCE_FLAGS = ("mode", "crop", "stride", "pad_to", "crop_batch", "precision", "bg_thresh", "clip_w", "pamr",
                    "score", "mix", "feature_surgery", "logit_scale", "prob_thd", "area_thd", "map_budget_mb",
                    "lposs", "lposs_plus", "cass_adjust", "trident")


def _inference_options(args) -> dict:
    """The inference switches given on the command line (the rest come from the protocol)."""
    return {name: getattr(args, name) for name in _INFERENCE_FLAGS if getattr(args, name) is not None}


def _overrides(args) -> dict:
    overrides = {"inference": _inference_options(args)}
    for flag, key in (("norm", "norm"), ("short_side", "short_side"), ("prompt_set", "templates"),
                      ("class_names", "class_names"), ("descriptions", "descriptions")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    return overrides


def run_referring(args) -> None:
    import os

    import tagalign
    from tagalign.segmentation.referring import evaluate_referring, format_referring_table, load_referring

    if args.encoder == "all" or args.protocol != "tagalign" or args.preset:
        sys.exit("Not starting: referring segmentation has one protocol (docs/referring.md) and one encoder per run; "
                 "--encoder all, --protocol and --preset are for the semantic benchmarks")
    root = args.data_root or os.environ.get("TAGALIGN_DATA_REFER", "data/refer")
    try:  # the split's files and expressions are checked before the model is loaded
        load_referring(root, args.dataset, args.split or "val")
    except (MissingDatasetError, ValueError) as err:
        sys.exit(f"Not starting: {err}")
    device = _init_distributed(args.launcher)
    model = tagalign.load(args.checkpoint, clip=args.clip, pretrained=args.pretrained, device=device,
                          encoder=args.encoder, encoder_options=args.encoder_options)
    inference = _inference_options(args)
    result = evaluate_referring(model, root, args.dataset, args.split or "val", args.binarize, args.templates,
                                inference)
    if int(os.environ.get("RANK", 0)) != 0:
        return
    print(format_referring_table([result]))
    if args.out:
        write_json(result, args.out)
        print(f"wrote {args.out}")


def run_tagging(args) -> None:
    import os

    import numpy as np

    import tagalign
    from tagalign.models.description_file import load_descriptions
    from tagalign.models.templates import TEMPLATE_SETS
    from tagalign.tagging.benchmark import count_missing_images, read_benchmark, resolve_benchmark
    from tagalign.tagging.evaluate import DEFAULT_TEMPLATES, build_tag_texts, evaluate_tagging, format_tagging_table

    if args.encoder == "all" or args.protocol != "tagalign" or args.preset:
        sys.exit("Not starting: tagging scores one model per run (docs/tagging.md); --encoder all, --protocol and "
                 "--preset are for the semantic segmentation benchmarks")
    try:
        if args.dataset == "custom":
            if not (args.taglist and args.annots and args.images):
                sys.exit("Not starting: --dataset custom needs --taglist, --annots and --images")
            benchmark = read_benchmark(args.taglist, args.annots, args.images, args.annots_format)
        else:
            benchmark = resolve_benchmark(args.dataset, args.data_root)
        missing = count_missing_images(benchmark)
        descriptions = args.descriptions
        if descriptions is None and benchmark.released_descriptions is not None:
            descriptions = str(benchmark.released_descriptions)
        if {"descriptions", "reweighted"} & set(args.prompts) and descriptions is None:
            sys.exit("Not starting: --prompts descriptions/reweighted need --descriptions (tools/parse_tags.py "
                     "describe writes one; docs/tagging.md)")
        described = load_descriptions(descriptions) if descriptions else None
        threshold = np.loadtxt(args.threshold_file, dtype=np.float64, ndmin=1) if args.threshold_file \
            else args.threshold
    except (MissingDatasetError, ValueError, OSError) as err:
        sys.exit(f"Not starting: {err}")
    if args.threshold_file and len(threshold) != len(benchmark.tags):
        sys.exit(f"Not starting: {args.threshold_file} has {len(threshold)} thresholds for {len(benchmark.tags)} tags")
    if missing:
        print(f"warning: {missing} of {len(benchmark.images)} images are missing; they are scored as black images, "
              f"as RAM's harness does (listed in the result)")
    device = _init_distributed(args.launcher)
    model = tagalign.load(args.checkpoint, clip=args.clip, pretrained=args.pretrained, device=device,
                          encoder=args.encoder, encoder_options=args.encoder_options)
    templates = TEMPLATE_SETS[args.prompt_set] if args.prompt_set else DEFAULT_TEMPLATES
    texts = build_tag_texts(model, benchmark.tags, args.prompts, described, templates, args.reweight_scale)
    result = evaluate_tagging(model, benchmark, texts, args.scoring, args.image_size, args.norm or "imagenet",
                              threshold, args.batch_size, device=device)
    result["settings"].update(checkpoint=args.checkpoint, descriptions=descriptions, templates=list(templates))
    if int(os.environ.get("RANK", 0)) != 0:
        return
    print(format_tagging_table(result))
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


def _previous(path: Path | None, resume: bool) -> dict:
    """The results an earlier run wrote to ``path`` (with --resume)."""
    if not resume or path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        sys.exit(f"Not starting: --resume cannot read {path} ({err}); move it away or leave out --resume")


def _evaluate(args, keys: list[str], encoder: str | None, out: str | None, work_dir: Path,
              save_preds: str | None = None, previous: dict | None = None,
              save_logits: str | None = None) -> dict[str, dict]:
    reads_vfm = encoder is None or needs_vfm(encoder)  # None: the checkpoint's encoder decides
    return evaluate_many(keys, out=out, save_preds=save_preds, work_dir=work_dir, previous=previous,
                         save_logits=save_logits,
                         data_root=args.data_root,
                         checkpoint=args.checkpoint, clip=args.clip, pretrained=args.pretrained,
                         launcher=args.launcher, cfg_options=args.cfg_options, protocol=args.protocol,
                         preset=args.preset, encoder=encoder, encoder_options=args.encoder_options,
                         vfm=args.vfm if reads_vfm else None, vfm_weights=args.vfm_weights if reads_vfm else None,
                         lposs_vfm=args.lposs_vfm, lposs_vfm_weights=args.lposs_vfm_weights,
                         sam_weights=args.sam_weights,
                         overrides=_overrides(args),
                         duplicate_names="keep" if args.keep_duplicate_names else "drop_from_background")


def run_comparison(args, keys: list[str]) -> None:
    """Every training-free encoder on the datasets, under one protocol: one Markdown and one JSON table."""
    from mmengine.dist import is_main_process

    if args.checkpoint:
        sys.exit("--encoder all compares the training-free encoders; leave out --checkpoint")
    results: dict[str, dict] = {}
    out = Path(args.out) if args.out else Path(args.work_dir) / "comparison.json"
    previous = _previous(out, args.resume)
    skipped: dict[str, str] = {}
    for encoder in ENCODERS:
        print(f"== encoder {encoder}")
        save_preds = str(Path(args.save_preds) / encoder) if args.save_preds else None
        save_logits = str(Path(args.save_logits) / encoder) if args.save_logits else None
        try:
            results[encoder] = _evaluate(args, keys, encoder, None, Path(args.work_dir) / encoder, save_preds,
                                         previous.get(encoder), save_logits)
        except (UnsupportedTowerError, VfmWeightsUnavailableError) as err:  # at model build, before any image
            skipped[encoder] = str(err)
            print(f"== encoder {encoder}: skipped, {err}")
            continue
        if is_main_process():
            write_json(results, out)
    if is_main_process():
        table = comparison_table(results, skipped)
        out.with_suffix(".md").write_text(table + "\n")
        print(table)
        print(f"wrote {out} and {out.with_suffix('.md')}")


def main() -> None:
    args = parse_args()
    _check_encoder_options(args)
    if args.protocol is None:
        args.protocol = PRESETS[args.preset][0] if args.preset else "tagalign"
    if (args.task == "tagging") != (args.dataset in (*TAGGING_BENCHMARKS, "custom")):
        sys.exit(f"Not starting: --dataset {args.dataset} is for --task "
                 f"{'segmentation' if args.task == 'tagging' else 'tagging'}")
    if args.task == "tagging":
        run_tagging(args)
        return
    if args.dataset in REFERRING:
        run_referring(args)
        return
    keys = _GROUPS.get(args.dataset, args.dataset.split(","))
    try:
        for key in keys:  # a bad switch is reported before anything runs
            resolve_settings(key, args.protocol, args.preset, _overrides(args))
    except ValueError as err:
        sys.exit(f"Not starting: {err}")
    try:
        if args.encoder == "all":
            run_comparison(args, keys)
            return
        results = _evaluate(args, keys, args.encoder, args.out, Path(args.work_dir), args.save_preds,
                            _previous(Path(args.out) if args.out else None, args.resume), args.save_logits)
    except MissingDatasetError as err:
        sys.exit(f"Not starting: {err}")
    encoder = next(iter(results.values()))["encoder"]
    pamr = any(r["inference"]["pamr"] for r in results.values())
    options = next(iter(results.values())).get("settings", {}).get("model", {}).get("encoder_options")
    trident = any(r["inference"].get("trident") for r in results.values())
    print(format_table(results, published_reference(encoder, trained=bool(args.checkpoint), pamr=pamr,
                                                    encoder_options=options, trident=trident)))
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
