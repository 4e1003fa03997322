"""SC-CLIP (training-free spec-2 §1, ``SuleBai/SC-CLIP@0417ba9``): self-calibrated CLIP, no second model.

With ``x_l`` the input of block ``l`` (``x_{L-1}`` enters the last block):

1. anomalous patch tokens of ``x_{L-1}``: the authors' "LOF" (squared distances, k = 30 nearest, each token's own
   k-distance as the reach distance, so ``LOF_i = mean_{j in kNN(i)} kd_i / kd_j``), above its 0.95 quantile;
2. each anomalous token of ``x_{L-1}`` and of ``x_pre`` replaced by the mean of its non-anomalous 3x3 neighbours;
3. pre-adjust: ``X = Agg(X, S ⊙ [S >= 0.4])`` with ``S`` the cosine similarities of the resolved ``x_pre``;
4. the last block on the patches alone: ``A = ½[softmax(3·(S − mean S), negatives −∞) + softmax(KKᵀs)]``,
   ``out_proj(A·V) + res_cls · CLS`` (the raw CLS of ``x_{L-1}``), no residual, no FFN;
5. post-adjust with ``x_post``'s thresholded similarities; 6. the same attention on ``LN(Σ x_start+1..x_end)`` added.

``Agg(X, S) = S / (rowsum S + 1e-6) · X``. Layer options count block outputs as the authors' ``feats_list`` does
(output of block ``i`` = ``x_{i+1}``). Defaults are the authors' ViT-B/16 layers (pre 8 → ``x_9``, post 3 → ``x_4``,
fusion 3..10 → ``x_4..x_10``), their ViT-L/14 ones on 24 blocks (16, 6, 8..19), and the same fractions of the depth
on other towers. Differences from the authors' code, named: their grid position of an anomaly,
``(idx // H/16, idx % H/16)``, is right for square windows only (ours: any window); their code assumes one image
per forward (``.squeeze(1)``), ours loops over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .options import Option, declare_options
from .towers import Tower, as_tower

__all__ = ["lof_anomalies", "resolve_anomalies", "sc_clip"]

_AUTHORS_LAYERS = {12: (8, 3, 3, 10), 24: (16, 6, 8, 19)}


def _layers(depth: int) -> tuple[int, int, int, int]:
    """(pre, post, fusion start, fusion end) feature indices for a tower of ``depth`` blocks."""
    if depth in _AUTHORS_LAYERS:
        return _AUTHORS_LAYERS[depth]
    return tuple(max(0, min(depth - 2, round(i * depth / 12))) for i in _AUTHORS_LAYERS[12])


def lof_anomalies(tokens: torch.Tensor, k: int = 30, contamination: float = 0.05) -> torch.Tensor:
    """``[n]`` bool: the tokens ``[n, C]`` whose authors'-LOF score is above its ``1 − contamination`` quantile."""
    x = tokens.float()
    if x.shape[0] < 3:  # no neighbourhood to compare against
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    distance = torch.cdist(x, x).square()
    k = min(k, x.shape[0] - 1)
    distance.fill_diagonal_(float("inf"))
    nearest, index = distance.topk(k, dim=1, largest=False)
    k_distance = nearest[:, -1]
    score = (k_distance[:, None] / k_distance[index]).mean(dim=1)
    return score > torch.quantile(score, 1 - contamination)


def resolve_anomalies(grid_tokens: torch.Tensor, anomalous: torch.Tensor) -> torch.Tensor:
    """``[h, w, C]`` tokens with each anomalous one replaced by the mean of its in-grid, non-anomalous 3x3
    neighbours (unchanged where it has none)."""
    valid = (~anomalous).float()[None, None]
    kernel = torch.ones(1, 1, 3, 3, dtype=valid.dtype, device=valid.device)
    kernel[0, 0, 1, 1] = 0
    maps = grid_tokens.permute(2, 0, 1)[:, None].float()  # [C, 1, h, w]
    sums = F.conv2d(maps * valid, kernel, padding=1)[:, 0]
    counts = F.conv2d(valid, kernel, padding=1)[0]
    replace = anomalous & (counts[0] > 0)
    means = (sums / counts.clamp(min=1)).permute(1, 2, 0).to(grid_tokens.dtype)
    return torch.where(replace[..., None], means, grid_tokens)


