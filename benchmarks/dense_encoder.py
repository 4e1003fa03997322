"""Every dense encoder (tagalign.models.dense_features) vs open_clip's own encode_image, same weights, same input
size, same run.

    python benchmarks/dense_encoder.py [--model ViT-B-16-quickgelu] [--size 448] [--batch 1] [--repeats 5]
    python benchmarks/dense_encoder.py --model EVA02-B-16 --size 224     # timm towers: at their native size

Prints images/s for each, the time ratio against encode_image (surgery target <= 1.3; encoders that change only the
last block should cost about the same as plain CLIP) and the machine. Any tower family of docs/backbones.md; timm
towers (SigLIP, PE-Core, EVA02) run open_clip's encode_image only at their native size, so the baseline is measured
there; encoders not defined on the family are listed as such. A VFM-guided encoder (proxyclip) runs its second model
(full size, random weights) inside its time; an encoder that reads the text queries (resclip's SFR) gets ``--queries``
random ones (default 150, ADE20K's vocabulary), its first pass, PAMR and SFR map inside its time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import open_clip
import torch
from _machine import machine_line

from tagalign.models import ENCODERS, dense_features, load_clip
from tagalign.models.encoders import (
    UnsupportedTowerError,
    as_tower,
    check_encoder,
    interpolate_pos_embed,
    needs_text,
    needs_vfm,
)
from tagalign.models.vfm import load_vfm


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
    parser.add_argument("--queries", type=int, default=150, help="text queries for the encoders that read them")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = load_clip(args.model, device=args.device)
    tower = as_tower(model.visual)
    if tower.family == "open_clip_vit":
        # open_clip's encode_image checks the positional-table size, so the baseline is built at the input size and
        # given the same weights with the table resized the same way.
        plain = open_clip.create_model(args.model, force_image_size=args.size, device=args.device).eval()
        state = model.state_dict()
        grid = args.size // tower.patch_size[0]
        state["visual.positional_embedding"] = interpolate_pos_embed(
            state["visual.positional_embedding"], (grid, grid), tuple(model.visual.grid_size)
        )
        plain.load_state_dict(state)
    else:
        native = tuple(model.visual.trunk.patch_embed.img_size)
        if native != (args.size, args.size) and not getattr(model.visual.trunk, "dynamic_img_size", False):
            raise SystemExit(f"{args.model} is a {tower.family} tower: open_clip's encode_image runs it at its native "
                             f"{native[0]}x{native[1]} only; pass --size {native[0]}")
        plain = model
    images = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    text = torch.randn(args.queries, tower.output_dim, device=args.device)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        t_plain = _time(lambda: (plain.encode_image(images), sync()), args.repeats)
        timings, undefined = {}, {}
        for name in ENCODERS:
            try:
                check_encoder(name, None, model.visual)
            except UnsupportedTowerError as err:
                undefined[name] = str(err)
                continue
            vfm = load_vfm(needs_vfm(name), pretrained=False, device=args.device) if needs_vfm(name) else None
            words = text if needs_text(name) else None
            timings[name] = _time(lambda name=name, vfm=vfm, words=words: (
                dense_features(model, images, name, vfm=vfm, text_emb=words), sync()),
                args.repeats)  # a VFM-guided encoder's time includes its second model's pass

    print(machine_line(args.device))
    print(f"model {args.model} ({tower.family} tower), random weights, fp32, batch {args.batch}, "
          f"{args.size}x{args.size}, median of {args.repeats}; {args.queries} text queries for resclip")
    print(f"{'open_clip encode_image':<24}{t_plain:.3f} s/batch  {args.batch / t_plain:.2f} images/s  (baseline)")
    for name, seconds in timings.items():
        print(f"{name:<24}{seconds:.3f} s/batch  {args.batch / seconds:.2f} images/s  ratio {seconds / t_plain:.3f}")
    for name, reason in undefined.items():
        print(f"{name:<24}not run: {reason}")


if __name__ == "__main__":
    main()
