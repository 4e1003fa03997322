"""PAMR against a direct per-pixel implementation of its definition; and its effect on a colour-coherent mask."""

from __future__ import annotations

import torch

from tagalign.models import TagAlign
from tagalign.models.pamr import pamr
from tagalign.segmentation import InferenceConfig, predict_probabilities


def _reference_pamr(image, mask, num_iter, dilations):
    """Loop over pixels and neighbours: affinity softmax over all 8*len(dilations) clamped neighbours."""
    _, _, h, w = mask.shape
    img = image[0]  # already at mask size in this test
    offsets = [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    centred = [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)]

    def at(t, y, x):
        return t[:, min(max(y, 0), h - 1), min(max(x, 0), w - 1)]

    weights = torch.zeros(len(offsets), h, w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            local = torch.stack([at(img, y + oy, x + ox) for oy, ox in centred], dim=1)  # [3, P+D]
            std = local.std(dim=1)
            logits = torch.stack([(-(img[:, y, x] - at(img, y + oy, x + ox)).abs() / (1e-8 + 0.1 * std)).mean()
                                  for oy, ox in offsets])
            weights[:, y, x] = logits.softmax(0)
    m = mask[0].double()
    for _ in range(num_iter):
        new = torch.zeros_like(m)
        for y in range(h):
            for x in range(w):
                for k, (oy, ox) in enumerate(offsets):
                    new[:, y, x] += weights[k, y, x] * at(m, y + oy, x + ox)
        m = new
    return m[None]


def test_pamr_matches_definition():
    torch.manual_seed(0)
    image, mask = torch.rand(1, 3, 7, 9), torch.rand(1, 2, 7, 9)
    ours = pamr(image, mask, num_iter=2, dilations=(1, 2))
    ref = _reference_pamr(image.double(), mask, 2, (1, 2))
    assert torch.allclose(ours.double(), ref, atol=1e-5)


def test_pamr_denoises_within_colour_regions_without_crossing_edges():
    torch.manual_seed(1)
    image = torch.zeros(1, 3, 32, 32)
    image[:, :, :, 16:] = 1.0  # left black, right white
    image += 0.01 * torch.randn_like(image)
    truth = torch.zeros(1, 1, 32, 32)
    truth[..., 16:] = 1.0
    noisy = truth + 0.3 * torch.randn_like(truth)
    refined = pamr(image, noisy, num_iter=10, dilations=(1, 2, 4))
    assert (refined - truth).abs().mean() < 0.4 * (noisy - truth).abs().mean()
    columns = refined[0, 0].mean(dim=0)
    assert columns[:16].max() < 0.1 and columns[16:].min() > 0.9  # the edge is kept sharp


def test_pamr_option_in_slide_inference(tiny_clip):
    model = TagAlign(tiny_clip).eval()
    image, texts = torch.randn(1, 3, 448, 600), torch.randn(3, 64)
    plain = predict_probabilities(model, image, texts, True, InferenceConfig())
    refined = predict_probabilities(model, image, texts, True, InferenceConfig(pamr=True))
    assert refined.shape == plain.shape and torch.isfinite(refined).all()
    assert not torch.allclose(refined, plain)
    assert torch.equal(refined[:, 0], plain[:, 0])  # the constant background channel is untouched
