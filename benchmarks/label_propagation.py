"""LPOSS / LPOSS+ cost on one image at LPOSS's protocol, against the same window pipeline without propagation.

    python benchmarks/label_propagation.py [--model ViT-B-16-quickgelu] [--size 448x597] [--queries 150]
                                           [--repeats 3] [--device cpu|cuda]

One image (short side 448, slide 224/112: 3x5 = 15 windows), MaskCLIP's tokens (LPOSS's encoder), ``--queries``
random text queries (150: ADE20K). Baseline: ``WindowScores(...).average()`` (every window encoded and scored, the
maps averaged at full resolution). Then the same with ``lposs`` (a full-size DINO ViT-B/16 with random weights reads
every window, the joint patch graph with k = 400, conjugate gradient) and with ``lposs_plus`` as well (the 13x13
pixel graph over the whole image, conjugate gradient per class). Prints seconds, the ratio to the baseline, the peak
memory (CUDA: allocated; CPU: the process's peak RSS so far) and the machine.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
from _machine import machine_line

from tagalign.models import TagAlign, load_clip
from tagalign.models.vfm import load_vfm
from tagalign.segmentation.inference_config import InferenceConfig
from tagalign.segmentation.label_propagation import LabelPropagation
from tagalign.segmentation.windows import WindowScores


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16-quickgelu")
    parser.add_argument("--size", default="448x597")
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    height, width = (int(v) for v in args.size.split("x"))
    model = TagAlign(load_clip(args.model, device=args.device), encoder="maskclip").to(args.device).eval()
    propagation = LabelPropagation(vfm=load_vfm("dino_vitb16", pretrained=False, device=args.device))
    image = torch.randn(1, 3, height, width, device=args.device)
    text = torch.randn(args.queries, model.tower.output_dim, device=args.device)
    base = dict(protocol="sclip", crop=224, stride=112)
    runs = {"windows only": InferenceConfig(**base), "lposs": InferenceConfig(**base, lposs=True),
            "lposs + lposs_plus": InferenceConfig(**base, lposs=True, lposs_plus=True)}
    results = {}
    with torch.inference_mode():
        for name, config in runs.items():
            def once(config=config):
                maps = WindowScores(model, image, text, config, propagation).average()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                return maps

            once()  # warm-up
            samples = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                once()
                samples.append(time.perf_counter() - start)
            results[name] = (statistics.median(samples), _peak_mb(args.device))

    print(machine_line(args.device))
    print(f"{args.model}, random weights, fp32, one {height}x{width} image, 224/112 windows, {args.queries} queries, "
          f"median of {args.repeats}")
    baseline = results["windows only"][0]
    for name, (seconds, peak) in results.items():
        print(f"{name:<22}{seconds:8.3f} s  ratio {seconds / baseline:6.2f}  peak {peak:8.0f} MB")


if __name__ == "__main__":
    main()