def _aggregate(x: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    return (similarity / (similarity.sum(dim=-1, keepdim=True) + 1e-6)) @ x


def _thresholded_similarity(x: torch.Tensor, threshold: float) -> torch.Tensor:
    f = F.normalize(x.float(), dim=-1)
    s = f @ f.t()
    return s * (s >= threshold)


def _calibrated_attention(block, tower: Tower, patches: torch.Tensor, cls: torch.Tensor, grid, proxy: torch.Tensor,
                          res_cls: float) -> torch.Tensor:
    """Step 4 on ``patches`` ``[n, C]``: ½[proxy + softmax(KKᵀs)] over the patches, out_proj, + res_cls · cls."""
    prefix = cls[None].expand(tower.num_prefix, -1)
    _, k, v = block.qkv(torch.cat([prefix, patches])[None], grid)  # RoPE towers rotate the patch rows as usual
    k, v = k[:, :, tower.num_prefix:], v[:, :, tower.num_prefix:]
    kk = (k @ k.transpose(-1, -2) / k.shape[-1] ** 0.5).softmax(dim=-1)
    attention = 0.5 * (proxy[None, None].to(kk) + kk)
    return block.attention_output(attention, v)[0] + res_cls * cls


@declare_options(
    pre_adjust=Option(int, None, "the output of this block (0-based) pre-adjusts the tokens (default: 8 on 12 blocks, "
                                 "i.e. x_9; 16 on 24; the same fraction elsewhere)", minimum=0, maximum="blocks"),
    post_adjust=Option(int, None, "the block output for the post-adjustment (default 3: x_4)", minimum=0,
                       maximum="blocks"),
    fusion_start=Option(int, None, "multi-level fusion sums the outputs of blocks start..end-1 (default 3)",
                        minimum=0, maximum="blocks"),
    fusion_end=Option(int, None, "(default 10: x_4..x_10)", minimum=1, maximum="blocks"),
    res_cls=Option(float, 0.3, "weight of the CLS token added to every patch (ViT-L/14: 0.1)"),
    threshold=Option(float, 0.4, "similarities below it are dropped in the adjustments (the code's beta)"),
)
def sc_clip(visual: nn.Module | Tower, images: torch.Tensor, pre_adjust: int | None = None,
            post_adjust: int | None = None, fusion_start: int | None = None, fusion_end: int | None = None,
            res_cls: float = 0.3, threshold: float = 0.4) -> torch.Tensor:
    """SC-CLIP's patch tokens ``[B, h*w, width]`` (see the module docstring)."""
    tower = as_tower(visual)
    depth = len(tower.blocks)
    defaults = _layers(depth)
    pre, post, start, end = (given if given is not None else default for given, default in
                             zip((pre_adjust, post_adjust, fusion_start, fusion_end), defaults, strict=True))
    if not (start < end <= depth - 1 and pre <= depth - 2 and post <= depth - 2):
        raise ValueError(f"sc_clip reads the outputs of blocks 0..{depth - 2} of this {depth}-block tower: "
                         f"pre_adjust={pre}, post_adjust={post} and fusion {start}..{end} (end exclusive) must fit")
    grid = tower.grid(images)
    x = tower.embed(images)
    inputs = [x]  # inputs[i] = x_i, the input of block i
    for block in tower.blocks[:-1]:
        x = block.forward(x, grid)
        inputs.append(x)
    block, p = tower.blocks[-1], tower.num_prefix
    fused = sum(inputs[start + 1: end + 1])
    out = []
    for b in range(images.shape[0]):
        last = inputs[-1][b]
        cls, patches = last[0], last[p:]
        anomalous = lof_anomalies(patches).view(grid)
        patches = resolve_anomalies(patches.view(*grid, -1), anomalous).flatten(0, 1)
        pre_tokens = resolve_anomalies(inputs[pre + 1][b, p:].view(*grid, -1), anomalous).flatten(0, 1)
        f = F.normalize(pre_tokens.float(), dim=-1)
        similarity = f @ f.t()
        patches = _aggregate(patches, (similarity * (similarity >= threshold)).to(patches.dtype))
        logits = 3 * (similarity - similarity.mean())
        proxy = logits.masked_fill(logits < 0, float("-inf")).softmax(dim=-1)
        post_similarity = _thresholded_similarity(inputs[post + 1][b, p:], threshold).to(patches.dtype)
        calibrated = _aggregate(_calibrated_attention(block, tower, patches, cls, grid, proxy, res_cls),
                                post_similarity)
        multi = _aggregate(_calibrated_attention(block, tower, fused[b, p:], fused[b, 0], grid, proxy, res_cls),
                           post_similarity)
        out.append(calibrated + multi)
    return torch.stack(out)


def _needs_a_cls_token(tower: Tower) -> None:
    if tower.num_prefix < 1:
        tower.refuse("sc_clip", "it adds the CLS token to every patch (res_cls), and this tower has none")


sc_clip.tower_check = _needs_a_cls_token
