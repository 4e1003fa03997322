"""ResCLIP (training-free spec-2 §2) against its steps written out here with loops, on the tiny CLIP (random biases
and LayerNorms, 8 blocks: RCS over blocks 3..5, the authors' 5..8 of 12 scaled), on a non-square 7x10 grid."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from test_dense import _layer_norm
from test_encoders import _block_inputs, _merge, _mlp, _omega, _out_proj, _qkv, _softmax

from tagalign.models import dense_features
from tagalign.models.pamr import pamr

RCS_BLOCKS = (3, 4, 5)


def _head(visual, tokens):
    return _layer_norm(tokens, visual.ln_post) @ visual.proj


def _path_ok(labels, a, b, s_max, full=False):
    """The authors' path test: positions round(a + (b - a)·k/S_max) for k <= Chebyshev(a, b), all on a's label."""
    steps = max(abs(a[0] - b[0]), abs(a[1] - b[1]))
    for k in range(s_max + 1 if full else steps + 1):
        t = torch.tensor(k / s_max if s_max else 0.0, dtype=torch.float32)
        r = int(torch.round(a[0] * (1 - t) + b[0] * t))
        c = int(torch.round(a[1] * (1 - t) + b[1] * t))
        if labels[r][c] != labels[a[0]][a[1]]:
            return False
    return True


def _sfr(labels, sigma=5.0):
    """A_sfr over the patches: same label (damped by exp(-s/S_max) off-path), 1-D Gaussian per row, ReLU, rows to 1."""
    h, w = len(labels), len(labels[0])
    n, s_max = h * w, max(h, w) - 1
    cells = [(i // w, i % w) for i in range(n)]
    a = torch.zeros(n, n)
    for i, p in enumerate(cells):
        for j, q in enumerate(cells):
            if labels[p[0]][p[1]] == labels[q[0]][q[1]]:
                steps = max(abs(p[0] - q[0]), abs(p[1] - q[1]))
                a[i, j] = 1.0 if _path_ok(labels, p, q, s_max) else math.exp(-steps / s_max)
    size = min(n, int(6 * sigma + 1))
    size = size if size % 2 else size + 1
    kernel = [math.exp(-((x - size // 2) ** 2) / (2 * sigma**2)) for x in range(size)]
    kernel = [v / sum(kernel) for v in kernel]
    out = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            out[i, j] = sum(kernel[m] * a[i, j + m - size // 2] for m in range(size) if 0 <= j + m - size // 2 < n)
    out = out.clamp(min=0)
    return out / (out.sum(1, keepdim=True) + 1e-8)


def _labels(probs, threshold, patch=16):
    """Pixel argmax (0 below threshold), then each 16x16 block's most frequent label, the smallest on ties."""
    best, label = probs.max(0)
    label[best < threshold] = 0
    h, w = probs.shape[1] // patch, probs.shape[2] // patch
    out = []
    for r in range(h):
        row = []
        for c in range(w):
            counts = Counter(label[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch].flatten().tolist())
            top = max(counts.values())
            row.append(min(v for v, n in counts.items() if n == top))
        out.append(row)
    return out


