"""LPOSS / LPOSS+ (training-free spec-2 §6) against dense statements written here: the graphs built entry by entry,
the systems solved exactly (torch.linalg.solve) and with a plain one-class-at-a-time conjugate gradient, Lab colours
against published values, and the wiring into the window pipeline with a tiny DINO (random biases and norms)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tagalign.segmentation.label_propagation import (
    LabelPropagation,
    LpossSettings,
    PixelGraph,
    conjugate_gradient,
    lposs_windows,
    patch_graph,
    rgb_to_lab,
)


def _cg_one(a, b, tol, maxiter):
    """cupy's cg for one right-hand side, as written in its source: x0 = 0, stop when ‖r‖ <= tol·‖b‖."""
    x, r = torch.zeros_like(b), b.clone()
    atol = tol * b.norm()
    p, rho = None, None
    for it in range(maxiter):
        rho_prev, rho = rho, r @ r
        p = r.clone() if it == 0 else r + (rho / rho_prev) * p
        q = a @ p
        alpha = rho / (p @ q)
        x, r = x + alpha * p, r - alpha * q
        if r.norm() <= atol:
            break
    return x


def _normalised(w):
    w = w.clone()
    w.fill_diagonal_(0)
    degree = w.sum(1)
    degree[degree == 0] = 1
    d = degree.rsqrt()
    return d[:, None] * w * d[None, :]


def _dense_patch_graph(features, positions, k, sigma, power, gamma):
    n = len(features)
    w = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        sims = [(float(features[i] @ features[j]), j) for j in range(n)]
        for s, j in sorted(sims, reverse=True)[:k]:
            d = math.dist(positions[i].tolist(), positions[j].tolist())
            w[i, j] += max(s, 0.0) ** gamma * math.exp(-sigma * d**power)
    return _normalised(w + w.t())


def test_conjugate_gradient_solves_each_column_as_cupy_does():
    torch.manual_seed(0)
    m = torch.randn(30, 30, dtype=torch.float64)
    a = m @ m.t() / 30 + torch.eye(30, dtype=torch.float64)
    b = torch.randn(4, 30, dtype=torch.float64)
    b[2] = 0  # a class scoring 0 everywhere stays 0 (cupy: 0/0)
    exact = torch.linalg.solve(a, b.t()).t()
    assert torch.allclose(conjugate_gradient(lambda z: z @ a, b, 1e-12, 200), exact, atol=1e-8)
    few = conjugate_gradient(lambda z: z @ a, b, 1e-6, 3)  # three steps: not converged, as cupy's three
    for c in range(4):
        assert torch.allclose(few[c], _cg_one(a, b[c], 1e-6, 3) if c != 2 else torch.zeros(30, dtype=a.dtype))
    assert (few - exact).abs().max() > 1e-4
    loose = conjugate_gradient(lambda z: z @ a, b, 1e-2, 50)  # each column stops at its own ‖r‖ <= 0.01·‖b‖
    for c in (0, 1, 3):
        assert torch.allclose(loose[c], _cg_one(a, b[c], 1e-2, 50))
    assert (loose - exact).abs().max() > 1e-6


def test_patch_graph_equals_its_entries():
    torch.manual_seed(1)
    features = F.normalize(torch.randn(40, 8, dtype=torch.float64), dim=-1)
    positions = torch.randint(0, 100, (40, 2)).double()
    settings = LpossSettings(k=7, sigma=0.02, power=1.0, gamma=3.0)
    ours = patch_graph(features, positions, settings, rows_per_chunk=16).to_dense()
    assert torch.allclose(ours, _dense_patch_graph(features, positions, 7, 0.02, 1.0, 3.0), atol=1e-10)
    # k 30 of 40 reaches negative similarities, which get no weight
    squared = patch_graph(features, positions, LpossSettings(k=30, sigma=0.001, power=2.0, gamma=1.0)).to_dense()
    assert torch.allclose(squared, _dense_patch_graph(features, positions, 30, 0.001, 2.0, 1.0), atol=1e-10)


def test_lposs_windows_solve_the_joint_system_over_all_windows():
    """Two overlapping 64x96 windows of a 64x160 image, second model patch 16 (4x6 grid), scores on an 8x12 grid
    (resized to 4x6): nodes at offset + 8 + 16·(row, col); the solution is (I − αWn)⁻¹y over both windows jointly."""
    torch.manual_seed(2)
    boxes = [(0, 64, 0, 96), (0, 64, 64, 160)]
    features = torch.randn(2, 16, 4, 6, dtype=torch.float64)
    scores = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    settings = LpossSettings(k=20, maxiter=500, tol=1e-14)
    ours = lposs_windows(scores, features, boxes, (16, 16), settings)
    nodes, positions, y = [], [], []
    small = F.interpolate(scores, size=(4, 6), mode="bilinear", align_corners=False)
    for w, (y1, _, x1, _) in enumerate(boxes):
        for r in range(4):
            for c in range(6):
                nodes.append(F.normalize(features[w, :, r, c], dim=0))
                positions.append([y1 + 8 + 16 * r, x1 + 8 + 16 * c])
                y.append(small[w, :, r, c])
    wn = _dense_patch_graph(torch.stack(nodes), torch.tensor(positions, dtype=torch.float64), 20, 0.01, 1.0, 3.0)
    exact = torch.linalg.solve(torch.eye(48, dtype=torch.float64) - 0.95 * wn, torch.stack(y))
    assert ours.shape == (2, 3, 4, 6)
    assert torch.allclose(ours.permute(0, 2, 3, 1).reshape(48, 3), exact.float(), atol=1e-4)
    # the windows share one graph: propagating them one at a time gives another answer
    alone = lposs_windows(scores[:1], features[:1], boxes[:1], (16, 16), settings)
    assert not torch.allclose(alone, ours[:1], atol=1e-3)


