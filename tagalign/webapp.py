"""The web demo: segment and tag your own images in the browser (Gradio), a thin layer over the library.

Everything it shows comes from :func:`tagalign.segment`, :func:`tagalign.tag` and :mod:`tagalign.visualize`; the
only state is the loaded model, its untrained CLIP-surgery baseline and a cache of image features shared by both
(:class:`tagalign.feature_cache.PatchFeatureCache`), so new words for the same image do not re-encode it.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .data.decode import ImageDecodeError, decode_bytes
from .feature_cache import PatchFeatureCache
from .inference import parse_texts, segment, tag
from .models.tagalign import TagAlign
from .visualize import class_colours, heatmap_grid, overlay

__all__ = ["MAX_HEATMAPS", "MAX_QUERIES", "MAX_SIDE", "DemoResult", "SegmentationDemo", "UnreadableUpload",
           "build_app", "read_upload"]

MAX_SIDE = 2048  # larger uploads are downscaled first, with a note
MAX_QUERIES = 50
MAX_HEATMAPS = 12  # heatmap columns shown (every query is still segmented and listed)


@dataclass(frozen=True)
class UnreadableUpload:
    """An upload the browser sent but no image decoder could open (the page shows ``reason``)."""

    reason: str


@dataclass
class DemoResult:
    overlay: np.ndarray | None = None
    heatmaps: np.ndarray | None = None
    legend: str = ""
    tags: str = ""
    status: str = ""
    notes: list[str] = field(default_factory=list)


class SegmentationDemo:
    """One request: ``run(image, queries, ...)`` -> :class:`DemoResult`; errors become a status message."""

    def __init__(self, model: TagAlign, vocab=None, tag_count: int = 10):
        self.model = model.eval()
        self.baseline = TagAlign(model.clip, **model.encoder_config).eval()
        self.cache = PatchFeatureCache().attach(self.model, self.baseline)
        self.vocab = vocab
        self.tag_count = tag_count
        vfm = getattr(model, "vfm", None)
        #: the dense encoder served (and its second model), shown on the page
        self.encoder_name = model.encoder + (f" with {vfm.name}" if vfm is not None else "")
        self.baseline_name = ("CLIP surgery (untrained)" if model.encoder == "surgery"
                              else f"{model.encoder} (untrained)")

    def run(self, image: np.ndarray | str | UnreadableUpload | None, queries: str, background: bool = True,
            bg_thresh: float = 0.4, clip_w: float = 0.3, slide: bool = True, pamr: bool = False,
            compare_clip: bool = True) -> DemoResult:
        """``image``: an RGB array, or the path of an uploaded file, decoded by :mod:`tagalign.data.decode`."""
        result = DemoResult()
        if image is None:
            result.status = "Upload an image (JPEG, PNG, ...) first."
            return result
        if isinstance(image, UnreadableUpload):
            result.status = f"Could not read this image: {image.reason}. Upload a JPEG, PNG, WebP, TIFF or BMP file."
            return result
        if isinstance(image, str | os.PathLike):
            try:
                image = read_upload(image)
            except (ImageDecodeError, OSError) as err:
                result.status = f"Could not read this image: {err}"
                return result
        lines = [line for line in (queries or "").splitlines() if line.strip()]
        if not lines:
            result.status = "Type at least one query, one per line (commas list synonyms of one class)."
            return result
        if len(lines) > MAX_QUERIES:
            result.status = f"{len(lines)} queries: at most {MAX_QUERIES} per request."
            return result
        try:
            classes = parse_texts(lines)
        except ValueError as err:
            result.status = f"Queries: {err}."
            return result
        texts = sum(len(synonyms) for synonyms in classes)
        if texts > MAX_QUERIES:
            result.status = (f"{texts} texts to encode (queries and their synonyms): at most {MAX_QUERIES} per "
                             f"request.")
            return result
        image = self._fit(np.asarray(image), result.notes)
        start, misses = time.perf_counter(), self.cache.misses
        options = dict(background=background, slide=slide, bg_thresh=bg_thresh, clip_w=clip_w,
                       inference=dict(pamr=pamr))
        try:
            segmented = segment(self.model, image, lines, **options)
            maps = [segmented.probabilities]
            rows = ["TagAlign"]
            if compare_clip:
                maps.append(segment(self.baseline, image, lines, **options).probabilities)
                rows.append(self.baseline_name)
            if self.vocab is not None:
                tags = tag(self.model, image, top_k=self.tag_count, vocab=self.vocab)
                result.tags = "Top tags: " + ", ".join(f"{name} ({score:.2f})" for name, score in tags)
        except ValueError as err:
            result.status = f"Could not segment this image: {err}"
            return result
        seconds = time.perf_counter() - start
        names = segmented.names
        result.overlay = np.asarray(overlay(image, segmented.labels, names))
        shown = len(classes) if len(classes) <= MAX_HEATMAPS else MAX_HEATMAPS
        if shown < len(classes):
            result.notes.append(f"heatmaps of the first {MAX_HEATMAPS} of {len(classes)} queries")
        probs = np.stack(maps)[:, :shown]
        result.heatmaps = np.asarray(heatmap_grid(image, probs, segmented.classes[:shown], rows=rows))
        result.legend = _legend(names, segmented.areas)
        reused = self.cache.misses == misses
        result.status = (f"Segmented {len(classes)} quer{'y' if len(classes) == 1 else 'ies'} in {seconds:.2f} s "
                         f"(image features {'reused' if reused else 'computed'})."
                         + "".join(f" Note: {note}." for note in result.notes))
        return result

    @staticmethod
    def _fit(image: np.ndarray, notes: list[str]) -> np.ndarray:
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        image = np.ascontiguousarray(image[..., :3]).astype(np.uint8)
        height, width = image.shape[:2]
        if max(height, width) > MAX_SIDE:
            pil = Image.fromarray(image)
            pil.thumbnail((MAX_SIDE, MAX_SIDE), Image.BILINEAR)
            image = np.asarray(pil)
            notes.append(f"the image was downscaled from {width}x{height} to {image.shape[1]}x{image.shape[0]}")
        return image


def read_upload(path: str | os.PathLike) -> np.ndarray:
    """An uploaded file as RGB uint8 by :mod:`tagalign.data.decode`'s rules; errors never show the server's path."""
    return decode_bytes(Path(path).read_bytes(), source="the uploaded image")


def _legend(names: Sequence[str], areas: dict[str, float]) -> str:
    """HTML legend: the overlay's colour of each query and the share of the image it covers."""
    colours = class_colours(len(names))
    items = []
    for index, name in enumerate(names):
        if name == "background":
            continue
        r, g, b = (int(c) for c in colours[index])
        items.append(f'<li class="legend-item"><span style="display:inline-block;width:1em;height:1em;'
                     f'background:rgb({r},{g},{b});border:1px solid #000"></span> '
                     f'<span class="legend-name">{html.escape(name)}</span>: {100 * areas[name]:.1f}%</li>')
    return '<ul class="legend" style="list-style:none;padding:0">' + "".join(items) + "</ul>"


