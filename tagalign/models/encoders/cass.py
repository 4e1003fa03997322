"""CASS (training-free spec-2 §4, ``MICV-yonsei/CASS@228ecdd``): CLIP's last attention completed by DINO's keys.

On the patch tokens of the last block (the CLS token leaves here), NACLIP's reduced architecture (no residual, no
FFN) with the attention scores of each CLIP head ``Lc_i = K_iK_iᵀ·s`` blended with a DINO head's:

1. DINO ViT-B/8's last-block **keys** (CLS dropped), split into CLIP's heads, each resized bilinearly to CLIP's grid,
   then min-max mapped as one tensor onto the range of CLIP's patch keys; ``Ld_j = Kd_jKd_jᵀ·s`` (CLIP's ``s``).
2. ``spectral`` (the published method): the top-20 eigenvalues of every ``Lc_i`` and ``Ld_j`` (L2-normalised, then
   L1-normalised per pair), ``cost[j, i] = 1 − Σ|sort λd_j − sort λc_i|`` (rows: DINO heads), solved by
   ``linear_sum_assignment``, so heads with the most *different* spectra pair up; as the code indexes it, CLIP head
   ``idx`` takes DINO head ``col[idx]`` with weight ``w = 1 − cost[idx, col[idx]]`` (the transpose of the solved
   assignment). ``sequential``: head ``i`` with head ``i``, no weight, plain average.
3. ``Ld_j`` at rank 10 (``U diag(s') Vᵀ``; the authors' energy test always keeps 10), its singular values stretched
   ``s' = (s − s_min)/(s_max − s_min)·(1.5 s_max − 0.5 s_min) + 0.5 s_min`` (off on VOC20 and Cityscapes), diagonal
   zeroed, min-max mapped onto the range of ``Lc_i``; ``L_i = (10·w·D + Lc_i)/(10·w + 1)``.
4. ``A = softmax(L + Ω)`` (NACLIP's neighbourhood over the patches), ``out_proj(A·V)``.

DINO's input (``dino_input``): ``authors`` reproduces what their code feeds DINO, the window as CLIP sees it
"un-normalised" with ImageNet statistics (blue std typed 0.255) and normalised again, i.e. CLIP's normalised pixels
with the blue channel scaled by 0.255/0.225, squashed to a ``min(H, W)`` square; ``exact`` gives DINO the true pixels
with its own statistics at the window's aspect.

Differences from the authors' code, named: their DINO input also passes through 8-bit rounding and PIL's resize (not
reproduced: bilinear here); their rank-10 factorisation is ``torch.svd_lowrank`` (randomised), ``svd=exact`` (the
default) takes the exact truncated SVD it approximates, ``svd=lowrank`` theirs; their code runs one window per
forward, ours loops over the batch. Their object-level text adjustment and global-CLS logit mix are a scoring step,
not part of the encoder: :mod:`tagalign.segmentation.text_adjustment` (``--preset cass`` turns it on).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .options import Option, declare_options
from .sclip_family import gaussian_neighbourhood
from .towers import Tower, as_tower

__all__ = ["cass", "low_rank", "pair_heads", "spectrum"]

_BLUE_STD_TYPO = 0.255 / 0.225


def spectrum(scores: torch.Tensor, count: int = 20) -> torch.Tensor:
    """``[heads, count]``: each head's largest eigenvalues of ``scores`` ``[heads, n, n]`` (float64, descending),
    L2-normalised."""
    values = torch.linalg.eigvalsh(scores.double()).flip(-1)[:, :count]
    return F.normalize(values, p=2, dim=1)


def pair_heads(clip_scores: torch.Tensor, dino_scores: torch.Tensor, count: int = 20
               ) -> tuple[list[int], torch.Tensor]:
    """``(dino head for each CLIP head, weight of each pair)`` as the authors' code pairs them (see module doc)."""
    from scipy.optimize import linear_sum_assignment

    clip, dino = spectrum(clip_scores, count), spectrum(dino_scores, count)
    p_dino, p_clip = F.normalize(dino, p=1, dim=1), F.normalize(clip, p=1, dim=1)
    distance = (p_dino.sort(dim=1).values[:, None] - p_clip.sort(dim=1).values[None]).abs().sum(-1)
    cost = (1 - distance).float()
    _, col = linear_sum_assignment(cost.cpu().numpy())
    heads = [int(c) for c in col]
    weights = torch.stack([1 - cost[idx, heads[idx]] for idx in range(len(heads))])
    return heads, weights


