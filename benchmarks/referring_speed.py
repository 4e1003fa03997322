"""Referring evaluation throughput: all expressions of an image share one pass of the image through the encoder
(ours, as tagalign.segmentation.referring does) vs one full pass per expression; same model, same outputs.

    python benchmarks/referring_speed.py [--model ViT-B-16-quickgelu] [--images 2] [--expressions 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _machine import machine_line

from tagalign.data.transforms import resize_short_side, to_tensor
from tagalign.models import TagAlign, load_clip
from tagalign.segmentation import InferenceConfig, predict_probabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16-quickgelu")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--expressions", type=int, default=3, help="expressions per image (RefCOCO: ~2.8 per ref)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = TagAlign(load_clip(args.model)).eval()
    rng = np.random.default_rng(0)
    images = [to_tensor(resize_short_side(rng.integers(0, 255, (427, 640, 3), dtype=np.uint8)))
              for _ in range(args.images)]  # COCO-like size
    texts = [torch.randn(args.expressions, model.clip.visual.output_dim) for _ in images]
    config = InferenceConfig()
    with torch.inference_mode():
        start = time.perf_counter()
        shared = [predict_probabilities(model, im, t, False, config) for im, t in zip(images, texts)]
        t_shared = time.perf_counter() - start
        start = time.perf_counter()
        single = [torch.cat([predict_probabilities(model, im, t[i : i + 1], False, config) for i in range(len(t))], 1)
                  for im, t in zip(images, texts)]
        t_single = time.perf_counter() - start
    same = max((a - b).abs().max().item() for a, b in zip(shared, single))
    n = args.images * args.expressions
    print(machine_line())
    print(f"{args.model}, random weights, fp32, {args.images} images 640x427 -> 448 short side, "
          f"{args.expressions} expressions each")
    print(f"shared image pass (ours): {n / t_shared:.3f} expressions/s ({t_shared:.1f} s)")
    print(f"one pass per expression : {n / t_single:.3f} expressions/s ({t_single:.1f} s)")
    print(f"speed-up: {t_single / t_shared:.2f}x | max |prob diff| {same:.1e}")


if __name__ == "__main__":
    main()
