"""Tagging: (1) RAM++ re-weighted tag scores through each tag's Gram matrix (ours) vs building every image's
re-weighted tag embeddings [B, T, D] (the direct formula); (2) all four scoring choices from one encoder pass per
image (ours) vs one pass per scoring choice. Each variant runs in its own process so its peak memory is its own.

    python benchmarks/tagging_speed.py [--tags 4585 --descriptions 51 --batch 32] [--model ViT-B-16] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from _machine import machine_line


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024


def _start_peak(device: str) -> float:
    """Reset the peak-memory mark and return the memory in use now (MB)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    with open("/proc/self/clear_refs", "w") as refs:  # Linux: "5" resets the process's peak RSS (VmHWM)
        refs.write("5")
    return _status_mb("VmRSS")


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_mb("VmHWM")


def reweighting(args) -> dict:
    import torch.nn.functional as F

    from tagalign.models.text import DescriptionBank, reweighted_cosines, reweighted_embeddings

    generator = torch.Generator().manual_seed(0)
    bank = DescriptionBank(F.normalize(torch.randn(args.tags, args.descriptions, 512, generator=generator), dim=-1),
                           torch.ones(args.tags, args.descriptions, dtype=torch.bool)).to(args.device)
    query = torch.randn(args.batch, 512, generator=generator).to(args.device)
    base = _start_peak(args.device)
    start = time.perf_counter()
    if args.variant == "gram":
        scores = reweighted_cosines(query, bank)
    else:
        scores = torch.einsum("bd,btd->bt", F.normalize(query, dim=-1),
                              F.normalize(reweighted_embeddings(query, bank), dim=-1))
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "peak_mb": _peak_mb(args.device) - base,
            "checksum": float(scores.double().sum())}


def encoder_passes(args) -> dict:
    from tagalign.models import TagAlign, load_clip
    from tagalign.tagging.evaluate import SCORINGS, TagTexts, score_images

    torch.manual_seed(0)
    model = TagAlign(load_clip(args.model)).eval().to(args.device)
    texts = TagTexts(embeddings={"template": torch.nn.functional.normalize(torch.randn(1000, 512), dim=-1)})
    pixels = torch.randn(args.images, 3, 224, 224).to(args.device)
    start = time.perf_counter()
    if args.variant == "shared":
        scores = score_images(model, pixels, texts, SCORINGS)
    else:
        scores = {k: v for s in SCORINGS for k, v in score_images(model, pixels, texts, [s]).items()}
    return {"seconds": time.perf_counter() - start, "checksum": float(sum(v.double().sum() for v in scores.values()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tags", type=int, default=4585, help="RAM's label system")
    parser.add_argument("--descriptions", type=int, default=51, help="per tag, as RAM++'s files")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        job = reweighting if args.variant in ("gram", "direct") else encoder_passes
        print(json.dumps(job(args)))
        return
    results = {}
    for variant in ("gram", "direct", "shared", "per_scoring"):
        run = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--variant", variant], capture_output=True,
                             text=True, check=True, cwd=Path(__file__).parent)
        results[variant] = json.loads(run.stdout.strip().splitlines()[-1])
    gram, direct = results["gram"], results["direct"]
    print(machine_line(args.device))
    print(f"re-weighting, {args.batch} images x {args.tags} tags x {args.descriptions} descriptions, D=512, fp32:")
    time_ratio = gram["seconds"] / direct["seconds"]
    memory_ratio = gram["peak_mb"] / max(direct["peak_mb"], 1e-9)
    print(f"  Gram (ours): {gram['seconds']:.3f} s, peak +{gram['peak_mb']:.0f} MB | direct [B, T, D]: "
          f"{direct['seconds']:.3f} s, peak +{direct['peak_mb']:.0f} MB | time ratio {time_ratio:.2f}, memory ratio "
          f"{memory_ratio:.2f} | same scores: {abs(gram['checksum'] - direct['checksum']) < 1e-2}")
    shared, per = results["shared"], results["per_scoring"]
    print(f"scoring {args.images} images with clip/pooled/max/mean ({args.model}, random weights, 224 px, 1000 tags):")
    print(f"  one encoder pass (ours): {shared['seconds']:.2f} s | one pass per scoring: {per['seconds']:.2f} s | "
          f"speed-up {per['seconds'] / shared['seconds']:.2f}x | same scores: "
          f"{abs(shared['checksum'] - per['checksum']) < 1e-2}")


if __name__ == "__main__":
    main()
