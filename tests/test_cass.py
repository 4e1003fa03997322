"""CASS (training-free spec-2 §4) against its steps written out here: DINO's keys read from timm's modules, the head
assignment by brute force over permutations, the blend per head; tiny CLIP and tiny DINO ViT-B/8 (random biases and
norms), a non-square 7x10 CLIP grid beside DINO's square 14x14 (patch 8 vs 16)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from test_dense import _layer_norm
from test_encoders import _block_inputs, _merge, _omega, _out_proj, _qkv

from tagalign.models import dense_features
from tagalign.models.vfm import load_vfm


def _brute_force_pairs(clip_scores, dino_scores, count=20):
    """The authors' pairing: spectra, L1-normalised sorted distances, the permutation of least total cost
    (rows DINO heads), then CLIP head idx with DINO head col[idx] and weight = the distance of (idx, col[idx])."""
    def spectra(scores):
        out = []
        for head in scores:
            values = sorted(torch.linalg.eigvalsh(head.double()).tolist(), reverse=True)[:count]
            norm = math.sqrt(sum(v * v for v in values))
            out.append([v / norm for v in values])
        return out

    dino, clip = spectra(dino_scores), spectra(clip_scores)

    def dist(a, b):
        a = sorted(x / sum(abs(y) for y in a) for x in a)
        b = sorted(x / sum(abs(y) for y in b) for x in b)
        return sum(abs(x - y) for x, y in zip(a, b, strict=True))

    heads = len(dino)
    # float32, as the authors' cost matrix is (torch.zeros), so near-ties resolve as theirs do
    cost = torch.tensor([[1 - dist(dino[d], clip[c]) for c in range(heads)] for d in range(heads)]).float().tolist()
    col = min(itertools.permutations(range(heads)), key=lambda perm: sum(cost[d][perm[d]] for d in range(heads)))
    return list(col), [1 - cost[idx][col[idx]] for idx in range(heads)]


def _low_rank(m, rank=10, stretch=True):
    u, s, vh = torch.linalg.svd(m.double())
    rank = min(rank, len(s))
    u, s, vh = u[:, :rank], s[:rank], vh[:rank]
    if stretch:
        lo, hi = s.min(), s.max()
        s = (s - lo) / (hi - lo) * (1.5 * hi - 0.5 * lo) + 0.5 * lo
    return (u @ torch.diag(s) @ vh).float()


def _fit(src, target):
    return (src - src.min()) / (src.max() - src.min()) * (target.max() - target.min()) + target.min()


def _dino_keys(dino, images):
    """The authors' DINO input (CLIP's normalised window, blue x 0.255/0.225, squashed square), last block's keys."""
    side = min(images.shape[-2:])
    x = images.clone()
    x[:, 2] *= 0.255 / 0.225
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    model = dino.model
    t = model.norm_pre(model._pos_embed(model.patch_embed(x)))
    for block in model.blocks[:-1]:
        t = block(t)
    last = model.blocks[-1]
    k = F.linear(last.norm1(t), last.attn.qkv.weight, last.attn.qkv.bias).chunk(3, dim=-1)[1][:, 1:]
    g = side // 8
    return k.transpose(1, 2).reshape(images.shape[0], -1, g, g)


def _statement(visual, dino, image, strategy="spectral", stretch=True, scale_factor=10.0):
    inputs, (h, w) = _block_inputs(visual, image)
    last = visual.transformer.resblocks[-1]
    _, k, v = (t[:, :, 1:] for t in _qkv(last, inputs[-1]))
    heads, hd = k.shape[1], k.shape[-1]
    keys = _dino_keys(dino, image)
    out = []
    for b in range(image.shape[0]):
        dk = F.interpolate(keys[b].reshape(heads, hd, *keys.shape[-2:]), size=(h, w), mode="bilinear",
                           align_corners=False).reshape(heads, hd, h * w).transpose(1, 2)
        dk = _fit(dk, k[b])
        lc = k[b] @ k[b].transpose(-1, -2) / math.sqrt(hd)
        ld = dk @ dk.transpose(-1, -2) / math.sqrt(hd)
        col, weights = (_brute_force_pairs(lc, ld) if strategy == "spectral" else (list(range(heads)), None))
        rows = []
        for i in range(heads):
            d = _low_rank(ld[col[i]], 10, stretch and strategy == "spectral")
            d.fill_diagonal_(0)
            d = _fit(d, lc[i])
            if weights is None:
                rows.append((d + lc[i]) / 2)
            else:
                rows.append((weights[i] * scale_factor * d + lc[i]) / (weights[i] * scale_factor + 1))
        a = torch.softmax(torch.stack(rows) + _omega(h, w, 5.0)[1:, 1:], dim=-1)
        out.append(_out_proj(last, _merge((a @ v[b])[None]))[0])
    head = _layer_norm(torch.stack(out), visual.ln_post) @ visual.proj
    return head.transpose(1, 2).reshape(image.shape[0], -1, h, w)


@pytest.fixture(scope="module")
def dino():
    return load_vfm("dino_vitb8", tiny=True)


@pytest.mark.parametrize("options", [{}, {"strategy": "sequential"}, {"stretch": False, "scale_factor": 4.0}])
def test_cass_equals_its_steps(tiny_clip, dino, options):
    torch.manual_seed(7)
    image = torch.randn(2, 3, 112, 160)  # CLIP 7x10; DINO sees a 112x112 square: 14x14
    with torch.no_grad():
        ours = dense_features(tiny_clip, image, "cass", vfm=dino, **options)
        expected = _statement(tiny_clip.visual, dino, image, options.get("strategy", "spectral"),
                              options.get("stretch", True), options.get("scale_factor", 10.0))
    assert ours.shape == (2, 64, 7, 10)
    assert (ours - expected).abs().max() < 1e-4


def test_heads_pair_by_the_transposed_assignment_of_least_cost():
    """Four heads (with two, an assignment is its own transpose): against a brute force over all 24 permutations."""
    from tagalign.models.encoders.cass import pair_heads

    torch.manual_seed(8)
    for _ in range(5):
        a, b = torch.randn(4, 30, 8), torch.randn(4, 30, 8) * torch.rand(4, 1, 1) * 3
        clip, dino = a @ a.transpose(-1, -2), b @ b.transpose(-1, -2)
        col, weights = pair_heads(clip, dino)
        expected_col, expected_weights = _brute_force_pairs(clip, dino)
        assert col == expected_col
        assert torch.allclose(weights, torch.tensor(expected_weights), atol=1e-6)


def test_cass_options_and_refusals(tiny_clip, dino):
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        authors = dense_features(tiny_clip, image, "cass", vfm=dino)
        exact_input = dense_features(tiny_clip, image, "cass", vfm=dino, dino_input="exact")
        torch.manual_seed(0)
        lowrank = dense_features(tiny_clip, image, "cass", vfm=dino, svd="lowrank", rank=3)
        exact = dense_features(tiny_clip, image, "cass", vfm=dino, rank=3)
    assert not torch.allclose(authors, exact_input, atol=1e-3)
    assert (lowrank - exact).abs().max() < 0.1  # the randomised factorisation approximates the exact one
    with pytest.raises(ValueError, match="reads a second vision model"):
        dense_features(tiny_clip, image, "cass")
