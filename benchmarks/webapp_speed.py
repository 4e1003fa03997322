"""Web demo: a second request with the same image and other words, against the first (which encodes the image).

Both requests run the demo's own code (tagalign.webapp.SegmentationDemo: TagAlign + the CLIP-surgery baseline row,
overlay, heatmaps); the second one finds the frozen encoder's output in the feature cache.

    python benchmarks/webapp_speed.py [--model ViT-B-16-quickgelu] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _machine import machine_line

from tagalign.models import TagAlign, load_clip
from tagalign.webapp import SegmentationDemo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16-quickgelu")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    demo = SegmentationDemo(TagAlign(load_clip(args.model, device=args.device)).to(args.device))
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    timings = []
    for words in ("cat\nbrown cat\nsofa", "tv, monitor\nlamp\nwindow"):
        start = time.perf_counter()
        result = demo.run(image, words)
        timings.append(time.perf_counter() - start)
        assert result.overlay is not None, result.status
    print(machine_line())
    print(f"{args.model}, random weights, fp32, one 640x480 image, 3 queries per request, with the CLIP row")
    print(f"first request (encodes the image): {timings[0]:.2f} s")
    print(f"second request (other words)     : {timings[1]:.2f} s")
    print(f"second / first: {timings[1] / timings[0]:.2f} (cache hits {demo.cache.hits}, misses {demo.cache.misses})")


if __name__ == "__main__":
    main()
