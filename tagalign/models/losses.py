"""TagAlign's training losses (reference spec §4).

* :class:`TagClassificationLoss`: the image feature classified against all T tag embeddings.
  Modes: ``softmax`` (reference code, default), ``balanced`` (paper Eq. 4, a log-frequency prior added to the
  logits in training only), ``weighted`` (inverse-frequency weights), ``focal`` and ``asymmetric`` (paper Table 6).
* :class:`ImageTextContrastiveLoss`: symmetric InfoNCE over the global batch, gathered *with* gradient.

Each loss owns a learnable temperature initialised to 1/0.07 and clamped at 100.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TAG_LOSS_MODES",
    "ImageTextContrastiveLoss",
    "LearnableTemperature",
    "TagClassificationLoss",
    "gather_with_grad",
]

TAG_LOSS_MODES = ("softmax", "balanced", "weighted", "focal", "asymmetric")
_NORM_EPS = 1e-6


class LearnableTemperature(nn.Module):
    """``min(exp(logit_scale), max_scale)`` with ``logit_scale`` initialised to ``log(1/0.07)``."""

    def __init__(self, init_scale: float = 1 / 0.07, max_scale: float = 100.0):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.max_scale = max_scale

    def forward(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.max_scale)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice (works on gloo and NCCL)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch = tensor.shape[0]
        ctx.rank = dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def gather_with_grad(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``tensor`` from every rank (gradient flows back to its owner); return it and this rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    return _GatherWithGrad.apply(tensor), dist.get_rank()


class ImageTextContrastiveLoss(nn.Module):
    """Symmetric InfoNCE ``(CE(i2t) + CE(t2i)) / 2`` against the global batch, labels offset by ``rank * B``.

    Every rank must hold the same local batch size (use ``drop_last`` in the data loader).
    """

    def __init__(self, init_scale: float = 1 / 0.07, max_scale: float = 100.0):
        super().__init__()
        self.temperature = LearnableTemperature(init_scale, max_scale)

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        image_emb = F.normalize(image_emb, dim=-1, eps=_NORM_EPS)
        text_emb = F.normalize(text_emb, dim=-1, eps=_NORM_EPS)
        all_images, rank = gather_with_grad(image_emb)
        all_texts, _ = gather_with_grad(text_emb)
        scale = self.temperature()
        labels = torch.arange(image_emb.shape[0], device=image_emb.device) + rank * image_emb.shape[0]
        logits_i2t = scale * image_emb @ all_texts.t()
        logits_t2i = scale * text_emb @ all_images.t()
        return 0.5 * (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels))


class TagClassificationLoss(nn.Module):
    """Multi-tag classification of image features against frozen tag embeddings.

    Args:
        mode: one of :data:`TAG_LOSS_MODES`.
        tag_frequency: ``[T]`` fraction of training images carrying each tag (needed by ``balanced``/``weighted``).
        prob_clamp: the reference clamps the softmax probability at 1e-8 before the log (zero gradient below it);
            ``None`` uses an exact ``log_softmax``.
        focal_gamma: focusing exponent of ``focal``.
        asl_gamma_pos, asl_gamma_neg, asl_margin: asymmetric loss (Ridnik et al. 2021) on per-tag sigmoids.
        weight_power: ``weighted`` uses ``w_t ∝ f_t^-weight_power``, normalised so the mean weight of a positive
            (frequency-weighted) is 1.
    """

    def __init__(
        self,
        mode: str = "softmax",
        tag_frequency: torch.Tensor | None = None,
        prob_clamp: float | None = 1e-8,
        focal_gamma: float = 2.0,
        asl_gamma_pos: float = 0.0,
        asl_gamma_neg: float = 4.0,
        asl_margin: float = 0.05,
        weight_power: float = 1.0,
        prior_eps: float = 1e-12,
        init_scale: float = 1 / 0.07,
        max_scale: float = 100.0,
    ):
        super().__init__()
        if mode not in TAG_LOSS_MODES:
            raise ValueError(f"unknown tag loss mode '{mode}'; choose one of {TAG_LOSS_MODES}")
        if mode in ("balanced", "weighted") and tag_frequency is None:
            raise ValueError(f"tag loss mode '{mode}' needs tag_frequency (the per-tag image frequency prior)")
        self.mode = mode
        self.prob_clamp = prob_clamp
        self.focal_gamma = focal_gamma
        self.asl_gamma_pos = asl_gamma_pos
        self.asl_gamma_neg = asl_gamma_neg
        self.asl_margin = asl_margin
        self.temperature = LearnableTemperature(init_scale, max_scale)
        frequency = None if tag_frequency is None else torch.as_tensor(tag_frequency)
        if frequency is not None and not frequency.is_floating_point():
            frequency = frequency.float()
        self.register_buffer("tag_frequency", frequency, persistent=False)
        if frequency is not None:
            self.register_buffer("log_prior", frequency.clamp(min=prior_eps).log(), persistent=False)
            weights = frequency.clamp(min=prior_eps).pow(-weight_power)
            weights = weights * frequency.sum() / (frequency * weights).sum().clamp(min=prior_eps)
            self.register_buffer("tag_weights", weights, persistent=False)

    def logits(self, image_emb: torch.Tensor, tag_emb: torch.Tensor | None,
               cosines: torch.Tensor | None = None) -> torch.Tensor:
        """``s * cos(image, tag)``, ``[B, T]`` (or ``s * cosines`` when given, e.g. with re-weighted descriptions);
        the balanced prior is added only in training mode."""
        if cosines is None:
            image_emb = F.normalize(image_emb, dim=-1, eps=_NORM_EPS)
            tag_emb = F.normalize(tag_emb.to(image_emb.dtype), dim=-1, eps=_NORM_EPS)
            cosines = image_emb @ tag_emb.t()
        logits = self.temperature() * cosines
        if self.mode == "balanced" and self.training:
            logits = logits + self.log_prior.to(logits.dtype)
        return logits

    def _log_probs(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prob_clamp is None:
            log_p = F.log_softmax(logits, dim=-1)
            return log_p, log_p.exp()
        p = logits.softmax(dim=-1)
        return p.clamp(min=self.prob_clamp).log(), p

    def forward(self, image_emb: torch.Tensor, tag_emb: torch.Tensor | None, targets: torch.Tensor,
                cosines: torch.Tensor | None = None) -> torch.Tensor:
        """``targets``: multi-hot ``[B, T]``. Images without tags contribute 0 but count in the batch mean."""
        logits = self.logits(image_emb, tag_emb, cosines)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        targets = targets.to(logits.dtype)
        if self.mode == "asymmetric":
            return self._asymmetric(logits, targets)
        soft_targets = F.normalize(targets, p=1, dim=-1)
        log_p, p = self._log_probs(logits)
        per_tag = soft_targets * log_p
        if self.mode == "weighted":
            per_tag = per_tag * self.tag_weights
        elif self.mode == "focal":
            per_tag = per_tag * (1 - p).pow(self.focal_gamma)
        return -per_tag.sum(dim=-1).mean()

    def _asymmetric(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        eps = self.prob_clamp or 1e-8
        p = torch.sigmoid(logits)
        p_neg = (p - self.asl_margin).clamp(min=0) if self.asl_margin > 0 else p
        positive = targets * (1 - p).pow(self.asl_gamma_pos) * p.clamp(min=eps).log()
        negative = (1 - targets) * p_neg.pow(self.asl_gamma_neg) * (1 - p_neg).clamp(min=eps).log()
        return -(positive + negative).sum(dim=-1).mean()
