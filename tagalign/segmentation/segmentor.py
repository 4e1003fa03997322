"""The mmseg segmentor wrapping a TagAlign model for the mmengine test loop (reference spec §6.4).

Two decodings, chosen by ``inference["protocol"]``: ``tagalign`` (per-window probabilities and a constant background
channel) and ``sclip`` (window-averaged cosines and a softmax over all queries), both in :mod:`.label_maps`. Class
names may carry synonyms; a class scores the max over its queries. The encoder runs once per image; the class maps
are then made a chunk of classes at a time within ``map_budget_mb`` (:mod:`.class_chunks`), and ``seg_logits`` are
kept only with ``keep_logits`` (``tools/test.py --save-logits``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.structures import PixelData
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from ..models.build import load_model as load
from ..models.clip import DEFAULT_TEMPLATES
from ..models.text import class_text_embeddings
from ..models.vfm import load_vfm
from .class_chunks import ClassChunk, bytes_per_query, class_max, plan_chunks
from .class_names import resolve_duplicates
from .inference import InferenceConfig, check_patch_grid, predict_probabilities
from .label_maps import sclip_labels, tagalign_labels
from .label_propagation import LabelPropagation
from .trident import Trident, TridentSettings
from .windows import WindowScores

__all__ = ["TagAlignSegmentor"]


@MODELS.register_module(force=True)
class TagAlignSegmentor(BaseSegmentor):
    """Zero-shot segmentor: class-name prompts against TagAlign's dense features.

    Args:
        class_names: the dataset's classes in label order, each a name or a list of synonyms. Under the
            ``tagalign`` protocol a class 0 named just ``"background"`` is not prompted but becomes the constant
            ``bg_thresh`` channel; under ``sclip`` every name is a query.
        checkpoint: a projector checkpoint; None evaluates the untrained projector (the encoder's training-free
            baseline).
        clip, pretrained: the CLIP to load (default: the checkpoint's, or OpenAI ViT-B/16).
        encoder, encoder_options: the dense encoder (default: the checkpoint's, else ``surgery``).
        vfm, vfm_weights: a VFM-guided encoder's second model and its weights (``tagalign.models.vfm.vfm_for``); it
            sees the windows re-normalised from the data preprocessor's statistics.
        templates: prompt templates (reference: the single "a photo of a {}.").
        normalize_each_template: L2-normalise each template's embedding before the mean (the SCLIP family).
        duplicate_names: ``drop_from_background`` or ``keep`` (see :func:`.class_names.resolve_duplicates`).
        has_background: whether class 0 is the dataset's background (default: its first name is "background").
        sam_weights: Trident's SAM ViT-B image encoder (``inference.trident``): a local file, ``tiny`` or None (the
            hub).
        lposs_vfm, lposs_vfm_weights: LPOSS's second model (``inference.lposs``; default DINO ViT-B/16 from the hub,
            weights a local file or ``tiny``), which sees the windows re-normalised like ``vfm``.
        inference: :class:`InferenceConfig` fields.
        descriptions: a RAM++ tag-description file; class names found in it are prompted with their description
            ensemble instead of the templates (docs/tagging.md).
        keep_logits: also keep each image's per-class maps (``seg_logits``, all classes at the original size);
            the metric needs only the labels.
    """

    def __init__(
        self,
        class_names: Sequence[str | Sequence[str]],
        checkpoint: str | None = None,
        clip: str | None = None,
        pretrained: str | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        inference: dict | None = None,
        encoder: str | None = None,
        encoder_options: dict | None = None,
        vfm: str | None = None,
        vfm_weights: str | None = None,
        lposs_vfm: str = "dino_vitb16",
        lposs_vfm_weights: str | None = None,
        sam_weights: str | None = None,
        normalize_each_template: bool = False,
        duplicate_names: str = "drop_from_background",
        has_background: bool | None = None,
        descriptions: str | None = None,
        keep_logits: bool = False,
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.tagalign = load(checkpoint, clip=clip, pretrained=pretrained, encoder=encoder,
                             encoder_options=encoder_options, vfm=vfm, vfm_weights=vfm_weights)
        if getattr(self.tagalign, "vfm", None) is not None and data_preprocessor:
            # the second model un-normalises windows with the statistics they were normalised with
            self.tagalign.vfm.input_statistics = tuple(tuple(v / 255 for v in data_preprocessor[key])
                                                       for key in ("mean", "std"))
        self.inference_cfg = InferenceConfig(**(inference or {}))
        # the pixel statistics the windows were normalised with, for the steps that read colours or re-normalise
        statistics = (tuple(tuple(v / 255 for v in data_preprocessor[key]) for key in ("mean", "std"))
                      if data_preprocessor else LabelPropagation().input_statistics)
        self.propagation = None
        if self.inference_cfg.lposs or self.inference_cfg.lposs_plus:
            second = None
            if self.inference_cfg.lposs:
                weights = lposs_vfm_weights
                second = (load_vfm(lposs_vfm, tiny=True) if weights == "tiny"
                          else load_vfm(lposs_vfm, pretrained=weights if weights else True))
            self.lposs_vfm = second  # a submodule: it moves to the device with the segmentor
            self.propagation = LabelPropagation(self.inference_cfg.lposs_settings(), second, statistics)
        self.trident = None
        if self.inference_cfg.trident:
            self.sam = (load_vfm("sam_vitb", tiny=True) if sam_weights == "tiny"
                        else load_vfm("sam_vitb", pretrained=sam_weights if sam_weights else True))
            self.trident = Trident(self.sam, TridentSettings(self.inference_cfg.trident_cos_fac,
                                                             self.inference_cfg.trident_refine_neg_cos), statistics)
        if getattr(self.tagalign, "patch_size", None):  # test doubles without a tower have none
            check_patch_grid(self.inference_cfg, self.tagalign.patch_size)
        groups = [[name] if isinstance(name, str) else list(name) for name in class_names]
        self.class_names = [names[0] for names in groups]
        self.with_background = self.inference_cfg.protocol == "tagalign" and groups[0] == ["background"]
        if has_background is None:
            has_background = self.class_names[0] == "background"
        groups = resolve_duplicates(groups, duplicate_names, background=has_background)
        prompted = groups[1:] if self.with_background else groups
        queries = [name for names in prompted for name in names]
        first = 1 if self.with_background else 0
        self.register_buffer("query_class", torch.tensor(
            [index for index, names in enumerate(prompted, start=first) for _ in names]), persistent=False)
        self.register_buffer("text_emb", class_text_embeddings(self.tagalign.clip, queries, templates, descriptions,
                                                               normalize_each_template), persistent=False)
        self.num_classes = self.out_channels = len(groups)
        self.align_corners = False
        self.keep_logits = keep_logits
        self._chunking_logged = False

    def _classes(self, query_probs: torch.Tensor) -> torch.Tensor:
        """Per-query probabilities (after the background channel, if any) -> per-class, max over synonyms."""
        first = 1 if self.with_background else 0
        per_class = class_max(query_probs[:, first:], self.query_class - first, self.num_classes - first)
        return torch.cat([query_probs[:, :first], per_class], dim=1)

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: list[dict] | None = None) -> torch.Tensor:
        """``[B, C, H, W]`` class probabilities at the input resolution (the ``tagalign`` protocol)."""
        return torch.cat([
            self._classes(predict_probabilities(self.tagalign, inputs[i : i + 1], self.text_emb,
                                                self.with_background, self.inference_cfg))
            for i in range(inputs.shape[0])
        ])

    def predict(self, inputs: torch.Tensor, data_samples=None):
        """Labels at each original image size (:mod:`.label_maps`), a chunk of classes at a time.

        Where the ground truth is larger than ``ori_shape`` (ImageNet-S images downsampled on load), the label map
        is then nearest-resized to the ground truth, as the reference does.
        """
        if data_samples is None:
            data_samples = [SegDataSample(metainfo=dict(ori_shape=tuple(inputs.shape[-2:]))) for _ in inputs]
        config = self.inference_cfg
        for i, sample in enumerate(data_samples):
            image = inputs[i : i + 1]
            size = tuple(sample.metainfo.get("ori_shape", image.shape[-2:]))[:2]
            scores = WindowScores(self.tagalign, image, self.text_emb, config, self.propagation, self.trident)
            chunks = self.chunks(tuple(image.shape[-2:]), size)
            if config.protocol == "sclip":
                labels, maps = sclip_labels(scores, chunks, self.query_class, self.num_classes, config, size,
                                            self.keep_logits)
            else:
                labels, maps = tagalign_labels(scores, chunks, self.query_class, self.with_background, config,
                                               sample.metainfo, self.keep_logits)
            gt_shape = tuple(sample.gt_sem_seg.data.shape[-2:]) if "gt_sem_seg" in sample else size
            if tuple(labels.shape[-2:]) != gt_shape:
                labels = F.interpolate(labels[None].float(), size=gt_shape, mode="nearest")[0].to(labels.dtype)
            sample.set_data({"pred_sem_seg": PixelData(data=labels)})
            if maps is not None:
                sample.set_data({"seg_logits": PixelData(data=maps)})
        return data_samples

    def chunks(self, input_size: tuple[int, int], output_size: tuple[int, int]) -> list[ClassChunk]:
        """The class chunks for one image, within ``map_budget_mb`` (all classes at once with ``keep_logits``)."""
        config = self.inference_cfg
        per_query = bytes_per_query(config, input_size, output_size)
        limit = len(self.query_class) if self.keep_logits else int(config.map_budget_mb * 2**20 // per_query)
        chunks = plan_chunks(self.query_class.tolist(), self.num_classes, max(limit, 1))
        if not self._chunking_logged:
            self._chunking_logged = True
            print_log(f"class maps: {len(self.query_class)} queries of {self.num_classes} classes in {len(chunks)} "
                      f"chunk(s) of up to {max(limit, 1)} queries (about {per_query / 2**20:.1f} MB per query at "
                      f"{input_size[0]}x{input_size[1]} -> {output_size[0]}x{output_size[1]}; map_budget_mb "
                      f"{config.map_budget_mb:g}, --map-budget-mb)", logger="current")
        return chunks

    def _forward(self, inputs, data_samples=None):
        return self.encode_decode(inputs)

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.tagalign.dense_features(inputs)

    def loss(self, inputs, data_samples):
        raise NotImplementedError("TagAlignSegmentor is for evaluation; train with tools/train.py")
