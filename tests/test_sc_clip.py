"""SC-CLIP (training-free spec-2 §1) against its steps written out here with loops, on the tiny CLIP (random biases
and LayerNorms), on a non-square grid of 70 tokens (so k = 30 nearest neighbours is a real choice)."""

from __future__ import annotations

import math

import pytest
import torch
from test_dense import _layer_norm
from test_encoders import _block_inputs, _merge, _out_proj, _qkv, _softmax

from tagalign.models import dense_features
from tagalign.models.encoders import UnsupportedTowerError

LAYERS = dict(pre_adjust=5, post_adjust=2, fusion_start=2, fusion_end=6)  # the tiny CLIP has 8 blocks


def _lof_outliers(tokens, k=30, contamination=0.05):
    """The authors' LOF: squared distances, k nearest without self, reach distance = the token's own k-distance."""
    n = len(tokens)
    k = min(k, n - 1)
    d = [[float(((tokens[i] - tokens[j]) ** 2).sum()) for j in range(n)] for i in range(n)]
    knn = [sorted((d[i][j], j) for j in range(n) if j != i)[:k] for i in range(n)]
    kd = [knn[i][-1][0] for i in range(n)]
    lof = torch.tensor([sum(kd[i] / kd[j] for _, j in knn[i]) / k for i in range(n)])
    return lof > torch.quantile(lof, 1 - contamination)


def _resolve(tokens, outliers, h, w):
    out = tokens.clone()
    for index in outliers.nonzero().flatten().tolist():
        r, c = divmod(index, w)
        neighbours = [tokens[(r + dr) * w + c + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                      if (dr or dc) and 0 <= r + dr < h and 0 <= c + dc < w and not outliers[(r + dr) * w + c + dc]]
        if neighbours:
            out[index] = torch.stack(neighbours).mean(0)
    return out


def _agg(x, s):
    return (s / (s.sum(-1, keepdim=True) + 1e-6)) @ x


def _cos(x):
    f = x / x.norm(dim=-1, keepdim=True)
    return f @ f.t()


def _statement(visual, image, pre, post, start, end, res_cls=0.3, thr=0.4):
    inputs, (h, w) = _block_inputs(visual, image)
    block = visual.transformer.resblocks[-1]
    out = []
    for b in range(image.shape[0]):
        cls, patches = inputs[-1][b, 0], inputs[-1][b, 1:]
        outliers = _lof_outliers(patches)
        patches = _resolve(patches, outliers, h, w)
        s9 = _cos(_resolve(inputs[pre + 1][b, 1:], outliers, h, w))
        x = _agg(patches, s9 * (s9 >= thr))
        m = 3 * (s9 - s9.mean())
        m[m < 0] = -math.inf
        proxy = torch.softmax(m, dim=-1)

        def attend(tokens, c, proxy=proxy):
            _, k, v = _qkv(block, tokens[None])
            return _out_proj(block, _merge(0.5 * (proxy + _softmax(k, k)) @ v))[0] + res_cls * c

        s4 = _cos(inputs[post + 1][b, 1:])
        s4 = s4 * (s4 >= thr)
        fused = sum(inputs[start + 1: end + 1])[b]
        out.append(_agg(attend(x, cls), s4) + _agg(attend(fused[1:], fused[0]), s4))
    head = _layer_norm(torch.stack(out), visual.ln_post) @ visual.proj
    return head.transpose(1, 2).reshape(image.shape[0], -1, h, w)


def test_sc_clip_equals_its_steps(tiny_clip):
    torch.manual_seed(11)
    image = torch.randn(2, 3, 112, 160)  # 7x10 grid
    with torch.no_grad():
        ours = dense_features(tiny_clip, image, "sc_clip", **LAYERS)
        expected = _statement(tiny_clip.visual, image, 5, 2, 2, 6)
        other = dense_features(tiny_clip, image, "sc_clip", **LAYERS, res_cls=0.1, threshold=0.2)
        expected_other = _statement(tiny_clip.visual, image, 5, 2, 2, 6, res_cls=0.1, thr=0.2)
    assert ours.shape == (2, 64, 7, 10)
    assert (ours - expected).abs().max() < 1e-4
    assert (other - expected_other).abs().max() < 1e-4 and not torch.allclose(other, ours, atol=1e-3)


def test_sc_clip_finds_and_resolves_planted_anomalies():
    from tagalign.models.encoders.sc_clip import lof_anomalies, resolve_anomalies

    torch.manual_seed(0)
    tokens = torch.randn(7 * 10, 16) * 0.1
    tokens[[3, 42, 57]] += 25.0  # three tokens far from the rest
    found = lof_anomalies(tokens)
    assert set(found.nonzero().flatten().tolist()) >= {3, 42, 57} and found.sum() <= 4
    assert torch.equal(found, _lof_outliers(tokens))
    resolved = resolve_anomalies(tokens.view(7, 10, 16), found.view(7, 10)).flatten(0, 1)
    assert torch.allclose(resolved, _resolve(tokens, found, 7, 10), atol=1e-6)


def test_sc_clip_defaults_and_towers_without_cls(tiny_clip):
    from test_towers import _tiny

    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # 8 blocks: the authors' 12-block layers scaled (pre 5, post 2, fusion 2..6)
        assert torch.allclose(dense_features(tiny_clip, image, "sc_clip"),
                              dense_features(tiny_clip, image, "sc_clip", **LAYERS), atol=1e-6)
    with pytest.raises(UnsupportedTowerError, match="sc_clip is not defined on the siglip tower family.*CLS"):
        dense_features(_tiny("tagalign-tiny-mapvit", 30), image, "sc_clip")
    with pytest.raises(ValueError, match="outputs of blocks 0..6"):
        dense_features(tiny_clip, image, "sc_clip", pre_adjust=7)
