"""Render label maps and probability maps as PNG-ready images (no matplotlib needed)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_DISTINCT = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
     [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40],
     [128, 0, 0], [170, 255, 195], [128, 128, 0], [0, 0, 128]], dtype=np.uint8)


def class_colours(count: int) -> np.ndarray:
    """``[count, 3]`` distinct colours (cycled with a shade shift beyond the base palette)."""
    reps = [np.clip(_DISTINCT.astype(int) - 40 * (i // len(_DISTINCT)), 0, 255) for i in range(count)]
    return np.array([reps[i][i % len(_DISTINCT)] for i in range(count)], dtype=np.uint8)


#: Text height as a share of a picture's width (at least MIN_TEXT_PX): a grid of several tiles shrunk to fit a
#: browser window keeps readable titles.
TEXT_SHARE = 0.045
MIN_TEXT_PX = 12


def text_size(width: int) -> int:
    """Font size in pixels for labels on a picture (or tile) ``width`` pixels wide."""
    return max(MIN_TEXT_PX, round(TEXT_SHARE * width))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # a Pillow without FreeType: its fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to an RGB blue-cyan-yellow-red ramp, ``[..., 3]`` uint8."""
    stops = np.array([[20, 20, 120], [0, 170, 220], [250, 230, 40], [220, 30, 30]], dtype=np.float32)
    position = np.clip(values, 0, 1) * (len(stops) - 1)
    low = np.floor(position).astype(int).clip(0, len(stops) - 2)
    frac = (position - low)[..., None]
    return (stops[low] * (1 - frac) + stops[low + 1] * frac).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, names: Sequence[str], alpha: float = 0.55,
            colours: np.ndarray | None = None) -> Image.Image:
    """Blend a label map over the image (label 0 = background if ``names[0]`` is 'background') with a legend;
    ``colours`` (``[len(names), 3]``) overrides the default palette."""
    colours = class_colours(len(names)) if colours is None else np.asarray(colours, dtype=np.uint8)
    blended = image.astype(np.float32)
    for index, name in enumerate(names):
        if name == "background":
            continue
        region = labels == index
        blended[region] = (1 - alpha) * blended[region] + alpha * colours[index]
    canvas = Image.fromarray(blended.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    size = text_size(canvas.width)
    font = _font(size)
    y = 4
    for index, name in enumerate(names):
        if name == "background":
            continue
        draw.rectangle([4, y, 4 + size, y + size], fill=tuple(int(c) for c in colours[index]), outline=(0, 0, 0))
        draw.text((8 + size, y), _fit(draw, name, font, canvas.width - 12 - size), fill=(255, 255, 255), font=font,
                  stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
        y += size + 4
    return canvas


def heatmap_grid(
    image: np.ndarray, probs: np.ndarray, names: Sequence[str], rows: Sequence[str] = ("",)
) -> Image.Image:
    """Image followed by one heatmap per text; ``probs`` is ``[R, N, H, W]`` for R labelled rows."""
    height, width = image.shape[:2]
    probs = probs.reshape(len(rows), len(names), height, width)
    size = text_size(width)
    font = _font(size)
    label_h = size + 8
    grid = Image.new("RGB", ((len(names) + 1) * width, len(rows) * (height + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        top = r * (height + label_h)
        grid.paste(Image.fromarray(image), (0, top + label_h))
        draw.text((4, top + 4), _fit(draw, row or "image", font, width - 8), fill=(0, 0, 0), font=font)
        for n, name in enumerate(names):
            heat = heat_colours(probs[r, n])
            blended = (0.35 * image + 0.65 * heat).astype(np.uint8)
            grid.paste(Image.fromarray(blended), ((n + 1) * width, top + label_h))
            title = _fit(draw, f"{name} (max {probs[r, n].max():.2f})", font, width - 8)
            draw.text(((n + 1) * width + 4, top + 4), title, fill=(0, 0, 0), font=font)
    return grid
