"""ResCLIP (training-free spec-2 §2, ``yvhangyang/ResCLIP@0e085f7``): residual attention for a training-free encoder.

Two additions to the last block of a base encoder (``base``: NACLIP, the published method; SCLIP, ClearCLIP or
vanilla attention):

* **RCS** (residual cross-correlation self-attention): ``A_rcs`` = the mean of the ordinary attention maps (per
  head, every token) of blocks ``rcs_start..rcs_stop - 1`` (the authors' 5..8, for any depth), mixed into the last
  block's attention after its softmax: ``A ← τ_rcs·((1 − λ_rcs)·A + λ_rcs·A_rcs)``.
* **SFR** (semantic feedback refinement): a first pass of the last block (with RCS, without SFR) is scored against
  the text queries: dense head, cosines, bilinear to the window, PAMR (10 iterations, dilations 8 and 16) on the
  window, ``softmax_q(logit_scale·cos)``. Each pixel takes its best query (query 0 where the best probability is
  below ``temp_thd``); each patch the most frequent pixel label (ties: the smallest). ``A_sfr[i, j] = [label_i =
  label_j]``; with ``delete_same_entity`` a pair whose straight path leaves the label is damped by
  ``exp(−s_ij / S_max)`` (Chebyshev distance ``s``); each row is smoothed by a 1-D Gaussian along the flattened
  grid (σ = ``sigma``, zero padding), ReLU'd and normalised; prefix rows and columns are 0. The base's score maps
  ``L`` (KKᵀs, QQᵀs, QKᵀs) become ``τ_sfr·((1 − λ_sfr)·L + λ_sfr·A_sfr / max A_sfr)`` before their softmax.

NACLIP and ClearCLIP bases drop the last block's residual and FFN (the authors' ``wo_resi``), SCLIP and vanilla keep
them (``w_resi``). SFR reads the text queries of the segmentation (``text``): an encoder pass without them (e.g.
training the projector) needs ``sfr=false``.

Differences from the authors' code, named: their ``use_rcs``/``use_sfr`` flags are tuples and cannot be switched off
(here ``rcs``/``sfr`` can); their path test samples only the first ``s_ij / S_max`` of each segment (reproduced:
``check_path`` below; the full segment with ``full_path_check``); label 0 means both "query 0" and "below
``temp_thd``", as there; their ``A_sfr`` is cast to fp16 before the mix (not here); the inner PAMR failing is
silently skipped there (here it raises).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..pamr import pamr
from .options import Option, declare_options
from .sclip_family import gaussian_neighbourhood
from .towers import Tower, as_tower, softmax_scores

__all__ = ["BASES", "check_path", "patch_labels", "refined_cosines", "resclip", "sfr_attention"]

#: base -> whether the last block keeps its residual and FFN (the authors' ``w_resi``)
BASES = {"naclip": False, "clearclip": False, "sclip": True, "vanilla": True}
_AUTHORS_RCS = (5, 9)  # fixed in the authors' code for any depth (ViT-L/14 too)


def _rcs_range(depth: int) -> tuple[int, int]:
    """The authors' blocks 5..8, or the same fraction of a tower too shallow to hold them (fewer than 10 blocks)."""
    if depth >= 10:
        return _AUTHORS_RCS
    return max(0, round(5 * depth / 12)), max(1, min(depth - 1, round(9 * depth / 12)))


def patch_labels(probabilities: torch.Tensor, patch: tuple[int, int], threshold: float) -> torch.Tensor:
    """``[h, w]`` labels from pixel probabilities ``[Q, H, W]``: each pixel's best query (0 below ``threshold``),
    then each whole ``patch`` block's most frequent label (ties: the smallest)."""
    best, label = probabilities.max(dim=0)
    label = label.masked_fill(best < threshold, 0)
    h, w = label.shape[0] // patch[0], label.shape[1] // patch[1]
    blocks = label[: h * patch[0], : w * patch[1]].reshape(h, patch[0], w, patch[1]).permute(0, 2, 1, 3)
    blocks = blocks.reshape(h * w, -1)
    counts = torch.zeros(h * w, probabilities.shape[0], dtype=torch.long, device=label.device)
    counts.scatter_add_(1, blocks, torch.ones_like(blocks))
    return counts.argmax(dim=-1).view(h, w)  # the first maximum: the smallest label among ties


def refined_cosines(cosines: torch.Tensor, images: torch.Tensor, with_pamr: bool = True) -> torch.Tensor:
    """SFR's first-pass maps: grid cosines ``[B, Q, h, w]`` bilinear to the window ``[B, 3, H, W]``, then PAMR (10
    iterations, dilations 8 and 16). Both steps are linear in the maps, so with more queries than patches the
    window's ``h·w`` basis maps are refined instead and combined per query (the same maps, a fraction of the work
    on large vocabularies)."""
    size = tuple(images.shape[-2:])
    batch, queries, h, w = cosines.shape
    if not with_pamr or queries <= h * w:
        up = F.interpolate(cosines, size=size, mode="bilinear", align_corners=False)
        return pamr(images.float(), up, 10, (8, 16)) if with_pamr else up
    basis = torch.eye(h * w, dtype=cosines.dtype, device=cosines.device).view(1, h * w, h, w)
    out = []
    for b in range(batch):
        refined = pamr(images[b:b + 1].float(),
                       F.interpolate(basis, size=size, mode="bilinear", align_corners=False), 10, (8, 16))
        out.append(torch.einsum("gyx,qg->qyx", refined[0], cosines[b].reshape(queries, h * w)))
    return torch.stack(out)