def low_rank(scores: torch.Tensor, rank: int = 10, stretch: bool = True, svd: str = "exact") -> torch.Tensor:
    """``U diag(s') Vᵀ`` of ``scores`` ``[n, n]`` at ``rank`` (float64), singular values stretched (see module doc)."""
    matrix = scores.double()
    rank = min(rank, *matrix.shape)
    if svd == "lowrank":
        u, s, v = torch.svd_lowrank(matrix, q=rank)
        vh = v.t()
    else:
        u, s, vh = torch.linalg.svd(matrix)
        u, s, vh = u[:, :rank], s[:rank], vh[:rank]
    if stretch and s.max() > s.min():
        low, high = s.min(), s.max()
        s = (s - low) / (high - low) * (1.5 * high - 0.5 * low) + 0.5 * low
    return u @ torch.diag(s) @ vh


def _to_range(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    low, high = source.min(), source.max()
    return (source - low) / (high - low).clamp(min=1e-12) * (target.max() - target.min()) + target.min()


def _dino_keys(vfm: nn.Module, images: torch.Tensor, dino_input: str) -> torch.Tensor:
    if dino_input == "exact":
        return vfm.attention_part(images, "k")
    side = min(images.shape[-2:])
    x = images * torch.tensor([1.0, 1.0, _BLUE_STD_TYPO], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    patch = vfm.patch_size[0]
    x = x[..., : side // patch * patch, : side // patch * patch]
    return vfm.attention_part(images, "k", prepared=x)


@declare_options(
    strategy=Option(str, "spectral", "how CLIP and DINO heads pair: spectral (the published method) or sequential",
                    choices=("spectral", "sequential")),
    k_eigen=Option(int, 20, "eigenvalues compared per head", minimum=1),
    scale_factor=Option(float, 10.0, "weight of DINO's map in the blend (times the pair's weight)", minimum=0.0),
    rank=Option(int, 10, "rank of DINO's attention map", minimum=1),
    stretch=Option(bool, True, "stretch the singular values (the authors: off on VOC20 and Cityscapes)"),
    svd=Option(str, "exact", "rank-r factorisation: exact (truncated SVD) or lowrank (torch.svd_lowrank, "
                             "randomised, as the authors)", choices=("exact", "lowrank")),
    dino_input=Option(str, "authors", "DINO's input: authors (their mis-normalised square) or exact (true pixels)",
                      choices=("authors", "exact")),
    sigma=Option(float, 5.0, "NACLIP's neighbourhood σ, in patches", minimum=0.0, above=True),
)
def cass(visual: nn.Module | Tower, images: torch.Tensor, vfm: nn.Module, strategy: str = "spectral",
         k_eigen: int = 20, scale_factor: float = 10.0, rank: int = 10, stretch: bool = True, svd: str = "exact",
         dino_input: str = "authors", sigma: float = 5.0) -> torch.Tensor:
    """CASS: patch tokens ``[B, h*w, width]`` on CLIP's grid."""
    tower = as_tower(visual)
    x, grid = tower.trunk(images)
    block = tower.blocks[-1]
    _, k, v = (t[:, :, tower.num_prefix:] for t in block.qkv(x, grid))
    batch, heads, n, head_dim = k.shape
    keys = _dino_keys(vfm, images, dino_input).float()
    if keys.shape[1] != heads * head_dim:
        raise ValueError(f"cass splits the second model's keys into CLIP's heads: its width {keys.shape[1]} must be "
                         f"CLIP's {heads * head_dim} (DINO ViT-B beside a ViT-B CLIP)")
    keys = F.interpolate(keys.reshape(batch * heads, head_dim, *keys.shape[-2:]), size=grid, mode="bilinear",
                         align_corners=False)
    keys = keys.reshape(batch, heads, head_dim, n).transpose(-1, -2)
    scale = 1 / math.sqrt(head_dim)
    omega = gaussian_neighbourhood(*grid, sigma, prefix=0).to(k)
    attention = []
    for b in range(batch):
        dino_keys = _to_range(keys[b], k[b].float())
        clip_scores = k[b].float() @ k[b].float().transpose(-1, -2) * scale
        dino_scores = dino_keys @ dino_keys.transpose(-1, -2) * scale
        if strategy == "spectral":
            pairs, weights = pair_heads(clip_scores, dino_scores, k_eigen)
        else:
            pairs, weights = list(range(heads)), None
        combined = []
        for i in range(heads):
            d = low_rank(dino_scores[pairs[i]], rank, stretch and strategy == "spectral", svd).float()
            d = _to_range(d.fill_diagonal_(0), clip_scores[i])
            if weights is None:
                combined.append((d + clip_scores[i]) / 2)
            else:
                w = weights[i] * scale_factor
                combined.append((w * d + clip_scores[i]) / (w + 1))
        attention.append((torch.stack(combined) + omega).softmax(dim=-1))
    return block.attention_output(torch.stack(attention).to(v.dtype), v)


cass.needs_vfm = "dino_vitb8"  # DINO ViT-B/8's keys, as the authors read them