def _statement(visual, image, text, base="naclip", tau_rcs=2.0, lam_rcs=0.3, tau_sfr=1.8, lam_sfr=0.7,
               temp_thd=0.25, scale=40.0, sfr=True, refine=None):
    inputs, (h, w) = _block_inputs(visual, image)
    blocks = list(visual.transformer.resblocks)
    rcs = sum(_softmax(*_qkv(blocks[i], inputs[i])[:2]) for i in RCS_BLOCKS) / len(RCS_BLOCKS)
    x, last = inputs[-1], blocks[-1]
    q, k, v = _qkv(last, x)
    s = 1 / math.sqrt(q.shape[-1])

    def attend(sfr_map):
        def mix(raw):
            return raw if sfr_map is None else tau_sfr * ((1 - lam_sfr) * raw + lam_sfr * sfr_map)

        if base == "naclip":
            a = torch.softmax(mix(k @ k.transpose(-1, -2) * s) + _omega(h, w, 5.0), -1)
        elif base == "sclip":
            a = (torch.softmax(mix(q @ q.transpose(-1, -2) * s), -1)
                 + torch.softmax(mix(k @ k.transpose(-1, -2) * s), -1))
        elif base == "clearclip":
            a = torch.softmax(mix(q @ q.transpose(-1, -2) * s), -1)
        else:
            a = torch.softmax(mix(q @ k.transpose(-1, -2) * s), -1)
        a = tau_rcs * ((1 - lam_rcs) * a + lam_rcs * rcs)
        out = _out_proj(last, _merge(a @ v))
        if base in ("sclip", "vanilla"):
            out = x + out
            out = out + _mlp(last, _layer_norm(out, last.ln_2))
        return out[:, 1:]

    first = _head(visual, attend(None))
    if not sfr:
        return first.transpose(1, 2).reshape(image.shape[0], -1, h, w)
    cos = F.normalize(first, dim=-1) @ F.normalize(text, dim=-1).t()
    cos = F.interpolate(cos.transpose(1, 2).reshape(image.shape[0], -1, h, w), size=image.shape[-2:],
                        mode="bilinear", align_corners=False)
    if refine is not None:
        cos = refine(image, cos)
    probs = torch.softmax(scale * cos, dim=1)
    maps = torch.zeros(image.shape[0], 1, 1 + h * w, 1 + h * w)
    for b in range(image.shape[0]):
        maps[b, 0, 1:, 1:] = _sfr(_labels(probs[b], temp_thd))
        maps[b] /= maps[b].max()
    head = _head(visual, attend(maps))
    return head.transpose(1, 2).reshape(image.shape[0], -1, h, w)


@pytest.fixture(scope="module")
def scene(tiny_clip):
    """A 7x10-patch image and four queries taken from its own first-pass features (so patches disagree)."""
    torch.manual_seed(5)
    image = torch.randn(2, 3, 112, 160)
    with torch.no_grad():
        first = dense_features(tiny_clip, image, "resclip", sfr=False)
    text = torch.stack([first[0, :, 1, 1], first[0, :, 5, 8], first[1, :, 3, 2], first[1, :, 6, 6]])
    return image, text + 0.05 * torch.randn_like(text)


@pytest.mark.parametrize("base", ["naclip", "sclip", "clearclip", "vanilla"])
def test_resclip_equals_its_steps(tiny_clip, scene, base):
    image, text = scene
    options = dict(temp_thd=0.5, sfr_pamr=False)
    with torch.no_grad():
        ours = dense_features(tiny_clip, image, "resclip", text_emb=text, base=base, **options)
        expected = _statement(tiny_clip.visual, image, text, base, temp_thd=0.5)
    assert ours.shape == (2, 64, 7, 10)
    assert (ours - expected).abs().max() < 1e-4
    without_sfr = dense_features(tiny_clip, image, "resclip", text_emb=text, base=base, sfr=False)
    assert not torch.allclose(ours, without_sfr, atol=1e-3)  # SFR changes the result


def test_resclip_options_and_the_inner_pamr(tiny_clip, scene):
    image, text = scene
    options = dict(tau_rcs=1.5, lambda_rcs=0.6, tau_sfr=2.2, lambda_sfr=0.4, temp_thd=0.3, logit_scale=20.0)
    with torch.no_grad():
        ours = dense_features(tiny_clip, image, "resclip", text_emb=text, **options)
        expected = _statement(tiny_clip.visual, image, text, tau_rcs=1.5, lam_rcs=0.6, tau_sfr=2.2, lam_sfr=0.4,
                              temp_thd=0.3, scale=20.0, refine=lambda im, cos: pamr(im, cos, 10, (8, 16)))
        plain = dense_features(tiny_clip, image, "resclip", text_emb=text, **options, sfr_pamr=False)
    assert (ours - expected).abs().max() < 1e-4
    assert not torch.allclose(ours, plain, atol=1e-4)