def check_path(labels: torch.Tensor, full: bool = False, rows_per_chunk: int = 64) -> torch.Tensor:
    """``[n, n]`` bool for the ``[h, w]`` patch ``labels``: whether the straight path from patch i to patch j stays
    on i's label, sampled at ``t_k = k / S_max`` (rounded positions; ``S_max`` = the largest Chebyshev distance of the
    grid) for ``k <= s_ij`` as the authors' code does, or for every ``k`` (the whole segment) with ``full``."""
    h, w = labels.shape
    n = h * w
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), dim=-1).reshape(n, 2)
    coords, flat = coords.to(labels.device), labels.reshape(n)
    max_steps = max(h, w) - 1
    t = torch.linspace(0, 1, max_steps + 1, device=labels.device).view(1, 1, -1, 1)
    out = torch.empty(n, n, dtype=torch.bool, device=labels.device)
    for start in range(0, n, rows_per_chunk):
        rows = slice(start, min(start + rows_per_chunk, n))
        a, b = coords[rows, None, None, :], coords[None, :, None, :]
        steps = (coords[rows, None] - coords[None]).abs().amax(dim=-1)
        along = (a * (1 - t) + b * t).round().long()
        on_label = flat[along[..., 0] * w + along[..., 1]] == flat[rows, None, None]
        if not full:
            on_label |= torch.arange(max_steps + 1, device=labels.device) > steps[..., None]
        out[rows] = on_label.all(dim=-1)
    return out


def sfr_attention(labels: torch.Tensor, sigma: float = 5.0, delete_same_entity: bool = True,
                  full_path_check: bool = False) -> torch.Tensor:
    """The SFR map ``[n, n]`` over the patches of ``[h, w]`` labels (see the module docstring), rows summing to 1."""
    h, w = labels.shape
    n = h * w
    flat = labels.reshape(n)
    attention = (flat[:, None] == flat[None, :]).float()
    if delete_same_entity and max(h, w) > 1:
        coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), dim=-1).reshape(n, 2)
        steps = (coords[:, None] - coords[None]).abs().amax(dim=-1).to(attention)
        decay = torch.exp(-steps / steps.max())
        attention = torch.where(check_path(labels, full_path_check), attention, attention * decay)
    size = min(n, int(6 * sigma + 1))
    size += 1 - size % 2
    x = torch.arange(size, dtype=attention.dtype, device=attention.device) - size // 2
    kernel = torch.exp(-x.square() / (2 * sigma**2))
    blurred = F.conv1d(attention[:, None], (kernel / kernel.sum()).view(1, 1, -1), padding=size // 2)[:, 0]
    blurred = blurred.relu()
    return blurred / (blurred.sum(dim=1, keepdim=True) + 1e-8)


def _mix(tau: float, lam: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return tau * ((1 - lam) * a + lam * b)


def _last_attention(base: str, q: torch.Tensor, k: torch.Tensor, omega: torch.Tensor, rcs: torch.Tensor | None,
                    sfr: torch.Tensor | None, options: dict) -> torch.Tensor:
    """The base's last-block attention ``[B, heads, N, N]`` with SFR mixed into its scores and RCS into its maps."""

    def scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raw = a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1])
        return raw if sfr is None else _mix(options["tau_sfr"], options["lambda_sfr"], raw, sfr)

    if base == "naclip":
        attention = (scores(k, k) + omega).softmax(dim=-1)
    elif base == "sclip":
        attention = scores(q, q).softmax(dim=-1) + scores(k, k).softmax(dim=-1)
    elif base == "clearclip":
        attention = scores(q, q).softmax(dim=-1)
    else:
        attention = scores(q, k).softmax(dim=-1)
    return attention if rcs is None else _mix(options["tau_rcs"], options["lambda_rcs"], attention, rcs)


def _trunk_with_rcs(tower: Tower, images: torch.Tensor, start: int, stop: int
                    ) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor]:
    """Every block but the last, unmodified, and the mean attention map of blocks ``start..stop - 1``."""
    grid = tower.grid(images)
    x = tower.embed(images, tower.pos_modes[0])
    maps = []
    for index, block in enumerate(tower.blocks[:-1]):
        if start <= index < stop:
            q, k, v = block.qkv(x, grid)
            attention = softmax_scores(q, k)
            maps.append(attention)
            x = block.feed_forward(x + block.attention_output(attention, v))
        else:
            x = block.forward(x, grid)
    return x, grid, torch.stack(maps).mean(dim=0)


