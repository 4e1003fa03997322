"""LPOSS and LPOSS+ (training-free spec-2 §6, ``vladan-stojnic/LPOSS@e489a74``): label propagation over an image's
windows, a post-processing step for any encoder (like PAMR).

**LPOSS** (patch level). The nodes are the patches of every window of one image, on a second model's grid (DINO
ViT-B/16: its last block's attention values, L2-normalised). Node ``i`` sits at ``window offset + p/2 + p·(row,
col)`` pixels (``p``: the second model's patch). Each node links to its ``k`` nearest nodes by inner product (itself
included) with ``w_ij = max(cos_ij, 0)^γ · exp(−σ·d_ij^power)`` (``d``: pixel distance); ``W ← W + Wᵀ``, diagonal
removed, ``Wn = D^-½ W D^-½`` (degree 0 → 1). Each class's window scores ``y_c`` (resized to the second model's grid
where it differs) are replaced by the solution of ``(I − α·Wn) z_c = y_c``, found by conjugate gradient (tol 1e-6
relative to ``‖y_c‖``, at most 10 steps, as cupy's ``cg`` runs it).

**LPOSS+** (pixel level). On the window-averaged maps at the resized image's resolution: every pixel links to the
other pixels of its ``radius × radius`` neighbourhood with ``exp(−‖Lab_i − Lab_j‖ / τ)`` (CIE Lab of the [0, 1] RGB,
scaled by 1/(100, 128, 128)), normalised the same way, the same α and solver.

Constants (the authors' ``configs/lposs*.yaml``): α 0.95, k 400, σ 0.01, power 1, γ 3, τ 0.01, radius 13.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LabelPropagation", "LpossSettings", "PixelGraph", "conjugate_gradient", "lposs_windows", "patch_graph",
           "rgb_to_lab"]


@dataclass(frozen=True)
class LpossSettings:
    alpha: float = 0.95
    k: int = 400
    sigma: float = 0.01
    power: float = 1.0
    gamma: float = 3.0
    tau: float = 0.01
    radius: int = 13
    tol: float = 1e-6
    maxiter: int = 10


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, tol: float = 1e-6,
                       maxiter: int = 10) -> torch.Tensor:
    """Solve ``A x_c = b_c`` for every row ``c`` of ``b`` ``[C, ...]`` at once (``matvec`` applies the symmetric
    positive-definite ``A`` to each row), from ``x = 0``; a row stops once ``‖r‖ <= tol·‖b_c‖``."""
    x = torch.zeros_like(b)
    r = b.clone()
    dims = tuple(range(1, b.dim()))
    shape = (-1,) + (1,) * (b.dim() - 1)
    atol = tol * b.norm(dim=dims)
    active = torch.ones(b.shape[0], dtype=torch.bool, device=b.device)
    p, rho = r.clone(), (r * r).sum(dim=dims)
    for _ in range(maxiter):
        q = matvec(p)
        pq = (p * q).sum(dim=dims)
        alpha = torch.where(active & (pq != 0), rho / pq.where(pq != 0, torch.ones_like(pq)), torch.zeros_like(pq))
        x += alpha.view(shape) * p
        r -= alpha.view(shape) * q
        active &= r.norm(dim=dims) > atol
        if not active.any():
            break
        rho_next = (r * r).sum(dim=dims)
        beta = torch.where(rho != 0, rho_next / rho.where(rho != 0, torch.ones_like(rho)), torch.zeros_like(rho))
        p = r + beta.view(shape) * p
        rho = rho_next
    return x


def patch_graph(features: torch.Tensor, positions: torch.Tensor, settings: LpossSettings = LpossSettings(),
                rows_per_chunk: int = 1024) -> torch.Tensor:
    """``Wn`` ``[n, n]`` (sparse) of the patch graph over L2-normalised ``features`` ``[n, C]`` at pixel
    ``positions`` ``[n, 2]``."""
    n = features.shape[0]
    k = min(settings.k, n)
    rows, cols, values = [], [], []
    for start in range(0, n, rows_per_chunk):
        chunk = slice(start, min(start + rows_per_chunk, n))
        similarity, index = (features[chunk] @ features.t()).topk(k, dim=1)
        distance = (positions[chunk, None, :] - positions[index]).norm(dim=-1)
        weight = similarity.clamp(min=0) ** settings.gamma * torch.exp(-settings.sigma * distance**settings.power)
        rows.append(torch.arange(chunk.start, chunk.stop, device=features.device).repeat_interleave(k))
        cols.append(index.flatten())
        values.append(weight.flatten())
    rows, cols, values = torch.cat(rows), torch.cat(cols), torch.cat(values)
    indices = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])  # W + Wᵀ: mutual links count twice
    values = torch.cat([values, values])
    off_diagonal = indices[0] != indices[1]
    graph = torch.sparse_coo_tensor(indices[:, off_diagonal], values[off_diagonal], (n, n), check_invariants=False)
    graph = graph.coalesce()
    degree = torch.sparse.sum(graph, dim=1).to_dense()
    scale = degree.masked_fill(degree == 0, 1).rsqrt()
    indices = graph.indices()
    values = graph.values() * scale[indices[0]] * scale[indices[1]]
    return torch.sparse_coo_tensor(indices, values, (n, n), check_invariants=False).coalesce()


def _window_positions(boxes: Sequence[tuple[int, int, int, int]], grid: tuple[int, int], patch: tuple[int, int],
                      device: torch.device) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    centres = torch.stack([rows.flatten() * patch[0] + patch[0] // 2, cols.flatten() * patch[1] + patch[1] // 2], 1)
    offsets = torch.tensor([(y1, x1) for y1, _, x1, _ in boxes])
    return (offsets[:, None, :] + centres[None]).reshape(-1, 2).float().to(device)


@torch.no_grad()
def lposs_windows(scores: torch.Tensor, features: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]],
                  patch: tuple[int, int], settings: LpossSettings = LpossSettings()) -> torch.Tensor:
    """LPOSS: window ``scores`` ``[W, Q, h, w]`` propagated over the joint patch graph of all windows, from the
    second model's ``features`` ``[W, C, h', w']`` of the same windows (``boxes``: ``(y1, y2, x1, x2)``) ->
    ``[W, Q, h', w']`` on the second model's grid."""
    windows, _, gh, gw = features.shape
    if tuple(scores.shape[-2:]) != (gh, gw):
        scores = F.interpolate(scores.float(), size=(gh, gw), mode="bilinear", align_corners=False)
    nodes = F.normalize(features.float().permute(0, 2, 3, 1).reshape(-1, features.shape[1]), dim=-1)
    graph = patch_graph(nodes, _window_positions(boxes, (gh, gw), patch, features.device), settings)
    y = scores.float().permute(1, 0, 2, 3).reshape(scores.shape[1], -1)  # [Q, n], nodes window by window

    def laplacian(z: torch.Tensor) -> torch.Tensor:
        return z - settings.alpha * torch.sparse.mm(graph, z.t()).t()

    z = conjugate_gradient(laplacian, y, settings.tol, settings.maxiter)
    return z.reshape(-1, windows, gh, gw).permute(1, 0, 2, 3)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) of sRGB ``[B, 3, H, W]`` in [0, 1], as kornia's ``rgb_to_lab`` computes it."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).pow(2.4), rgb / 12.92)
    matrix = torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                           [0.019334, 0.119193, 0.950227]], dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)
    xyz = xyz / torch.tensor([0.95047, 1.0, 1.08883], dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp(min=0.008856).pow(1 / 3), 7.787 * xyz + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


class PixelGraph:
    """LPOSS+'s pixel graph of one image ``[1, 3, H, W]`` (RGB in [0, 1]), built once and applied to any number of
    class maps (a chunk of classes at a time)."""

    def __init__(self, rgb: torch.Tensor, settings: LpossSettings = LpossSettings()):
        self.settings = settings
        lab = rgb_to_lab(rgb.float())[0] / torch.tensor([100.0, 128.0, 128.0], device=rgb.device).view(3, 1, 1)
        height, width = lab.shape[-2:]
        self.reach = reach = settings.radius // 2
        self.offsets = [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)
                        if (dy, dx) != (0, 0)]
        padded = F.pad(lab, (reach, reach, reach, reach))
        inside = F.pad(torch.ones(1, height, width, device=rgb.device), (reach, reach, reach, reach))
        weights = []
        for dy, dx in self.offsets:
            window = (slice(None), slice(reach + dy, reach + dy + height), slice(reach + dx, reach + dx + width))
            distance = (lab - padded[window]).square().sum(dim=0).sqrt()
            weights.append(torch.exp(-distance / settings.tau) * inside[window][0])
        self.weights = torch.stack(weights)  # [K, H, W]: pixel i's link to i + offset
        degree = self.weights.sum(dim=0)
        self.scale = degree.masked_fill(degree == 0, 1).rsqrt()

    def normalised_product(self, z: torch.Tensor) -> torch.Tensor:
        """``Wn z`` for maps ``z`` ``[Q, H, W]``."""
        height, width = z.shape[-2:]
        reach = self.reach
        padded = F.pad(z * self.scale, (reach, reach, reach, reach))
        total = torch.zeros_like(z)
        for weight, (dy, dx) in zip(self.weights, self.offsets, strict=True):
            total.addcmul_(padded[:, reach + dy: reach + dy + height, reach + dx: reach + dx + width], weight)
        return total * self.scale

    @torch.no_grad()
    def propagate(self, maps: torch.Tensor) -> torch.Tensor:
        """LPOSS+: ``(I − α·Wn) z = maps`` for maps ``[1, Q, H, W]`` -> ``[1, Q, H, W]``."""

        def laplacian(z: torch.Tensor) -> torch.Tensor:
            return z - self.settings.alpha * self.normalised_product(z)

        return conjugate_gradient(laplacian, maps[0].float(), self.settings.tol, self.settings.maxiter)[None]


