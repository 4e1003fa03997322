"""Projector: identity at init (equals frozen ln_post/proj), parameter count, gates open the conv path."""

from __future__ import annotations

import torch

from tagalign.models import GatedConvProjector, load_clip


def _frozen_head(visual, x):
    return (visual.ln_post(x.permute(0, 2, 3, 1)) @ visual.proj).permute(0, 3, 1, 2)


def test_identity_at_init(tiny_clip):
    projector = GatedConvProjector(tiny_clip.visual)
    x = torch.randn(2, 64, 7, 5)
    assert torch.equal(projector(x), _frozen_head(tiny_clip.visual, x))


def test_vit_b16_parameter_count():
    model = load_clip("ViT-B-16-quickgelu")
    projector = GatedConvProjector(model.visual)
    assert sum(p.numel() for p in projector.parameters()) == 21_637_636
    assert all(p.requires_grad for p in projector.parameters())


def test_open_gates_change_output_and_train_convs(tiny_clip):
    projector = GatedConvProjector(tiny_clip.visual)
    x = torch.randn(1, 64, 4, 4)
    # at init the conv weights get no gradient (gates are 0) but the gates do
    projector(x).square().sum().backward()
    assert projector.units[0].conv.weight.grad.abs().max() == 0
    assert projector.units[0].gate.grad.abs() > 0
    with torch.no_grad():
        for unit in projector.units:
            unit.gate.fill_(0.5)
    assert not torch.allclose(projector(x), _frozen_head(tiny_clip.visual, x))


def test_head_is_a_trainable_copy(tiny_clip):
    projector = GatedConvProjector(tiny_clip.visual)
    with torch.no_grad():
        projector.head.proj.add_(1.0)
        projector.head.ln_post.weight.add_(1.0)
    assert not torch.equal(projector.head.proj, tiny_clip.visual.proj)
    assert not torch.equal(projector.head.ln_post.weight, tiny_clip.visual.ln_post.weight)
