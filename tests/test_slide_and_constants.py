"""Slide inference against mmseg's own ``slide_inference``, and every protocol constant pinned to reference spec §6."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tagalign.models import TagAlign
from tagalign.segmentation.inference import InferenceConfig, predict_probabilities


@pytest.fixture(scope="module")
def model(tiny_clip):
    torch.manual_seed(5)
    model = TagAlign(tiny_clip).eval()
    with torch.no_grad():
        for unit in model.projector.units:
            unit.gate.fill_(0.7)
    return model


@pytest.mark.parametrize("size,crop,stride", [((748, 1000), 448, 224), ((500, 700), 320, 160), ((700, 470), 448, 224)])
def test_slide_equals_mmseg_slide_inference(model, size, crop, stride):
    """Windows where both crop and stride matter (several rows and columns, the last ones clipped to the edge)."""
    from mmseg.models.segmentors import EncoderDecoder

    torch.manual_seed(6)
    image = torch.randn(1, 3, *size)
    texts = torch.randn(4, 64)
    config = InferenceConfig(crop=crop, stride=stride, crop_batch=3)
    ours = predict_probabilities(model, image, texts, True, config)

    def per_window(crop_image, metas):  # one window as the reference scores it: masks + constant background
        masks = model.masks(crop_image, texts, clip_w=0.3, scale=10.0, bias=-2.5)
        return torch.cat([torch.full_like(masks[:, :1], 0.4), masks], dim=1)

    mmseg_self = SimpleNamespace(test_cfg=SimpleNamespace(stride=(stride, stride), crop_size=(crop, crop)),
                                 out_channels=5, encode_decode=per_window)
    theirs = EncoderDecoder.slide_inference(mmseg_self, image, [{}])
    assert ours.shape == theirs.shape == (1, 5, *size)
    assert (ours - theirs).abs().max().item() <= 1e-5
    shifted = predict_probabilities(model, image, texts, True, InferenceConfig(crop=crop, stride=stride + 32))
    assert (shifted - theirs).abs().max().item() > 1e-3  # the stride matters at these sizes


def test_protocol_constants_are_the_reference_ones():
    """Reference spec §6: every constant of the evaluation protocol, literally."""
    from tagalign.data import transforms
    from tagalign.models.clip import DEFAULT_TEMPLATES
    from tagalign.segmentation import evaluate
    from tagalign.tags.embed import TAG_TEMPLATES

    config = InferenceConfig()
    assert (config.mode, config.crop, config.stride) == ("slide", 448, 224)
    assert (config.clip_w, config.scale, config.bias, config.bg_thresh) == (0.3, 10.0, -2.5, 0.4)
    assert (config.precision, config.pamr) == ("fp32", False)
    assert DEFAULT_TEMPLATES == ("a photo of a {}.",) and TAG_TEMPLATES == ("a photo of a {}.",)
    assert evaluate.IMAGENET_MEAN_255 == [123.675, 116.28, 103.53]
    assert evaluate.IMAGENET_STD_255 == [58.395, 57.12, 57.375]
    assert transforms.IMAGENET_MEAN == (0.485, 0.456, 0.406) and transforms.IMAGENET_STD == (0.229, 0.224, 0.225)


# key: (dataset type, classes, first class, last class, reduce_zero_label, ignore, short, long, image dir, label dir)
SPEC_6_3 = {
    "voc": ("PascalVOCDataset", 21, "background", "tvmonitor", False, 255, 448, 2048, "JPEGImages",
            "SegmentationClass"),
    "voc20": ("PascalVOC20Dataset", 20, "aeroplane", "tvmonitor", True, 255, 448, 2048, "JPEGImages",
              "SegmentationClass"),
    "context": ("PascalContextDataset", 60, "background", "wood", False, 255, 448, 2048, "JPEGImages",
                "SegmentationClassContext"),
    "context59": ("PascalContextDataset59", 59, "aeroplane", "wood", True, 255, 448, 2048, "JPEGImages",
                  "SegmentationClassContext"),
    "coco_object": ("COCOObjectDataset", 81, "background", "toothbrush", False, 255, 448, 2048, "images/val2017",
                    "annotations/val2017"),
    "coco_stuff": ("COCOStuffDataset", 171, "person", "wood", False, 255, 448, 2048, "images/val2017",
                   "annotations/val2017"),
    "cityscapes": ("CityscapesDataset", 19, "road", "bicycle", False, 255, 448, 2048, "leftImg8bit/val",
                   "gtFine/val"),
    "ade20k": ("ADE20KDataset", 150, "wall", "flag", True, 255, 448, 2048, "images/validation",
               "annotations/validation"),
    "imagenets50": ("ImageNetS50Dataset", 51, "background", None, False, 1000, 448, 2048, "validation",
                    "validation-segmentation"),
    "imagenets300": ("ImageNetS300Dataset", 301, "background", None, False, 1000, 448, 2048, "validation",
                     "validation-segmentation"),
    "imagenets919": ("ImageNetS919Dataset", 920, "background", None, False, 1000, 256, 1024, "validation",
                     "validation-segmentation"),
}


@pytest.mark.parametrize("key", list(SPEC_6_3))
def test_dataset_protocol_is_pinned(key, tmp_path):
    from mmseg.registry import DATASETS

    import tagalign.segmentation.datasets  # noqa: F401  (registers)
    from tagalign.segmentation.benchmarks import BENCHMARKS
    from tagalign.segmentation.evaluate import WITH_BACKGROUND

    dataset_type, count, first, last, reduce_zero, ignore, short, long, images, labels = SPEC_6_3[key]
    spec = BENCHMARKS[key]
    assert (spec.dataset_type, spec.ignore_index, spec.short_side, spec.long_side) == (dataset_type, ignore, short,
                                                                                       long)
    assert (spec.img_path, spec.seg_map_path) == (images, labels)
    cls = DATASETS.get(dataset_type)
    classes = cls.METAINFO["classes"]
    assert len(classes) == count and classes[0] == first and (last is None or classes[-1] == last)
    assert (key in WITH_BACKGROUND) == (first == "background" and key != "imagenets919")
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()}
    assert defaults.get("reduce_zero_label", False) is reduce_zero
