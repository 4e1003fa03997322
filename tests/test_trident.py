"""Trident (training-free spec-2 §5) against its steps written out here: the authors' resize rule on worked sizes,
the splice and SAM's aggregation with loops, SAM's last attention against timm's own block, and the image-wide
scores composed from those on a tiny CLIP, a tiny DINO ViT-B/16 and a tiny SAM (random biases and norms)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tagalign.models.vfm import load_vfm
from tagalign.segmentation.trident import Trident, TridentSettings, sam_aggregation, splice_windows, trident_size


def test_the_authors_resize_rule():
    assert trident_size(448, 592) == (448, 592)  # already multiples of 16
    assert trident_size(448, 597) == (464, 608)  # longer 597 -> 608; 448·608/597 = 456.2 -> 456 -> 464
    assert trident_size(100, 150) == (336, 336)  # 160 and 112, then at least one 336 window
    assert trident_size(500, 375, crop=224) == (512, 384)
    assert trident_size(315, 597, crop=224) == (320, 608)  # 315·608/597 = 320.8 -> 320 (truncated, not rounded)


def test_splice_averages_overlaps():
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    out = splice_windows(maps, [(0, 2, 0, 2), (0, 2, 1, 3)], (2, 3))
    for c in range(3):
        for r in range(2):
            assert out[c, r, 0] == maps[0, c, r, 0] and out[c, r, 2] == maps[1, c, r, 1]
            assert out[c, r, 1] == (maps[0, c, r, 1] + maps[1, c, r, 0]) / 2


def _aggregation(attention, values, cos_fac, refine_neg_cos):
    heads, n, _ = attention.shape
    v = F.normalize(values, dim=-1)
    cos = [[[float(v[h, i] @ v[h, j]) for j in range(n)] for i in range(n)] for h in range(heads)]
    out = torch.zeros(n, n)
    for i in range(n):
        t = cos_fac * sum(cos[h][i][j] for h in range(heads) for j in range(n)) / (heads * n)
        if not refine_neg_cos and t < 0:
            t = 0.6
        t = min(t, 0.9)
        for j in range(n):
            out[i, j] = sum(float(attention[h, i, j]) for h in range(heads) if cos[h][i][j] > t) / heads
    return out / out.sum(1, keepdim=True)


@pytest.mark.parametrize("cos_fac, refine", [(1.2, True), (3.0, False), (0.0, True)])
def test_sam_aggregation_equals_its_statement(cos_fac, refine):
    torch.manual_seed(1)
    attention = torch.randn(3, 12, 12).softmax(-1)
    values = torch.randn(3, 12, 8) + 0.3
    values[:, :4] *= -1  # some rows with a negative mean cosine
    ours = sam_aggregation(attention, values, cos_fac, refine)
    assert torch.allclose(ours, _aggregation(attention, values, cos_fac, refine), atol=1e-6)


def test_sams_last_attention_is_the_blocks_own():
    """softmax(q·kᵀ·s + decomposed relative positions) times v, projected, is what timm's block computes."""
    sam = load_vfm("sam_vitb", tiny=True)
    x = torch.randn(2, 3, 128, 128)
    attention, values = sam.sam_last_attention(x)
    captured = []
    handle = sam.model.blocks[-1].attn.register_forward_hook(lambda m, i, o: captured.append((i[0], o)))
    sam.model.forward_features(x)
    handle.remove()
    block_input, block_output = captured[0]
    heads = attention.shape[1]
    mixed = (attention @ values).transpose(1, 2).reshape(2, 64, -1)
    expected = sam.model.blocks[-1].attn.proj(mixed).view(block_output.shape)
    assert attention.shape == (2, heads, 64, 64)
    assert torch.allclose(expected, block_output, atol=1e-5)
    assert torch.allclose(attention.sum(-1), torch.ones(2, heads, 64), atol=1e-5)


def test_trident_scores_compose_windows_splice_and_sam(tiny_clip):
    """One 80x120 image -> 96x128 (multiples of 16; 64/32 windows: 2x3 = 6), proxyclip tokens of all windows in one
    batch (DINO ViT-B/16: the CLIP grid), spliced, resized to SAM's valid 5x8 grid, aggregated, CLIP's head."""
    from tagalign.models import TagAlign

    torch.manual_seed(2)
    dino, sam = load_vfm("dino_vitb16", tiny=True), load_vfm("sam_vitb", tiny=True)
    model = TagAlign(tiny_clip, encoder="proxyclip", encoder_options={"batch_mean": True}, vfm=dino)
    image, text = torch.randn(1, 3, 80, 120), torch.randn(4, 64)
    trident = Trident(sam, TridentSettings(cos_fac=1.2))
    ours = trident.scores(model, image, text, crop=64, stride=32, clip_w=0.0)
    processed = F.interpolate(image, size=(96, 128), mode="bilinear", align_corners=False)
    boxes = [(y, y + 64, x, x + 64) for y in (0, 32) for x in (0, 32, 64)]
    tokens = model.encode_patches(torch.cat([processed[:, :, a:b, c:d] for a, b, c, d in boxes]))
    spliced = torch.zeros(64, 6, 8)
    count = torch.zeros(1, 6, 8)
    for t, (a, b, c, d) in zip(tokens, boxes, strict=True):
        spliced[:, a // 16:b // 16, c // 16:d // 16] += t
        count[:, a // 16:b // 16, c // 16:d // 16] += 1
    spliced /= count
    # SAM: longest side 120 -> 128 (scale 128/120): 80 -> int(85.8) = 85 rows, 128 columns; valid grid 5 x 8
    prepared, valid = trident.sam_input(image)
    assert valid == (5, 8) and prepared.shape[-2:] == (128, 128) and prepared[..., 85:, :].abs().max() == 0
    taller, _ = trident.sam_input(torch.randn(1, 3, 83, 120))  # 83·128/120 = 88.53: SAM rounds to 89 rows
    assert taller[..., 88, :].abs().max() > 0 and taller[..., 89:, :].abs().max() == 0
    attention, values = sam.sam_last_attention(prepared)
    keep = torch.tensor([r < 5 and c < 8 for r in range(8) for c in range(8)])
    a = _aggregation(attention[0][:, keep][:, :, keep], values[0][:, keep], 1.2, True)
    features = F.interpolate(spliced[None], size=(5, 8), mode="bilinear", align_corners=False)[0].flatten(1)
    mixed = (a @ features.t())  # [40, width]
    head = F.layer_norm(mixed, (64,), tiny_clip.visual.ln_post.weight, tiny_clip.visual.ln_post.bias) @ \
        tiny_clip.visual.proj
    expected = (F.normalize(head, dim=-1) @ F.normalize(text, dim=-1).t()).t().reshape(1, 4, 5, 8)
    assert ours.shape == (1, 4, 5, 8)
    assert (ours - expected).abs().max() < 1e-4
    assert math.isfinite(float(ours.sum()))
