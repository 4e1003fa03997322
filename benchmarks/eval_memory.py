"""Evaluation cost against the vocabulary size: all classes at once (the previous code path) vs chunks of classes.

    python benchmarks/eval_memory.py [--model ViT-B-16] [--classes 21 150 459 847 920] [--protocols tagalign sclip]
                                     [--device cpu|cuda] [--bf16] [--budget-mb 256] [--before-max 920]

One 448x1120 network input whose original image is 500x1250 (the issue's case), random weights, random text
embeddings (the class count is what matters). Per protocol and class count:

* ``before``: the segmentor before class chunks, written out here (:func:`previous_code`): every class at full
  resolution at once, from the window batch's upsampled maps to the resized ``seg_logits`` kept on the sample.
* ``after``: ``TagAlignSegmentor.predict``'s path: windows scored once, then class chunks within ``--budget-mb``.
* ``model``: the encoder and the patch-grid scores alone (``WindowScores``), shared by both.
* ``floor``: upsample, average, resize and argmax every class map, nothing else (chunked, no bookkeeping).

Extra peak memory is the peak above the memory held before the call: the process's resident memory on CPU (its
high-water mark reset through /proc/self/clear_refs), allocated CUDA memory on a GPU. ``labels equal`` runs the
all-at-once computation and the chunks on the same window scores and compares them pixel for pixel (two encoder
runs may differ in the last bit: BLAS results depend on memory alignment, which moves near-tied pixels). The
ratios against 21 classes and ``after / (model + floor)`` come last.
"""

from __future__ import annotations

import argparse
import gc
import time
from functools import partial

import torch
import torch.nn.functional as F
from _machine import machine_line

from tagalign.models import TagAlign, load_clip
from tagalign.segmentation.class_chunks import bytes_per_query, class_max, plan_chunks
from tagalign.segmentation.inference_config import InferenceConfig, window_grid
from tagalign.segmentation.label_maps import sclip_labels, tagalign_labels, to_original_size
from tagalign.segmentation.protocols import protocol_settings
from tagalign.segmentation.resources import reset_peak_memory
from tagalign.segmentation.windows import WindowScores

