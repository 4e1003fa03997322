"""The surgery encoder against a plain, independent implementation of reference spec §1.3-1.5."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from random_affine import randomize_affine_

from tagalign.models import load_clip, surgery_patch_tokens, surgery_tokens


def _layer_norm(x, ln):
    return F.layer_norm(x.float(), (x.shape[-1],), ln.weight, ln.bias, ln.eps)


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def _attention(query, key, value, heads):
    """Explicit multi-head softmax attention (no SDPA): softmax(q k^T / sqrt(d)) v per head."""
    b, n, c = query.shape
    d = c // heads
    q = query.reshape(b, n, heads, d).permute(0, 2, 1, 3)
    k = key.reshape(b, n, heads, d).permute(0, 2, 1, 3)
    v = value.reshape(b, n, heads, d).permute(0, 2, 1, 3)
    weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d), dim=-1)
    return torch.matmul(weights, v).permute(0, 2, 1, 3).reshape(b, n, c)


def _reference_tokens(visual, image, n_deep, pos_mode="bicubic"):
    """Spec §1: shared trunk, then dual path in the last n_deep blocks; CLS from the original path."""
    b = image.shape[0]
    w_conv = visual.conv1.weight
    p = w_conv.shape[-1]
    h, w = image.shape[2] // p, image.shape[3] // p
    # patch embedding as an explicit unfold + matmul
    patches = F.unfold(image, kernel_size=p, stride=p)  # [B, 3*p*p, h*w]
    x = (w_conv.reshape(w_conv.shape[0], -1) @ patches).transpose(1, 2)  # [B, hw, C]
    c = x.shape[-1]
    x = torch.cat([visual.class_embedding.reshape(1, 1, c).expand(b, 1, c), x], dim=1)
    pos = visual.positional_embedding
    g = int(round(math.sqrt(pos.shape[0] - 1)))
    if (h, w) != (g, g):
        grid = pos[1:].reshape(g, g, c).permute(2, 0, 1)[None]
        grid = F.interpolate(grid, size=(h, w), mode=pos_mode, align_corners=False)[0]
        pos = torch.cat([pos[:1], grid.permute(1, 2, 0).reshape(h * w, c)], dim=0)
    x = _layer_norm(x + pos, visual.ln_pre)

    def mlp(block, y):
        return F.linear(_quick_gelu(F.linear(y, block.mlp.c_fc.weight, block.mlp.c_fc.bias)),
                        block.mlp.c_proj.weight, block.mlp.c_proj.bias)

    blocks = list(visual.transformer.resblocks)
    for block in blocks[: len(blocks) - n_deep]:
        heads = block.attn.num_heads
        y = _layer_norm(x, block.ln_1)
        q, k, v = F.linear(y, block.attn.in_proj_weight, block.attn.in_proj_bias).split(c, dim=-1)
        x = x + F.linear(_attention(q, k, v, heads), block.attn.out_proj.weight, block.attn.out_proj.bias)
        x = x + mlp(block, _layer_norm(x, block.ln_2))
    x_ori, x_new = x, x
    for block in blocks[len(blocks) - n_deep :]:
        heads = block.attn.num_heads
        y = _layer_norm(x_ori, block.ln_1)
        q, k, v = F.linear(y, block.attn.in_proj_weight, block.attn.in_proj_bias).split(c, dim=-1)
        o_ori = F.linear(_attention(q, k, v, heads), block.attn.out_proj.weight, block.attn.out_proj.bias)
        o_vv = F.linear(_attention(v, v, v, heads), block.attn.out_proj.weight, block.attn.out_proj.bias)
        x_ori = x_ori + o_ori
        x_ori = x_ori + mlp(block, _layer_norm(x_ori, block.ln_2))
        x_new = x_new + o_vv
    return torch.cat([x_ori[:, :1], x_new[:, 1:]], dim=1)


@pytest.mark.parametrize("size", [(224, 224), (448, 448), (448, 320)])
def test_surgery_matches_plain_reference(tiny_clip, size):
    torch.manual_seed(1)
    image = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours = surgery_tokens(tiny_clip.visual, image, depth=6)
        ref = _reference_tokens(tiny_clip.visual, image, n_deep=6)
    assert ours.shape == (2, 1 + (size[0] // 16) * (size[1] // 16), 64)
    assert (ours - ref).abs().max().item() <= 1e-5


def test_surgery_matches_reference_on_vit_b16_at_448():
    torch.manual_seed(2)
    model = randomize_affine_(load_clip("ViT-B-16-quickgelu"), seed=2)
    image = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        ours = surgery_tokens(model.visual, image, depth=6)
        ref = _reference_tokens(model.visual, image, n_deep=6)
    assert ours.shape == (1, 785, 768)
    assert (ours - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("size", [(224, 224), (448, 320)])
def test_patch_tokens_skip_the_cls_path_but_equal_the_full_encoder(tiny_clip, size):
    torch.manual_seed(3)
    image = torch.randn(2, 3, *size)
    with torch.no_grad():
        patches = surgery_patch_tokens(tiny_clip.visual, image, depth=6)
        ref = _reference_tokens(tiny_clip.visual, image, n_deep=6)
    assert patches.shape == (2, (size[0] // 16) * (size[1] // 16), 64)
    assert (patches - ref[:, 1:]).abs().max().item() <= 1e-5


def test_trunk_blocks_of_another_kind_run_through_their_own_forward(tiny_clip):
    """A trunk block that is not open_clip's plain block (here: extra k/v biases) must not take the SDPA shortcut."""
    torch.manual_seed(4)
    model = copy.deepcopy(tiny_clip)
    block = model.visual.transformer.resblocks[0]
    width = block.attn.embed_dim
    attn = torch.nn.MultiheadAttention(width, block.attn.num_heads, add_bias_kv=True, batch_first=True)
    biases = {"bias_k": torch.randn(1, 1, width), "bias_v": torch.randn(1, 1, width)}
    attn.load_state_dict({**block.attn.state_dict(), **biases})
    block.attn = attn.eval()
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = surgery_tokens(model.visual, image, depth=6)
        plain = model.visual.transformer(model.visual._embeds(image))
        unmodified = surgery_tokens(tiny_clip.visual, image, depth=6)
    assert torch.allclose(tokens[:, 0], plain[:, 0], atol=1e-5)
    assert not torch.allclose(tokens[:, 0], unmodified[:, 0], atol=1e-3)  # the extra biases do matter


