"""Each training-free dense encoder against a plain statement of its formula (training-free spec §1-§6), written
here with explicit softmax attention, on a tiny CLIP with random biases and LayerNorm affines."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_dense import _layer_norm, _quick_gelu, _reference_tokens

from tagalign.models import ENCODERS, dense_features
from tagalign.models.encoders import needs_vfm

#: the encoders stated in this file (VFM-guided ones: tests/test_vfm.py; SC-CLIP, ResCLIP: their own files)
CLIP_ONLY = [name for name in ENCODERS if not needs_vfm(name) and name not in ("sc_clip", "resclip")]


def _split(t, heads):
    b, n, c = t.shape
    return t.reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)


def _merge(t):
    b, heads, n, d = t.shape
    return t.permute(0, 2, 1, 3).reshape(b, n, heads * d)


def _mlp(block, y):
    return F.linear(_quick_gelu(F.linear(y, block.mlp.c_fc.weight, block.mlp.c_fc.bias)), block.mlp.c_proj.weight,
                    block.mlp.c_proj.bias)


def _qkv(block, x):
    y = _layer_norm(x, block.ln_1)
    q, k, v = F.linear(y, block.attn.in_proj_weight, block.attn.in_proj_bias).split(x.shape[-1], dim=-1)
    heads = block.attn.num_heads
    return _split(q, heads), _split(k, heads), _split(v, heads)


def _out_proj(block, t):
    return F.linear(t, block.attn.out_proj.weight, block.attn.out_proj.bias)


def _softmax(a, b):
    return torch.softmax(a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1]), dim=-1)


def _standard(block, x):
    q, k, v = _qkv(block, x)
    x = x + _out_proj(block, _merge(_softmax(q, k) @ v))
    return x + _mlp(block, _layer_norm(x, block.ln_2))


def _before_last(visual, image):
    """Spec §0: ln_pre(patch embedding + CLS + positions), then every block but the last, unmodified."""
    inputs, grid = _block_inputs(visual, image)
    return inputs[-1], visual.transformer.resblocks[-1], grid


def _block_inputs(visual, image):
    """``[x_0, ..., x_(L-1)]``, the input of every block (x_(L-1) enters the last), and the grid."""
    b, p = image.shape[0], visual.conv1.weight.shape[-1]
    h, w = image.shape[2] // p, image.shape[3] // p
    x = (visual.conv1.weight.reshape(visual.conv1.weight.shape[0], -1) @ F.unfold(image, p, stride=p)).transpose(1, 2)
    c = x.shape[-1]
    x = torch.cat([visual.class_embedding.reshape(1, 1, c).expand(b, 1, c), x], dim=1)
    pos = visual.positional_embedding
    g = int(round(math.sqrt(pos.shape[0] - 1)))
    if (h, w) != (g, g):
        grid = F.interpolate(pos[1:].reshape(g, g, c).permute(2, 0, 1)[None], size=(h, w), mode="bicubic",
                             align_corners=False)[0]
        pos = torch.cat([pos[:1], grid.permute(1, 2, 0).reshape(h * w, c)], dim=0)
    inputs = [_layer_norm(x + pos, visual.ln_pre)]
    for block in list(visual.transformer.resblocks)[:-1]:
        inputs.append(_standard(block, inputs[-1]))
    return inputs, (h, w)


def _omega(h, w, sigma):
    omega = torch.zeros(1 + h * w, 1 + h * w)
    for a in range(h * w):
        for b in range(h * w):
            (i, j), (k, m) = divmod(a, w), divmod(b, w)
            omega[1 + a, 1 + b] = math.exp(-((i - k) ** 2 + (j - m) ** 2) / (2 * sigma**2))
    return omega


def _plain_statement(visual, image, encoder):
    if encoder in ("surgery", "clip_surgery"):
        mode = "bilinear" if encoder == "clip_surgery" else "bicubic"
        tokens = _reference_tokens(visual, image, n_deep=6, pos_mode=mode)
        p = visual.conv1.weight.shape[-1]
        grid = (image.shape[2] // p, image.shape[3] // p)
    else:
        x, block, grid = _before_last(visual, image)
        q, k, v = _qkv(block, x)
        if encoder == "vanilla":
            tokens = _standard(block, x)
        elif encoder == "maskclip":  # identity attention; residual and FFN kept
            o = _out_proj(block, _merge(v))
            tokens = x + o + _mlp(block, _layer_norm(x + o, block.ln_2))
        elif encoder == "sclip":  # rows sum to 2; residual and FFN kept
            o = _out_proj(block, _merge((_softmax(q, q) + _softmax(k, k)) @ v))
            tokens = x + o + _mlp(block, _layer_norm(x + o, block.ln_2))
        elif encoder == "clearclip":  # q-q attention, no residual, no FFN
            tokens = _out_proj(block, _merge(_softmax(q, q) @ v))
        else:  # naclip: k-k attention + Gaussian neighbourhood (sigma 5, not scaled), no residual, no FFN
            logits = k @ k.transpose(-1, -2) / math.sqrt(k.shape[-1]) + _omega(*grid, 5.0)
            tokens = _out_proj(block, _merge(torch.softmax(logits, dim=-1) @ v))
    head = _layer_norm(tokens[:, 1:], visual.ln_post) @ visual.proj
    return head.transpose(1, 2).reshape(image.shape[0], -1, *grid)


@pytest.mark.parametrize("size", [(224, 224), (160, 208)])
@pytest.mark.parametrize("encoder", sorted(CLIP_ONLY))
def test_encoder_equals_its_formula(tiny_clip, encoder, size):
    torch.manual_seed(3)
    image = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours = dense_features(tiny_clip, image, encoder)
        expected = _plain_statement(tiny_clip.visual, image, encoder)
    assert ours.shape == (2, 64, size[0] // 16, size[1] // 16)
    assert (ours - expected).abs().max().item() <= 1e-5


def test_encoders_differ_and_options_change_them(tiny_clip):
    image = torch.randn(1, 3, 288, 256)  # not 224: clip_surgery's bilinear positional resize then differs
    outputs = {name: dense_features(tiny_clip, image, name) for name in CLIP_ONLY}
    names = sorted(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(outputs[a], outputs[b], atol=1e-4), (a, b)
    assert not torch.allclose(dense_features(tiny_clip, image, "maskclip", residual=False), outputs["maskclip"])
    assert not torch.allclose(dense_features(tiny_clip, image, "naclip", sigma=1.0), outputs["naclip"])
    with pytest.raises(ValueError, match="unknown encoder 'segclip'"):
        dense_features(tiny_clip, image, "segclip")


def test_a_new_encoder_is_one_module_and_one_registry_entry(tiny_clip, monkeypatch, capsys):
    """tests/toy_encoder.py plus one registry entry: dense_features, TagAlign and tools/test.py's --encoder see it."""
    import runpy
    import sys
    from pathlib import Path

    from toy_encoder import embedding_only

    from tagalign.models import TagAlign

    monkeypatch.setitem(ENCODERS, "embedding_only", embedding_only)
    visual = tiny_clip.visual
    images = torch.randn(2, 3, 32, 48)
    features = dense_features(tiny_clip, images, encoder="embedding_only")
    # independent statement: conv patches + positional rows (same grid, no resize) -> ln_pre -> ln_post -> proj
    patches = F.conv2d(images, visual.conv1.weight, stride=visual.conv1.stride).flatten(2).transpose(1, 2)
    h, w = 2, 3
    source = visual.grid_size
    pos = visual.positional_embedding[1:].reshape(1, *source, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(h * w, -1)
    tokens = _layer_norm(patches + pos, visual.ln_pre)
    expected = _layer_norm(tokens, visual.ln_post) @ visual.proj
    assert torch.allclose(features, expected.transpose(1, 2).reshape(2, -1, h, w), atol=1e-5)
    assert TagAlign(tiny_clip, encoder="embedding_only").encode_patches(images).shape == (2, visual.conv1.out_channels,
                                                                                          h, w)

    monkeypatch.setattr(sys, "argv", ["test.py", "--help"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(Path(__file__).resolve().parents[1] / "tools" / "test.py"), run_name="__main__")
    assert "embedding_only" in capsys.readouterr().out


def test_the_docs_list_each_encoders_declared_options():
    from pathlib import Path

    from tagalign.models.encoders import options_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "encoders.md").read_text()
    start = docs.index("<!-- options table: from tagalign.models.encoders.options_table() -->\n")
    block = docs[start:docs.index("\n<!-- end of options table -->")].split("\n", 1)[1]
    assert block == options_table()
    assert "sigma (float, default 5.0)" in block and block.count("depth (int, default 6)") == 2