INPUT, ORIGINAL = (448, 1120), (500, 1250)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def measure(fn, device: str) -> tuple[object, float, float]:
    """(result, seconds, extra peak MB) of ``fn()``."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_memory()
        base = _rss_mb()
    start = time.perf_counter()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
        extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        extra = _peak_rss_mb() - base
    return result, time.perf_counter() - start, extra


def before_labels(scores: WindowScores, query_class, num_classes, cfg: InferenceConfig) -> torch.Tensor:
    """All classes at full resolution at once from the same window scores (for the labels check)."""
    maps = scores.average()
    if cfg.protocol == "tagalign":
        return to_original_size(class_max(maps, query_class, num_classes), {"ori_shape": ORIGINAL})[0].argmax(0)
    cosines = F.interpolate(maps, size=ORIGINAL, mode="bilinear", align_corners=False)
    probs = (cfg.logit_scale * cosines).softmax(dim=1)
    return class_max(probs, query_class, num_classes)[0].argmax(0)


def previous_code(model, image, texts, query_class, num_classes, cfg: InferenceConfig) -> torch.Tensor:
    """The segmentor before class chunks, written out: ``tagalign``: the window batch upsampled for every text at
    once (``masks``), summed, divided, the synonym max into a new tensor, mmseg's resize, argmax; ``sclip``: one
    window at a time, cosines upsampled and summed, divided, resized, softmax, scatter into a per-class tensor,
    argmax. The class maps were also kept on the sample (``seg_logits``)."""
    height, width = INPUT
    boxes = window_grid(height, width, cfg.crop, cfg.stride)
    total = image.new_zeros((1, len(texts), height, width))
    counts = image.new_zeros((1, 1, height, width))
    if cfg.protocol == "tagalign":
        for start in range(0, len(boxes), cfg.crop_batch):
            chunk = boxes[start : start + cfg.crop_batch]
            crops = torch.cat([image[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk])
            probs = model.masks(crops, texts, clip_w=cfg.clip_w, scale=cfg.scale, bias=cfg.bias).float()
            for (y1, y2, x1, x2), crop_probs in zip(chunk, probs):
                total[0, :, y1:y2, x1:x2] += crop_probs
                counts[0, :, y1:y2, x1:x2] += 1
        per_class = total / counts
        per_class = per_class.new_zeros(per_class.shape).scatter_reduce(
            1, query_class.view(1, -1, 1, 1).expand_as(per_class), per_class, reduce="amax", include_self=False)
        logits = F.interpolate(per_class, size=ORIGINAL, mode="bilinear", align_corners=False)[0]
        return logits.argmax(0), logits
    for y1, y2, x1, x2 in boxes:
        crop = image[:, :, y1:y2, x1:x2]
        grid = model.similarities(crop, texts, clip_w=cfg.clip_w).float()
        total[:, :, y1:y2, x1:x2] += F.interpolate(grid, size=crop.shape[-2:], mode="bilinear", align_corners=False)
        counts[:, :, y1:y2, x1:x2] += 1
    cosines = F.interpolate(total / counts, size=ORIGINAL, mode="bilinear", align_corners=False)
    probs = (cfg.logit_scale * cosines).softmax(dim=1)
    per_class = probs.new_zeros((1, num_classes, *ORIGINAL)).scatter_reduce(
        1, query_class.view(1, -1, 1, 1).expand_as(probs), probs, reduce="amax", include_self=False)
    return per_class[0].argmax(0), per_class[0]


def after_labels(scores: WindowScores, query_class, num_classes, cfg: InferenceConfig) -> torch.Tensor:
    """``TagAlignSegmentor.predict``'s path: class chunks within the budget."""
    per_query = bytes_per_query(cfg, INPUT, ORIGINAL)
    chunks = plan_chunks(query_class.tolist(), num_classes, max(int(cfg.map_budget_mb * 2**20 // per_query), 1))
    if cfg.protocol == "sclip":
        return sclip_labels(scores, chunks, query_class, num_classes, cfg, ORIGINAL)[0][0]
    return tagalign_labels(scores, chunks, query_class, False, cfg, {"ori_shape": ORIGINAL})[0][0]


def after(model, image, texts, query_class, num_classes, cfg: InferenceConfig) -> torch.Tensor:
    return after_labels(WindowScores(model, image, texts, cfg), query_class, num_classes, cfg)


def floor(scores: WindowScores, cfg: InferenceConfig) -> torch.Tensor:
    """Upsample, average, resize and argmax every map (chunks of the same size as ``after``), nothing else."""
    per_query = bytes_per_query(cfg, INPUT, ORIGINAL)
    step = max(int(cfg.map_budget_mb * 2**20 // per_query), 1)
    best = None
    for start in range(0, scores.num_queries, step):
        maps = F.interpolate(scores.average(slice(start, start + step)), size=ORIGINAL, mode="bilinear",
                             align_corners=False)[0]
        top = maps.max(0).values
        best = top if best is None else torch.maximum(best, top)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--classes", type=int, nargs="+", default=[21, 150, 459, 847, 920])
    parser.add_argument("--protocols", nargs="+", default=["tagalign", "sclip"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--budget-mb", type=float, default=InferenceConfig.map_budget_mb)
    parser.add_argument("--before-max", type=int, default=920, help="skip 'before' above this many classes")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = TagAlign(load_clip(args.model)).to(args.device).eval()
    image = torch.randn(1, 3, *INPUT, device=args.device)
    print(machine_line(args.device))
    print(f"model {args.model} (random weights), input {INPUT[0]}x{INPUT[1]} -> original {ORIGINAL[0]}x{ORIGINAL[1]}"
          f", budget {args.budget_mb:g} MB, {'bf16' if args.bf16 else 'fp32'}")
    header = ("| protocol | classes | before MB | after MB | before s | after s | model s | floor s | "
              "after/(model+floor) | labels equal |")
    rows, baseline = [header, "|---" * 10 + "|"], {}
    dim = model.clip.text_projection.shape[1]
    for protocol in args.protocols:
        fields = dict(protocol_settings("ade847", protocol)["inference"], map_budget_mb=args.budget_mb,
                      precision="bf16" if args.bf16 else "fp32")
        cfg = InferenceConfig(**fields)
        for count in args.classes:
            texts = F.normalize(torch.randn(count, dim, device=args.device), dim=-1)
            query_class = torch.arange(count, device=args.device)
            run = (model, image, texts, query_class, count, cfg)
            with torch.no_grad():
                scores, model_s, _ = measure(partial(WindowScores, model, image, texts, cfg), args.device)
                _, floor_s, _ = measure(partial(floor, scores, cfg), args.device)
                labels, after_s, after_mb = measure(partial(after, *run), args.device)
                if count <= args.before_max:  # the same window scores through both paths: labels must be equal
                    same = bool(torch.equal(before_labels(scores, *run[3:]), after_labels(scores, *run[3:])))
                    _, before_s, before_mb = measure(partial(previous_code, *run), args.device)
                    before_cells = f"{before_mb:,.0f} | {after_mb:,.0f} | {before_s:.2f} | {after_s:.2f}"
                else:
                    same, before_cells = None, f"- | {after_mb:,.0f} | - | {after_s:.2f}"
                del scores
            baseline.setdefault(protocol, (after_mb, after_s))
            rows.append(f"| {protocol} | {count} | {before_cells} | {model_s:.2f} | {floor_s:.2f} | "
                        f"{after_s / (model_s + floor_s):.2f} | {same if same is not None else '-'} |")
            print(rows[-1], flush=True)
    print("\n".join(rows))
    for protocol in args.protocols:
        first = [r for r in rows[2:] if r.startswith(f"| {protocol} | {args.classes[0]} |")][0]
        last = [r for r in rows[2:] if r.startswith(f"| {protocol} | {args.classes[-1]} |")][0]
        mb = [float(cell.replace(",", "")) for cell in (first.split("|")[4], last.split("|")[4])]
        sec = [float(first.split("|")[6]), float(last.split("|")[6])]
        print(f"{protocol}: after at {args.classes[-1]} vs {args.classes[0]} classes: extra peak memory x"
              f"{mb[1] / max(mb[0], 1e-9):.2f} ({mb[0]:,.0f} -> {mb[1]:,.0f} MB), time x{sec[1] / sec[0]:.2f} "
              f"({sec[0]:.2f} -> {sec[1]:.2f} s)")


if __name__ == "__main__":
    main()
