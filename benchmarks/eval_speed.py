"""Zero-shot segmentation speed: our slide inference (windows batched) vs a reference-style loop (one crop per
forward), same model, same images, fp32; checks that both give identical predictions.

    python benchmarks/eval_speed.py [--model ViT-B-16-quickgelu] [--images 4] [--classes 21] [--crop-batch 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _machine import machine_line

from tagalign.data.transforms import resize_short_side, to_tensor
from tagalign.models import TagAlign, load_clip
from tagalign.segmentation import InferenceConfig, predict_probabilities, window_grid


def reference_loop(model, image, texts, with_bg, cfg: InferenceConfig) -> torch.Tensor:
    """mmseg 0.x EncoderDecoder.slide_inference + TagAlign's generate_masks: one window per forward."""
    _, _, height, width = image.shape
    classes = len(texts) + int(with_bg)
    total = image.new_zeros((1, classes, height, width))
    count = image.new_zeros((1, 1, height, width))
    for y1, y2, x1, x2 in window_grid(height, width, cfg.crop, cfg.stride):
        masks = model.masks(image[:, :, y1:y2, x1:x2], texts, cfg.clip_w, cfg.scale, cfg.bias)
        if with_bg:
            masks = torch.cat([torch.full_like(masks[:, :1], cfg.bg_thresh), masks], dim=1)
        total[:, :, y1:y2, x1:x2] += masks
        count[:, :, y1:y2, x1:x2] += 1
    return total / count



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16-quickgelu")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--crop-batch", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = TagAlign(load_clip(args.model, device=args.device)).to(args.device).eval()
    texts = torch.randn(args.classes - 1, model.clip.visual.output_dim, device=args.device)
    rng = np.random.default_rng(0)
    sizes = [(int(rng.integers(333, 500)), 500) if i % 2 else (500, int(rng.integers(333, 500)))
             for i in range(args.images)]  # VOC-like: long side 500
    images = [to_tensor(resize_short_side(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))).to(args.device)
              for h, w in sizes]
    cfg = InferenceConfig(crop_batch=args.crop_batch)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run(fn):
        fn(images[0])  # warm-up
        sync()
        start = time.perf_counter()
        outputs = [fn(image) for image in images]
        sync()
        return time.perf_counter() - start, outputs

    with torch.inference_mode():
        t_ref, ref = run(lambda im: reference_loop(model, im, texts, True, cfg))
        t_ours, ours = run(lambda im: predict_probabilities(model, im, texts, True, cfg))
    same = all(torch.equal(a.argmax(1), b.argmax(1)) for a, b in zip(ours, ref))
    max_diff = max((a - b).abs().max().item() for a, b in zip(ours, ref))
    windows = sum(len(window_grid(*im.shape[-2:], cfg.crop, cfg.stride)) for im in images)
    print(machine_line(args.device))
    print(f"{args.model}, random weights, fp32, {len(images)} VOC-like images ({windows} windows of 448), "
          f"{args.classes} classes")
    print(f"reference loop (1 crop/forward): {t_ref:.2f} s  {len(images) / t_ref:.3f} images/s")
    print(f"ours (crop_batch={args.crop_batch})        : {t_ours:.2f} s  {len(images) / t_ours:.3f} images/s")
    print(f"speed-up: {t_ref / t_ours:.2f}x | identical predictions: {same} | max |prob diff| {max_diff:.2e}")


if __name__ == "__main__":
    main()