def _tolerant_upload(component):
    """Make ``component`` (a ``gr.Image``) hand a failed decode to :meth:`SegmentationDemo.run` as an
    :class:`UnreadableUpload` instead of raising the framework's raw error, which names server paths and internals."""
    preprocess = component.preprocess

    def tolerant(payload):
        try:
            return preprocess(payload)
        except Exception as err:  # noqa: BLE001  (any decoder failure becomes a message on the page)
            return UnreadableUpload(f"not a readable image file ({type(err).__name__})")

    component.preprocess = tolerant
    return component


def build_app(demo: SegmentationDemo, examples: Sequence[str] = (), title: str = "tagalign"):
    """The Gradio page: inputs (image, queries, options) on the left, results on the right; requests are queued."""
    import gradio as gr

    with gr.Blocks(title=title) as app:
        gr.Markdown(f"# {title}: segment and tag your own images\nOne query per line; commas list synonyms of one "
                    f"class (`tv, monitor`). The bottom row of the heatmaps is the untrained baseline on the same "
                    f"encoder.")
        gr.Markdown(f"Dense encoder: `{demo.encoder_name}` (`tools/app.py --encoder`; docs/encoders.md)",
                    elem_id="encoder")
        with gr.Row():
            with gr.Column():
                image = _tolerant_upload(gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"],
                                                  elem_id="image"))
                queries = gr.Textbox(lines=4, label="Queries (one per line)", elem_id="queries",
                                     placeholder="red square\nblue circle")
                with gr.Accordion("Options", open=False):
                    background = gr.Checkbox(True, label="background (pixels where every query is below threshold)",
                                             elem_id="background")
                    bg_thresh = gr.Slider(0.0, 1.0, 0.4, step=0.01, label="background threshold (bg_thresh)")
                    clip_w = gr.Slider(0.0, 1.0, 0.3, step=0.05, label="CLIP branch weight (clip_w)")
                    mode = gr.Radio(["slide", "whole"], value="slide", label="inference")
                    pamr = gr.Checkbox(False, label="PAMR post-processing")
                    compare = gr.Checkbox(True, label=f"compare with the untrained baseline ({demo.baseline_name})")
                submit = gr.Button("Segment", variant="primary", elem_id="submit")
                if examples:
                    gr.Examples([[path] for path in examples], inputs=[image], label="Examples (generated world)")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                result = gr.Image(label="Overlay", elem_id="overlay", interactive=False, format="png")
                legend = gr.HTML(elem_id="legend")
                tags = gr.Markdown(elem_id="tags")
                heatmaps = gr.Image(label="Heatmaps", elem_id="heatmaps", interactive=False, format="png")

        def respond(img, text, bg, thresh, weight, inference, post, compare_clip):
            out = demo.run(img, text, bg, thresh, weight, inference == "slide", post, compare_clip)
            return out.status, out.overlay, out.legend, out.tags, out.heatmaps

        submit.click(respond, [image, queries, background, bg_thresh, clip_w, mode, pamr, compare],
                     [status, result, legend, tags, heatmaps], concurrency_limit=1)
    app.queue(max_size=32)
    return app
