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


# ------------------------------------------------------------------ the object-level text adjustment (scoring)
def _adjusted_scores(features, texts, clusters, global_similarity, alpha, weight):
    """Per window and cluster: the query the global CLS likes best, moved toward the mean of its two closest
    patches; scores (1 − g_w)·cos(f, t̃) + g_w·(g·t)."""
    out = []
    for b in range(features.shape[0]):
        f = F.normalize(features[b].flatten(1), dim=0)  # [D, n]
        g = global_similarity[b if global_similarity.shape[0] > 1 else 0]
        adjusted = texts.clone()
        for cluster in sorted(set(clusters)):
            members = [q for q in range(len(texts)) if clusters[q] == cluster]
            best = max(members, key=lambda q: float(g[q]))
            sims = [(float(texts[best] @ f[:, i]), i) for i in range(f.shape[1])]
            top = [i for _, i in sorted(sims, reverse=True)[:2]]
            mean = F.normalize((f[:, top[0]] + f[:, top[1]]) / 2, dim=0)
            adjusted[best] = F.normalize((1 - alpha) * texts[best] + alpha * mean, dim=0)
        cos = adjusted @ f
        out.append(((1 - weight) * cos + weight * g[:, None]).reshape(len(texts), *features.shape[-2:]))
    return torch.stack(out)


def test_query_clusters_cut_the_ward_tree_at_the_threshold():
    from tagalign.segmentation.text_adjustment import query_clusters

    torch.manual_seed(9)
    centres = F.normalize(torch.randn(3, 32), dim=-1)
    texts = torch.cat([centres[i] + 0.01 * torch.randn(4, 32) for i in (0, 1, 2)])  # three tight groups of four
    clusters = query_clusters(texts, 0.1)
    groups = [set(clusters[4 * i: 4 * i + 4].tolist()) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3
    assert len(set(query_clusters(texts, 100.0).tolist())) == 1
    assert len(set(query_clusters(texts, 0.0).tolist())) == 12
    # three queries at angles 0, 0.3, 1.2: Ward merges a, b at their cosine distance, then c at the Lance-Williams
    # height sqrt((2 d_ac² + 2 d_bc² − d_ab²) / 3)
    a, b, c = (torch.tensor([math.cos(t), math.sin(t)]) for t in (0.0, 0.3, 1.2))
    d_ab, d_ac, d_bc = 1 - math.cos(0.3), 1 - math.cos(1.2), 1 - math.cos(0.9)
    top = math.sqrt((2 * d_ac**2 + 2 * d_bc**2 - d_ab**2) / 3)
    three = torch.stack([a, b, c])
    for threshold, count in ((d_ab - 1e-4, 3), (d_ab + 1e-4, 2), (top - 1e-4, 2), (top + 1e-4, 1)):
        assert len(set(query_clusters(three, threshold).tolist())) == count, threshold


def test_object_text_adjustment_equals_its_steps():
    from tagalign.segmentation.text_adjustment import ObjectTextAdjustment

    torch.manual_seed(10)
    features, texts = torch.randn(2, 16, 3, 4), F.normalize(torch.randn(6, 16), dim=-1)
    clusters = [0, 0, 1, 2, 1, 2]
    global_similarity = torch.randn(2, 6)
    ours = ObjectTextAdjustment(global_similarity, torch.tensor(clusters), 0.3, 0.25).cosines(features, texts)
    expected = _adjusted_scores(features, texts, clusters, global_similarity, 0.3, 0.25)
    assert torch.allclose(ours, expected, atol=1e-6)
    plain = torch.einsum("bdhw,qd->bqhw", F.normalize(features, dim=1), texts)
    assert torch.allclose(ObjectTextAdjustment(global_similarity, torch.tensor(clusters), 0.0, 0.0).cosines(
        features, texts), plain, atol=1e-6)  # α = g_w = 0: the plain cosines


@pytest.mark.parametrize("crop_cls", [False, True])
def test_window_scores_adjust_each_window_with_the_whole_images_cls(tiny_clip, dino, crop_cls):
    """A 224x224 image in four 112 windows under the sclip protocol: each window's scores are its adjusted cosines
    with g the CLIP embedding of the whole image (open_clip's own encode_image at its native size), or of the window
    (crop_cls)."""
    from tagalign.models import TagAlign
    from tagalign.segmentation.inference_config import InferenceConfig
    from tagalign.segmentation.text_adjustment import query_clusters
    from tagalign.segmentation.windows import WindowScores

    torch.manual_seed(11)
    model = TagAlign(tiny_clip, encoder="cass", vfm=dino)
    image, text = torch.randn(1, 3, 224, 224), torch.randn(5, 64)
    config = InferenceConfig(protocol="sclip", crop=112, stride=112, cass_adjust=True, cass_alpha=0.2,
                             cass_global_weight=0.3, cass_cluster_threshold=0.5, cass_crop_cls=crop_cls)
    scores = WindowScores(model, image, text, config)
    texts = F.normalize(text, dim=-1)
    clusters = query_clusters(text, 0.5).tolist()
    assert len(set(clusters)) > 1
    for index, (y1, y2, x1, x2) in enumerate(scores.boxes):
        crop = image[:, :, y1:y2, x1:x2]
        with torch.no_grad():
            features = dense_features(tiny_clip, crop, "cass", vfm=dino)
            g_image = model.tower.encode(crop) if crop_cls else tiny_clip.encode_image(image)
        g = F.normalize(g_image, dim=-1) @ texts.t()
        expected = _adjusted_scores(features, texts, clusters, g, 0.2, 0.3)
        assert torch.allclose(scores.grids[index], expected[0], atol=1e-4), index


def test_the_projector_trains_on_cass(tiny_clip, dino):
    from open_clip import get_tokenizer

    from tagalign.models import TagAlign

    model = TagAlign(tiny_clip, tag_embeddings=torch.randn(4, 64), encoder="cass", vfm=dino)
    images = torch.randn(2, 3, 64, 64)
    losses = model.loss(images, get_tokenizer("ViT-B-16")(["a red square", "a blue circle"]),
                        torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1]]).float())
    (losses["loss_itc"] + losses["loss_tag"]).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(n.startswith(("projector.", "itc_loss.", "tag_loss.")) for n in grads)
    assert torch.allclose(model.clip_dense_features(images), dense_features(tiny_clip, images, "cass", vfm=dino),
                          atol=1e-5)