@declare_options(
    base=Option(str, "naclip", "the encoder ResCLIP refines (naclip: the published method)", choices=tuple(BASES)),
    rcs=Option(bool, True, "mix the middle blocks' attention into the last block (RCS)"),
    sfr=Option(bool, True, "mix the text-guided same-label map into the last block's scores (SFR; needs the text "
                           "queries)"),
    tau_rcs=Option(float, 2.0, "τ_rcs: RCS scale"), lambda_rcs=Option(float, 0.3, "λ_rcs: RCS weight"),
    tau_sfr=Option(float, 1.8, "τ_sfr: SFR scale"), lambda_sfr=Option(float, 0.7, "λ_sfr: SFR weight"),
    temp_thd=Option(float, 0.25, "SFR: pixels whose best query probability is below this get label 0"),
    logit_scale=Option(float, 40.0, "SFR: softmax temperature of the first pass's cosines", minimum=0.0, above=True),
    sigma=Option(float, 5.0, "NACLIP's neighbourhood σ and SFR's row smoothing σ, in patches", minimum=0.0,
                 above=True),
    delete_same_entity=Option(bool, True, "SFR: damp same-label pairs whose path leaves the label"),
    full_path_check=Option(bool, False, "SFR: test the whole path (the authors' code tests a prefix)"),
    sfr_pamr=Option(bool, True, "SFR: refine the first pass with PAMR (10 iterations, dilations 8, 16)"),
    rcs_start=Option(int, -1, "first block of RCS (-1: the authors' 5, fixed for any depth; scaled below 10 "
                              "blocks)", minimum=-1, maximum="blocks"),
    rcs_stop=Option(int, -1, "block after the last of RCS (-1: the authors' 9; scaled below 10 blocks)", minimum=-1,
                    maximum="blocks"),
)
def resclip(visual: nn.Module | Tower, images: torch.Tensor, text: torch.Tensor | None = None, base: str = "naclip",
            rcs: bool = True, sfr: bool = True, tau_rcs: float = 2.0, lambda_rcs: float = 0.3, tau_sfr: float = 1.8,
            lambda_sfr: float = 0.7, temp_thd: float = 0.25, logit_scale: float = 40.0, sigma: float = 5.0,
            delete_same_entity: bool = True, full_path_check: bool = False, sfr_pamr: bool = True,
            rcs_start: int = -1, rcs_stop: int = -1) -> torch.Tensor:
    """ResCLIP on ``base``: patch tokens ``[B, h*w, width]``; ``text``: the queries ``[Q, D]`` SFR scores against."""
    if sfr and text is None:
        raise ValueError("resclip's SFR scores a first pass against the segmentation's text queries, and none were "
                         "given: pass text_emb, or set the encoder option sfr=false (e.g. to train the projector)")
    tower = as_tower(visual)
    start, stop = _rcs_range(len(tower.blocks))
    start, stop = (start if rcs_start < 0 else rcs_start), (stop if rcs_stop < 0 else rcs_stop)
    if rcs and not 0 <= start < stop <= len(tower.blocks) - 1:
        raise ValueError(f"resclip: RCS blocks {start}..{stop - 1} must lie within blocks 0..{len(tower.blocks) - 2}")
    if rcs:
        x, grid, a_rcs = _trunk_with_rcs(tower, images, start, stop)
    else:
        (x, grid), a_rcs = tower.trunk(images), None
    block = tower.blocks[-1]
    q, k, v = block.qkv(x, grid)
    omega = gaussian_neighbourhood(*grid, sigma, prefix=tower.num_prefix).to(k)
    options = dict(tau_rcs=tau_rcs, lambda_rcs=lambda_rcs, tau_sfr=tau_sfr, lambda_sfr=lambda_sfr)

    def last_block(sfr_map: torch.Tensor | None) -> torch.Tensor:
        out = block.attention_output(_last_attention(base, q, k, omega, a_rcs, sfr_map, options), v)
        return tower.patches(block.feed_forward(x + out) if BASES[base] else out)

    if not sfr:
        return last_block(None)
    first = tower.dense_head()(last_block(None)).float()
    cosines = F.normalize(first, dim=-1) @ F.normalize(text.to(first), dim=-1).t()
    cosines = refined_cosines(cosines.transpose(1, 2).reshape(images.shape[0], -1, *grid), images, sfr_pamr)
    probabilities = (logit_scale * cosines).softmax(dim=1)
    n, prefix = grid[0] * grid[1], tower.num_prefix
    maps = torch.zeros(images.shape[0], 1, prefix + n, prefix + n, device=k.device, dtype=torch.float32)
    for b in range(images.shape[0]):
        labels = patch_labels(probabilities[b], tower.patch_size, temp_thd)
        maps[b, 0, prefix:, prefix:] = sfr_attention(labels, sigma, delete_same_entity, full_path_check)
    maps = maps / maps.amax(dim=(1, 2, 3), keepdim=True)
    return last_block(maps.to(k.dtype))


resclip.needs_text = True  # SFR scores a first pass against the text queries
