"""Slide inference: equals a direct per-window loop; batched windows == unbatched; background channel."""

from __future__ import annotations

import pytest
import torch

from tagalign.models import TagAlign
from tagalign.segmentation import InferenceConfig, predict_probabilities, window_grid


@pytest.fixture(scope="module")
def trained_like(tiny_clip):
    torch.manual_seed(4)
    model = TagAlign(tiny_clip)
    with torch.no_grad():
        for unit in model.projector.units:
            unit.gate.fill_(0.4)
    return model.eval()


def _mmseg_windows(h, w, crop, stride):
    """mmseg EncoderDecoder.slide_inference's loop, written out."""
    h_grids = max(h - crop + stride - 1, 0) // stride + 1
    w_grids = max(w - crop + stride - 1, 0) // stride + 1
    out = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * stride, w_idx * stride
            y2, x2 = min(y1 + crop, h), min(x1 + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            out.append((y1, y2, x1, x2))
    return out


@pytest.mark.parametrize("size", [(448, 448), (448, 700), (500, 448), (300, 400)])
def test_window_grid_matches_mmseg(size):
    assert window_grid(*size, 448, 224) == _mmseg_windows(*size, 448, 224)


def test_slide_equals_per_window_loop(trained_like):
    torch.manual_seed(0)
    image = torch.randn(1, 3, 448, 650)
    texts = torch.randn(4, 64)
    ours = predict_probabilities(trained_like, image, texts, with_background=True, config=InferenceConfig())
    total = torch.zeros(1, 4, 448, 650)
    count = torch.zeros(1, 1, 448, 650)
    for y1, y2, x1, x2 in _mmseg_windows(448, 650, 448, 224):
        total[:, :, y1:y2, x1:x2] += trained_like.masks(image[:, :, y1:y2, x1:x2], texts)
        count[:, :, y1:y2, x1:x2] += 1
    expected = torch.cat([torch.full((1, 1, 448, 650), 0.4), total / count], dim=1)
    assert ours.shape == (1, 5, 448, 650)
    assert (ours - expected).abs().max().item() <= 1e-5


def test_batched_windows_equal_unbatched(trained_like):
    torch.manual_seed(1)
    image = torch.randn(1, 3, 448, 1000)
    texts = torch.randn(3, 64)
    batched = predict_probabilities(trained_like, image, texts, False, InferenceConfig(crop_batch=16))
    single = predict_probabilities(trained_like, image, texts, False, InferenceConfig(crop_batch=1))
    assert torch.equal(batched.argmax(1), single.argmax(1))
    assert (batched - single).abs().max().item() <= 1e-5


def test_whole_mode_and_config_validation(trained_like):
    image = torch.randn(1, 3, 224, 320)
    texts = torch.randn(2, 64)
    whole = predict_probabilities(trained_like, image, texts, False, InferenceConfig(mode="whole"))
    assert torch.allclose(whole, trained_like.masks(image, texts))
    with pytest.raises(ValueError, match="slide' or 'whole"):
        InferenceConfig(mode="tiles")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_runs_under_autocast_on_cpu(trained_like, precision):
    """bf16/fp16 autocast reaches the encoder (results differ from fp32) and stays close, returning fp32 maps."""
    torch.manual_seed(2)
    image = torch.randn(1, 3, 448, 600)
    texts = torch.randn(3, 64)
    exact = predict_probabilities(trained_like, image, texts, True, InferenceConfig())
    reduced = predict_probabilities(trained_like, image, texts, True, InferenceConfig(precision=precision))
    assert reduced.dtype == torch.float32 and reduced.shape == exact.shape
    difference = (reduced - exact).abs().max().item()
    assert 1e-6 < difference < 0.05
