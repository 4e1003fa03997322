"""Every dense encoder (tagalign.models.dense_features) vs open_clip's own encode_image, same weights, same input
size, same run.

    python benchmarks/dense_encoder.py [--model ViT-B-16-quickgelu] [--size 448] [--batch 1] [--repeats 5]

Prints images/s for each, the time ratio against encode_image (surgery target <= 1.3; encoders that change only the
last block should cost about the same as plain CLIP) and the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import open_clip
import torch
from _machine import machine_line

from tagalign.models import ENCODERS, dense_features, load_clip


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16-quickgelu")
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = load_clip(args.model, device=args.device)
    # open_clip's encode_image checks the positional-table size, so the baseline is built at the input size and
    # given the same weights with the table resized the same way.
    plain = open_clip.create_model(args.model, force_image_size=args.size, device=args.device).eval()
    state = model.state_dict()
    grid = args.size // model.visual.conv1.stride[0]
    from tagalign.models.encoders import interpolate_pos_embed

    state["visual.positional_embedding"] = interpolate_pos_embed(
        state["visual.positional_embedding"], (grid, grid), tuple(model.visual.grid_size)
    )
    plain.load_state_dict(state)
    images = torch.randn(args.batch, 3, args.size, args.size, device=args.device)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        t_plain = _time(lambda: (plain.encode_image(images), sync()), args.repeats)
        timings = {name: _time(lambda name=name: (dense_features(model, images, name), sync()), args.repeats)
                   for name in ENCODERS}

    print(machine_line(args.device))
    print(f"model {args.model}, random weights, fp32, batch {args.batch}, {args.size}x{args.size}, "
          f"median of {args.repeats}")
    print(f"{'open_clip encode_image':<24}{t_plain:.3f} s/batch  {args.batch / t_plain:.2f} images/s  (baseline)")
    for name, seconds in timings.items():
        print(f"{name:<24}{seconds:.3f} s/batch  {args.batch / seconds:.2f} images/s  ratio {seconds / t_plain:.3f}")


if __name__ == "__main__":
    main()
