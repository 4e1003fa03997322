"""Training-step throughput: frozen encoder without autograd (ours) vs a naive step that runs the encoder with
autograd enabled (CLIP parameters requiring grad, as the reference's lazily built surgery modules did, bug B6).

    python benchmarks/train_speed.py [--model ViT-B-16-quickgelu] [--batch 8] [--steps 3] [--tags 10000]
"""

from __future__ import annotations

import argparse
import time

import torch
from _machine import machine_line

from tagalign.models import TagAlign, get_tokenizer, load_clip
from tagalign.models.encoders import surgery_tokens


class NaiveTagAlign(TagAlign):
    """The same model with autograd through the frozen encoder."""

    def encode_patches(self, images):
        return self.token_map(surgery_tokens(self.clip.visual, images, self.surgery_layers)[:, 1:], images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16-quickgelu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    clip = load_clip(args.model, device=args.device)
    tags = torch.randn(args.tags, clip.visual.output_dim)
    images = torch.randn(args.batch, 3, 224, 224, device=args.device)
    tokens = get_tokenizer(clip)([f"a photo number {i}" for i in range(args.batch)]).to(args.device)
    targets = [[i % args.tags, (7 * i) % args.tags] for i in range(args.batch)]

    def measure(model) -> float:
        model = model.to(args.device).train()
        trainable = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("clip.")]
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)

        def step():
            losses = model.loss(images, tokens, targets)
            optimizer.zero_grad()
            (losses["loss_itc"] + losses["loss_tag"]).backward()
            optimizer.step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        step()  # warm-up
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        return (time.perf_counter() - start) / args.steps

    ours = measure(TagAlign(clip, tags))
    naive_model = NaiveTagAlign(clip, tags)
    naive_model.clip.visual.requires_grad_(True)  # gradients flow into (but do not update) the encoder
    naive = measure(naive_model)
    print(machine_line(args.device))
    print(f"{args.model}, random weights, fp32, batch {args.batch} at 224x224, {args.tags} tags, {args.steps} steps")
    print(f"ours  (frozen encoder, no autograd): {ours:.2f} s/step  {args.batch / ours:.2f} samples/s")
    print(f"naive (autograd through encoder)   : {naive:.2f} s/step  {args.batch / naive:.2f} samples/s")
    print(f"speed-up: {naive / ours:.2f}x")


if __name__ == "__main__":
    main()