class LabelPropagation:
    """What LPOSS needs beside the window scores: its settings, the second model whose values build the patch graph
    (``lposs``; DINO ViT-B/16 in the authors' code) and the pixel statistics the image was normalised with (LPOSS+
    reads its colours, and the second model re-normalises the windows)."""

    def __init__(self, settings: LpossSettings = LpossSettings(), vfm=None,
                 input_statistics: tuple[Sequence[float], Sequence[float]] = ((0.485, 0.456, 0.406),
                                                                              (0.229, 0.224, 0.225))):
        self.settings, self.vfm, self.input_statistics = settings, vfm, input_statistics
        if vfm is not None:
            vfm.input_statistics = input_statistics

    @torch.no_grad()
    def windows(self, image: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]], scores: torch.Tensor,
                crop_batch: int = 16) -> torch.Tensor:
        """LPOSS on one image's window ``scores`` ``[W, Q, h, w]`` -> ``[W, Q, h', w']`` on the second model's grid."""
        if self.vfm is None:
            raise ValueError("LPOSS builds its graph from a second model's features: pass vfm=load_vfm('dino_vitb16')")
        crops = [image[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes]
        features = torch.cat([self.vfm.values(torch.cat(crops[start:start + crop_batch]))
                              for start in range(0, len(crops), crop_batch)])
        return lposs_windows(scores, features, boxes, self.vfm.patch_size, self.settings)

    def pixel_graph(self, image: torch.Tensor) -> PixelGraph:
        """LPOSS+'s graph of one normalised image ``[1, 3, H, W]``."""
        mean, std = (torch.tensor(s, device=image.device, dtype=torch.float32).view(1, 3, 1, 1)
                     for s in self.input_statistics)
        return PixelGraph((image.float() * std + mean).clamp(0, 1), self.settings)