def test_lab_colours_are_the_published_ones():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5],
                        [0.0, 0.0, 0.0]]).t().reshape(1, 3, 1, 6)
    lab = rgb_to_lab(rgb)[0, :, 0].t()
    published = torch.tensor([[100.0, 0.0, 0.0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18],
                              [32.30, 79.19, -107.86], [53.39, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(lab, published, atol=0.03)


def test_pixel_graph_equals_its_entries():
    """A 6x7 image, radius 5 (each pixel linked to its 5x5 neighbourhood): the dense system solved exactly."""
    torch.manual_seed(3)
    rgb = torch.rand(1, 3, 6, 7, dtype=torch.float64)
    maps = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    settings = LpossSettings(tau=0.05, radius=5, maxiter=500, tol=1e-14)
    lab = rgb_to_lab(rgb)[0] / torch.tensor([100.0, 128.0, 128.0], dtype=torch.float64).view(3, 1, 1)
    n = 42
    w = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            (ri, ci), (rj, cj) = divmod(i, 7), divmod(j, 7)
            if i != j and abs(ri - rj) <= 2 and abs(ci - cj) <= 2:
                w[i, j] = math.exp(-float((lab[:, ri, ci] - lab[:, rj, cj]).norm()) / 0.05)
    exact = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - 0.95 * _normalised(w), maps[0].reshape(2, n).t())
    ours = PixelGraph(rgb, settings).propagate(maps)
    assert torch.allclose(ours[0].reshape(2, n).t(), exact.float(), atol=1e-4)


def test_second_model_values_are_the_last_blocks_attention_values():
    from tagalign.models.vfm import load_vfm

    dino = load_vfm("dino_vitb16", tiny=True)
    images = torch.randn(2, 3, 64, 80)
    model = dino.model
    # the input statistics (ImageNet's) are the model's own, so the windows reach it unchanged
    x = model.norm_pre(model._pos_embed(model.patch_embed(images)))
    for block in model.blocks[:-1]:
        x = block(x)
    last = model.blocks[-1]
    v = F.linear(last.norm1(x), last.attn.qkv.weight, last.attn.qkv.bias).chunk(3, dim=-1)[2]
    expected = v[:, 1:].transpose(1, 2).reshape(2, -1, 4, 5)
    assert torch.allclose(dino.values(images), expected, atol=1e-5)
    with pytest.raises(ValueError, match="no per-token attention values"):
        load_vfm("sam_vitb", tiny=True).values(images)


def test_window_scores_run_lposs_on_all_windows_and_lposs_plus_on_the_averaged_maps(tiny_clip):
    """The wiring: WindowScores with lposs replaces its window grids by lposs_windows of the plain grids and the
    second model's values of the same crops; with lposs_plus, average() is the pixel graph's propagation of the
    plain average (the colours un-normalised with the pipeline's statistics)."""
    from tagalign.models import TagAlign
    from tagalign.models.vfm import load_vfm
    from tagalign.segmentation.inference_config import InferenceConfig
    from tagalign.segmentation.windows import WindowScores

    torch.manual_seed(4)
    model = TagAlign(tiny_clip, encoder="naclip")
    image, text = torch.randn(1, 3, 96, 160), torch.randn(3, 64)
    statistics = ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    propagation = LabelPropagation(LpossSettings(k=30), load_vfm("dino_vitb16", tiny=True), statistics)
    base = dict(protocol="sclip", crop=64, stride=48, lposs_k=30)
    plain = WindowScores(model, image, text, InferenceConfig(**base))
    refined = WindowScores(model, image, text, InferenceConfig(**base, lposs=True, lposs_plus=True), propagation)
    crops = torch.cat([image[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in plain.boxes])
    expected = lposs_windows(plain.grids, propagation.vfm.values(crops), plain.boxes, (16, 16), LpossSettings(k=30))
    assert len(plain.boxes) == 6 and torch.allclose(refined.grids, expected, atol=1e-5)
    lposs_only = WindowScores(model, image, text, InferenceConfig(**base, lposs=True), propagation)
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in statistics)
    graph = PixelGraph((image * std + mean).clamp(0, 1))
    assert torch.allclose(refined.average(slice(1, 3)), graph.propagate(lposs_only.average(slice(1, 3))), atol=1e-5)
    assert not torch.allclose(lposs_only.average(), plain.average(), atol=1e-3)
    with pytest.raises(ValueError, match="pad_to=56 pads these 64-pixel windows"):
        WindowScores(model, image, text, InferenceConfig(**base, lposs=True, pad_to=56), propagation)
    with pytest.raises(ValueError, match="need a LabelPropagation"):
        WindowScores(model, image, text, InferenceConfig(**base, lposs_plus=True))