def test_path_check_tests_a_prefix_as_the_authors_code_does():
    """8x8 grid (S_max 7); from (0,0) to (0,3) the authors sample t = k/7 for k <= 3: columns 0, 0, 1, 1. A
    different label at (0,2) is missed there and caught by the whole-segment test."""
    from tagalign.models.encoders.resclip import check_path, sfr_attention

    labels = torch.ones(8, 8, dtype=torch.long)
    labels[0, 2] = 0
    prefix, full = check_path(labels), check_path(labels, full=True)
    assert prefix[0, 3] and not full[0, 3]
    assert not prefix[0, 7] and not full[0, 7]  # (0,0)->(0,7) samples every column
    labels_list = labels.tolist()
    for i, j in [(0, 3), (0, 7), (9, 63), (63, 0), (17, 40)]:
        a, b = divmod(i, 8), divmod(j, 8)
        assert bool(prefix[i, j]) == _path_ok(labels_list, a, b, 7), (i, j)
    assert torch.allclose(sfr_attention(labels), _sfr(labels_list), atol=1e-6)


def test_sfr_needs_the_queries_and_rcs_needs_middle_blocks(tiny_clip):
    image = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="sfr=false"):
        dense_features(tiny_clip, image, "resclip")
    with pytest.raises(ValueError, match="must be one of naclip, clearclip, sclip, vanilla"):
        dense_features(tiny_clip, image, "resclip", sfr=False, base="maskclip")
    with pytest.raises(ValueError, match="RCS blocks 6..7 must lie within blocks 0..6"):
        dense_features(tiny_clip, image, "resclip", sfr=False, rcs_start=6, rcs_stop=8)
    no_rcs = dense_features(tiny_clip, image, "resclip", sfr=False, rcs=False)
    assert torch.allclose(no_rcs, dense_features(tiny_clip, image, "naclip"), atol=1e-5)  # RCS off: NACLIP


def test_sfr_on_a_vocabulary_larger_than_the_window(tiny_clip):
    """More queries than patches (12 vs a 2x3 grid): the first pass is refined through the window's basis maps,
    the same maps as refining each query's (PAMR and the resize are linear)."""
    torch.manual_seed(6)
    image, text = torch.randn(2, 3, 32, 48), torch.randn(12, 64)
    with torch.no_grad():
        ours = dense_features(tiny_clip, image, "resclip", text_emb=text, temp_thd=0.1)
        expected = _statement(tiny_clip.visual, image, text, temp_thd=0.1,
                              refine=lambda im, cos: pamr(im, cos, 10, (8, 16)))
    assert (ours - expected).abs().max() < 1e-4
    from tagalign.models.encoders.resclip import refined_cosines

    grid = torch.randn(2, 12, 2, 3)
    each = pamr(image, F.interpolate(grid, size=(32, 48), mode="bilinear", align_corners=False), 10, (8, 16))
    assert torch.allclose(refined_cosines(grid, image), each, atol=1e-5)


def test_the_projector_trains_on_resclip_without_sfr(tiny_clip):
    """Training has no segmentation queries: SFR must be switched off (RCS stays), and the error says so."""
    from open_clip import get_tokenizer

    from tagalign.models import TagAlign

    images = torch.randn(2, 3, 64, 64)
    tokens = get_tokenizer("ViT-B-16")(["a red square", "a blue circle"])
    tags = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1]]).float()
    with pytest.raises(ValueError, match="sfr=false"):
        TagAlign(tiny_clip, tag_embeddings=torch.randn(4, 64), encoder="resclip").loss(images, tokens, tags)
    model = TagAlign(tiny_clip, tag_embeddings=torch.randn(4, 64), encoder="resclip", encoder_options={"sfr": False})
    assert not model.reads_text
    losses = model.loss(images, tokens, tags)
    (losses["loss_itc"] + losses["loss_tag"]).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(n.startswith(("projector.", "itc_loss.", "tag_loss.")) for n in grads)
    expected = dense_features(tiny_clip, images, "resclip", sfr=False)
    assert torch.allclose(model.clip_dense_features(images), expected, atol=1e-5)
