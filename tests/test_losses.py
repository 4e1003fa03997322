"""Each tag-loss mode against its formula, written out independently; temperatures; InfoNCE on one process."""

from __future__ import annotations

import math

import pytest
import torch

from tagalign.models.losses import ImageTextContrastiveLoss, TagClassificationLoss


def _cos_logits(v, e, scale):
    v = v / v.norm(dim=-1, keepdim=True)
    e = e / e.norm(dim=-1, keepdim=True)
    return scale * v @ e.t()


@pytest.fixture
def batch():
    torch.manual_seed(0)
    v = torch.randn(4, 8, dtype=torch.float64)
    e = torch.randn(6, 8, dtype=torch.float64)
    y = torch.tensor(
        [[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.float64
    )
    freq = torch.tensor([0.5, 0.25, 0.1, 0.0, 0.05, 0.3], dtype=torch.float64)
    return v, e, y, freq


def _per_sample(fn, y):
    """Mean over samples of fn(b) (the empty-tag sample contributes 0 and still counts)."""
    return float(sum(float(fn(b)) for b in range(y.shape[0])) / y.shape[0])


def test_softmax_mode(batch):
    v, e, y, _ = batch
    loss = TagClassificationLoss("softmax").double()
    z = _cos_logits(v, e, loss.temperature().item())
    p = torch.exp(z) / torch.exp(z).sum(-1, keepdim=True)

    def sample(b):
        n = y[b].sum()
        return 0.0 if n == 0 else -sum(y[b, t] / n * math.log(max(p[b, t].item(), 1e-8)) for t in range(6))

    assert loss(v, e, y).item() == pytest.approx(_per_sample(sample, y), rel=1e-9)


def test_balanced_mode_adds_log_prior_in_training_only(batch):
    v, e, y, freq = batch
    loss = TagClassificationLoss("balanced", tag_frequency=freq).double().train()
    z = _cos_logits(v, e, loss.temperature().item()) + torch.log(freq.clamp(min=1e-12))
    p = torch.exp(z) / torch.exp(z).sum(-1, keepdim=True)

    def sample(b):
        n = y[b].sum()
        return 0.0 if n == 0 else -sum(y[b, t] / n * math.log(max(p[b, t].item(), 1e-8)) for t in range(6))

    assert loss(v, e, y).item() == pytest.approx(_per_sample(sample, y), rel=1e-9)
    plain = TagClassificationLoss("softmax").double()
    assert loss.eval()(v, e, y).item() == pytest.approx(plain(v, e, y).item(), rel=1e-12)
    assert torch.allclose(loss.logits(v, e), plain.logits(v, e))


def test_weighted_mode(batch):
    v, e, y, freq = batch
    loss = TagClassificationLoss("weighted", tag_frequency=freq, weight_power=1.0).double()
    raw = [1 / max(f, 1e-12) for f in freq.tolist()]
    norm = freq.sum().item() / sum(f * w for f, w in zip(freq.tolist(), raw))
    w = [r * norm for r in raw]
    z = _cos_logits(v, e, loss.temperature().item())
    log_p = torch.log_softmax(z, -1)

    def sample(b):
        n = y[b].sum()
        return 0.0 if n == 0 else -sum(w[t] * y[b, t] / n * max(log_p[b, t].item(), math.log(1e-8)) for t in range(6))

    assert loss(v, e, y).item() == pytest.approx(_per_sample(sample, y), rel=1e-9)


def test_focal_mode(batch):
    v, e, y, _ = batch
    loss = TagClassificationLoss("focal", focal_gamma=2.0, prob_clamp=None).double()
    p = torch.softmax(_cos_logits(v, e, loss.temperature().item()), -1)

    def sample(b):
        n = y[b].sum()
        return 0.0 if n == 0 else -sum(
            y[b, t] / n * (1 - p[b, t].item()) ** 2 * math.log(p[b, t].item()) for t in range(6))

    assert loss(v, e, y).item() == pytest.approx(_per_sample(sample, y), rel=1e-9)


def test_asymmetric_mode(batch):
    v, e, y, _ = batch
    loss = TagClassificationLoss("asymmetric", asl_gamma_pos=1.0, asl_gamma_neg=4.0, asl_margin=0.05).double()
    p = torch.sigmoid(_cos_logits(v, e, loss.temperature().item()))

    def sample(b):
        total = 0.0
        for t in range(6):
            pt = p[b, t].item()
            pm = max(pt - 0.05, 0.0)
            if y[b, t]:
                total += (1 - pt) ** 1.0 * math.log(max(pt, 1e-8))
            else:
                total += pm ** 4.0 * math.log(max(1 - pm, 1e-8))
        return -total

    assert loss(v, e, y).item() == pytest.approx(_per_sample(sample, y), rel=1e-9)


def test_probability_clamp_matches_reference_and_can_be_disabled():
    v = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    e = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    clamped = TagClassificationLoss("softmax").double()
    with torch.no_grad():
        clamped.temperature.logit_scale.fill_(math.log(50.0))  # p(tag 1) = 1/(1+e^100) << 1e-8
    exact = TagClassificationLoss("softmax", prob_clamp=None).double()
    exact.load_state_dict(clamped.state_dict())
    assert clamped(v, e, y).item() == pytest.approx(-math.log(1e-8))
    assert exact(v, e, y).item() == pytest.approx(100.0, rel=1e-9)  # -log softmax = 2*50 (+ log(1+e^-100))


def test_temperature_is_clamped_at_100_with_zero_gradient():
    loss = ImageTextContrastiveLoss()
    assert loss.temperature().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        loss.temperature.logit_scale.fill_(math.log(200.0))
    assert loss.temperature().item() == 100.0
    loss(torch.randn(3, 4), torch.randn(3, 4)).backward()
    assert loss.temperature.logit_scale.grad.item() == 0.0


def test_infonce_single_process_formula():
    torch.manual_seed(0)
    v, t = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    loss = ImageTextContrastiveLoss().double()
    s = loss.temperature().item()
    vn, tn = v / v.norm(dim=1, keepdim=True), t / t.norm(dim=1, keepdim=True)
    sim = s * vn @ tn.t()
    i2t = -torch.diagonal(torch.log_softmax(sim, 1)).mean()
    t2i = -torch.diagonal(torch.log_softmax(sim.t(), 1)).mean()
    assert loss(v, t).item() == pytest.approx(0.5 * (i2t + t2i).item(), rel=1e-9)


def test_unknown_mode_and_missing_prior_are_errors():
    with pytest.raises(ValueError, match="unknown tag loss mode"):
        TagClassificationLoss("bce")
    with pytest.raises(ValueError, match="needs tag_frequency"):
        TagClassificationLoss("balanced")
