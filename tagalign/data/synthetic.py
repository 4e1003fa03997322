"""A generated "shapes" world: coloured shapes on textured backgrounds, with captions and per-pixel masks.

It needs no download, so the quickstart, the demo default and the tests can run anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")


@dataclass
class Scene:
    image: np.ndarray  # [H, W, 3] uint8 RGB
    mask: np.ndarray  # [H, W] int: 0 background, k = k-th object (1-based)
    objects: list[tuple[str, str]] = field(default_factory=list)  # (colour, shape) per object

    @property
    def caption(self) -> str:
        names = [f"a {colour} {shape}" for colour, shape in self.objects]
        return ("a picture of " + ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]).strip()


def _shape_mask(shape: str, height: int, width: int, cy: int, cx: int, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    if shape == "square":
        return (np.abs(yy - cy) <= radius) & (np.abs(xx - cx) <= radius)
    if shape == "circle":
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    if shape == "triangle":  # apex up
        inside_rows = (yy >= cy - radius) & (yy <= cy + radius)
        half_width = (yy - (cy - radius)) / 2
        return inside_rows & (np.abs(xx - cx) <= half_width)
    raise ValueError(f"unknown shape '{shape}'")


def render_scene(rng: np.random.Generator, size: tuple[int, int] = (224, 224), max_objects: int = 3) -> Scene:
    """One scene with 1..max_objects non-overlapping coloured shapes on a noisy, striped background."""
    height, width = size
    base = rng.integers(90, 160, size=3)
    stripes = (np.sin(np.arange(width) / rng.uniform(3, 9))[None, :, None] * 12).astype(np.int16)
    noise = rng.normal(0, 10, size=(height, width, 3)).astype(np.int16)
    image = np.clip(base[None, None, :] + stripes + noise, 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), dtype=np.int64)
    objects: list[tuple[str, str]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            radius = int(rng.integers(min(size) // 10, min(size) // 5))
            cy, cx = int(rng.integers(radius, height - radius)), int(rng.integers(radius, width - radius))
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            region = _shape_mask(shape, height, width, cy, cx, radius)
            if not (mask[region] > 0).any():
                break
        else:
            continue
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        objects.append((colour, shape))
        mask[region] = len(objects)
        shade = np.array(COLOURS[colour]) + rng.normal(0, 6, size=(int(region.sum()), 3))
        image[region] = np.clip(shade, 0, 255).astype(np.uint8)
    return Scene(image=image, mask=mask, objects=objects)