def test_surgery_differs_from_plain_clip_only_in_patch_tokens(tiny_clip):
    """Depth 0 surgery would be plain CLIP; the CLS token must equal CLIP's final CLS (before ln_post)."""
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = surgery_tokens(tiny_clip.visual, image, depth=6)
        plain = tiny_clip.visual.transformer(tiny_clip.visual._embeds(image))
    assert torch.allclose(tokens[:, 0], plain[:, 0], atol=1e-5)
    assert not torch.allclose(tokens[:, 1:], plain[:, 1:], atol=1e-3)


def test_clip_model_is_not_modified(tiny_clip):
    before = {k: v.clone() for k, v in tiny_clip.state_dict().items()}
    pos_before = tiny_clip.visual.positional_embedding.shape
    with torch.no_grad():
        surgery_tokens(tiny_clip.visual, torch.randn(1, 3, 448, 320), depth=6)
    assert tiny_clip.visual.positional_embedding.shape == pos_before
    after = tiny_clip.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(type(b.attn).__name__ == "MultiheadAttention" for b in tiny_clip.visual.transformer.resblocks)


@pytest.mark.parametrize("name,patch,width", [("ViT-B-32-quickgelu", 32, 768), ("ViT-L-14", 14, 1024)])
def test_surgery_runs_on_other_vit_configs(name, patch, width):
    model = load_clip(name)
    image = torch.randn(1, 3, 224, 160)
    with torch.no_grad():
        tokens = surgery_tokens(model.visual, image, depth=6)
    assert tokens.shape == (1, 1 + (224 // patch) * (160 // patch), width)
    assert torch.isfinite(tokens).all()


def test_invalid_depth_is_rejected(tiny_clip):
    from tagalign.models import TagAlign

    with pytest.raises(ValueError, match="surgery depth must be in 1..8"):
        TagAlign(tiny_clip, surgery_layers=9)


def test_bilinear_positional_resize_is_an_option(tiny_clip):
    """CLIP Surgery's own code resizes the positional table bilinearly (spec §7.18); TagAlign's is bicubic."""
    torch.manual_seed(8)
    image = torch.randn(1, 3, 320, 288)
    with torch.no_grad():
        bilinear = surgery_tokens(tiny_clip.visual, image, depth=6, pos_mode="bilinear")
        ref = _reference_tokens(tiny_clip.visual, image, n_deep=6, pos_mode="bilinear")
        bicubic = surgery_tokens(tiny_clip.visual, image, depth=6)
    assert (bilinear - ref).abs().max().item() <= 1e-5
    assert (bilinear - bicubic).abs().max().item() > 1e-3
