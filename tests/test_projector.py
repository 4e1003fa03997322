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


def _unit_formula(x, norm_weight, norm_bias, conv_weight, conv_bias, gate):
    """Spec §3: x + tanh(g) * Conv3x3(GELU_erf(LN over channels(x))), written out per pixel."""
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    normed = (x - mean) / torch.sqrt(var + 1e-5) * norm_weight[None, :, None, None] + norm_bias[None, :, None, None]
    activated = 0.5 * normed * (1 + torch.erf(normed / 2**0.5))
    conv = torch.nn.functional.conv2d(activated, conv_weight, conv_bias, padding=conv_weight.shape[-1] // 2)
    return x + torch.tanh(gate) * conv


def test_open_gates_match_the_per_unit_formula(tiny_clip):
    """Gates, LayerNorms and head all non-trivial: every unit and the ln_post/proj head against the spec."""
    torch.manual_seed(7)
    projector = GatedConvProjector(tiny_clip.visual)
    with torch.no_grad():
        for unit in projector.units:
            unit.gate.fill_(float(torch.empty(()).uniform_(0.3, 1.2)))
            unit.norm.weight.copy_(1 + 0.3 * torch.randn_like(unit.norm.weight))
            unit.norm.bias.copy_(0.3 * torch.randn_like(unit.norm.bias))
            unit.conv.weight.mul_(5)
        head_ln = projector.head.ln_post
        head_ln.weight.copy_(1 + 0.3 * torch.randn_like(head_ln.weight))
        head_ln.bias.copy_(0.3 * torch.randn_like(head_ln.bias))
    x = 2 * torch.randn(2, 64, 6, 5) + 0.5
    expected = x
    for unit in projector.units:
        expected = _unit_formula(expected, unit.norm.weight, unit.norm.bias, unit.conv.weight, unit.conv.bias,
                                 unit.gate)
    tokens = expected.permute(0, 2, 3, 1)
    mean, var = tokens.mean(-1, keepdim=True), tokens.var(-1, unbiased=False, keepdim=True)
    normed = (tokens - mean) / torch.sqrt(var + head_ln.eps) * head_ln.weight + head_ln.bias
    expected = (normed @ projector.head.proj).permute(0, 3, 1, 2)
    with torch.no_grad():
        out = projector(x)
    assert (out - expected).abs().max().item() <= 1e-4
    assert (out - _frozen_head(tiny_clip.visual, x)).abs().max().item() > 0.1  # the gates really are open
