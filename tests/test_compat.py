"""mmseg 1.2.2 on mmcv-lite: datasets, transforms and IoUMetric import, and an mmengine Runner test loop runs."""

from __future__ import annotations

import sys

import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image
from voc_layout import PALETTE, write_voc

from tagalign import compat


def test_stub_is_installed_only_without_compiled_ops():
    import mmcv

    ext = sys.modules["mmcv._ext"]
    assert (type(ext).__name__ == "_MissingCompiledOps") == compat.MMCV_OPS_STUBBED
    assert ext.__spec__.name == "mmcv._ext" and mmcv.__version__ == "2.1.0"
    if compat.MMCV_OPS_STUBBED:
        try:
            ext.nms_impl()
        except NotImplementedError as err:
            assert "nms_impl" in str(err)
        else:
            raise AssertionError("stubbed op must raise")


def test_mmseg_datasets_transforms_and_metric_import():
    from mmseg.datasets import ADE20KDataset, CityscapesDataset, PascalVOCDataset  # noqa: F401
    from mmseg.datasets.transforms import LoadAnnotations, PackSegInputs  # noqa: F401
    from mmseg.evaluation import IoUMetric  # noqa: F401
    from mmseg.models.segmentors import BaseSegmentor  # noqa: F401


def _colour_segmentor_class():
    from mmseg.models.segmentors import BaseSegmentor
    from mmseg.registry import MODELS

    @MODELS.register_module(name="ColourRuleSegmentor", force=True)
    class ColourRuleSegmentor(BaseSegmentor):
        """Labels each pixel with the nearest palette colour (optionally permuted), through mmseg's postprocess."""

        def __init__(self, permute: bool = False, data_preprocessor=None):
            super().__init__(data_preprocessor=data_preprocessor)
            self.palette = torch.tensor(PALETTE, dtype=torch.float32)
            self.order = [0, 2, 3, 4, 1] if permute else list(range(len(PALETTE)))
            self.align_corners = False

        def predict(self, inputs, data_samples=None):
            dist = (inputs[:, :, None] - self.palette.t()[None, :, :, None, None]).square().sum(1)
            return self.postprocess_result(-dist[:, self.order], data_samples)

        def _forward(self, inputs, data_samples=None):
            raise NotImplementedError

        def loss(self, inputs, data_samples):
            raise NotImplementedError

        def encode_decode(self, inputs, batch_data_samples):
            raise NotImplementedError

        def extract_feat(self, inputs):
            raise NotImplementedError

    return ColourRuleSegmentor


def _run(tmp_path, permute: bool) -> dict:
    _colour_segmentor_class()
    root = tmp_path / "VOC2012"
    if not root.exists():
        write_voc(root)
    cfg = Config(
        dict(
            default_scope="mmseg",
            work_dir=str(tmp_path / f"work_{permute}"),
            model=dict(
                type="ColourRuleSegmentor",
                permute=permute,
                data_preprocessor=dict(type="SegDataPreProcessor", mean=[0, 0, 0], std=[1, 1, 1], bgr_to_rgb=True),
            ),
            test_dataloader=dict(
                batch_size=1,
                num_workers=0,
                persistent_workers=False,
                sampler=dict(type="DefaultSampler", shuffle=False),
                dataset=dict(
                    type="PascalVOCDataset",
                    data_root=str(root),
                    data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"),
                    ann_file="ImageSets/Segmentation/val.txt",
                    pipeline=[
                        dict(type="LoadImageFromFile"),
                        dict(type="Resize", scale=(2048, 448), keep_ratio=True),
                        dict(type="LoadAnnotations"),
                        dict(type="PackSegInputs"),
                    ],
                ),
            ),
            test_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU"]),
            test_cfg=dict(type="TestLoop"),
            env_cfg=dict(dist_cfg=dict(backend="gloo")),
            default_hooks=dict(logger=dict(type="LoggerHook", interval=1)),
            log_level="WARNING",
        )
    )
    return Runner.from_cfg(cfg).test()


def test_runner_test_loop_scores_a_colour_rule(tmp_path):
    metrics = _run(tmp_path, permute=False)
    assert metrics["mIoU"] > 95.0  # colours map to classes; JPEG + resizing blur only the block borders
    permuted = _run(tmp_path, permute=True)
    # foreground labels are rotated: only background can still be right
    assert permuted["mIoU"] < 25.0
    label = np.array(Image.open(next((tmp_path / "VOC2012/SegmentationClass").glob("*.png"))))
    assert set(np.unique(label)) >= {0, 1, 2, 3, 4, 255}
