"""The mmseg segmentor wrapping a TagAlign model for the mmengine test loop (reference spec §6.4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS

from ..api import load
from ..models.clip import DEFAULT_TEMPLATES, encode_texts
from .inference import InferenceConfig, predict_probabilities

__all__ = ["TagAlignSegmentor"]


@MODELS.register_module(force=True)
class TagAlignSegmentor(BaseSegmentor):
    """Zero-shot segmentor: class-name prompts against TagAlign's dense features.

    Args:
        class_names: the dataset's class names, used verbatim in the prompts; a leading ``"background"`` is not
            prompted but becomes the constant ``bg_thresh`` channel.
        checkpoint: a projector checkpoint; None evaluates the untrained projector (the CLIP-surgery baseline).
        clip, pretrained: the CLIP to load (default: the checkpoint's, or OpenAI ViT-B/16).
        templates: prompt templates (reference: the single "a photo of a {}.").
        inference: :class:`InferenceConfig` fields (mode, crop, stride, crop_batch, clip_w, scale, bias,
            bg_thresh, precision).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        checkpoint: str | None = None,
        clip: str | None = None,
        pretrained: str | None = None,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        inference: dict | None = None,
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.tagalign = load(checkpoint, clip=clip, pretrained=pretrained)
        self.class_names = list(class_names)
        self.with_background = self.class_names[0] == "background"
        prompted = self.class_names[1:] if self.with_background else self.class_names
        self.register_buffer("text_emb", encode_texts(self.tagalign.clip, prompted, templates), persistent=False)
        self.inference_cfg = InferenceConfig(**(inference or {}))
        self.num_classes = self.out_channels = len(self.class_names)
        self.align_corners = False

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: list[dict] | None = None) -> torch.Tensor:
        """``[B, C, H, W]`` class probabilities at the input resolution."""
        return torch.cat(
            [
                predict_probabilities(
                    self.tagalign, inputs[i : i + 1], self.text_emb, self.with_background, self.inference_cfg
                )
                for i in range(inputs.shape[0])
            ]
        )

    def predict(self, inputs: torch.Tensor, data_samples=None):
        """Probabilities resized to each original image (bilinear) and argmaxed by mmseg's postprocess.

        Where the ground truth is larger than ``ori_shape`` (ImageNet-S images downsampled on load), the label map
        is then nearest-resized to the ground truth, as the reference does.
        """
        samples = self.postprocess_result(self.encode_decode(inputs), data_samples)
        for sample in samples:
            if "gt_sem_seg" not in sample:
                continue
            gt_shape = tuple(sample.gt_sem_seg.data.shape[-2:])
            pred = sample.pred_sem_seg.data
            if tuple(pred.shape[-2:]) != gt_shape:
                resized = F.interpolate(pred[None].float(), size=gt_shape, mode="nearest")[0].to(pred.dtype)
                sample.set_data({"pred_sem_seg": PixelData(data=resized)})
        return samples

    def _forward(self, inputs, data_samples=None):
        return self.encode_decode(inputs)

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.tagalign.dense_features(inputs)

    def loss(self, inputs, data_samples):
        raise NotImplementedError("TagAlignSegmentor is for evaluation; train with tools/train.py")
