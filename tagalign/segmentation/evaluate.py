"""Run the zero-shot benchmarks through mmengine's Runner test loop and mmseg's datasets/metric."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.runner import Runner

from . import datasets, hooks, metric, segmentor  # noqa: F401  (register modules)
from .benchmarks import (
    BENCHMARKS,
    EXTRA_BENCHMARKS,
    PAPER_MIOU,
    WITH_BACKGROUND,
    MissingDatasetError,
    resolve_data_root,
)
from .inference import InferenceConfig

logger = logging.getLogger(__name__)

__all__ = ["build_test_config", "check_datasets", "evaluate", "evaluate_many", "format_table"]

IMAGENET_MEAN_255 = [123.675, 116.28, 103.53]
IMAGENET_STD_255 = [58.395, 57.12, 57.375]


def build_test_config(
    key: str,
    data_root: str | os.PathLike | None = None,
    checkpoint: str | None = None,
    clip: str | None = None,
    pretrained: str | None = None,
    inference: dict | None = None,
    save_preds: str | os.PathLike | None = None,
    work_dir: str | os.PathLike = "work_dirs/test",
    launcher: str = "none",
    cfg_options: dict | None = None,
    norm: str = "imagenet",
) -> Config:
    """The mmengine config of one benchmark (spec §6.4): Resize(short 448, long <= 2048) -> slide -> IoU."""
    specs = {**BENCHMARKS, **EXTRA_BENCHMARKS}
    if key not in specs:
        raise KeyError(f"unknown dataset '{key}'; choose from {sorted(specs)}")
    spec = specs[key]
    root = resolve_data_root(spec, data_root)
    from mmseg.registry import DATASETS

    class_names = DATASETS.get(spec.dataset_type).METAINFO["classes"]
    InferenceConfig(**(inference or {}))  # validate early, with a clear message
    cfg = dict(
        default_scope="mmseg",
        work_dir=str(work_dir),
        launcher=launcher,
        model=dict(
            type="TagAlignSegmentor",
            class_names=list(class_names),
            checkpoint=checkpoint,
            clip=clip,
            pretrained=pretrained,
            inference=dict(inference or {}),
            data_preprocessor=dict(type="SegDataPreProcessor", bgr_to_rgb=True, **_statistics_255(norm)),
        ),
        test_dataloader=dict(
            batch_size=1,
            num_workers=int(os.environ.get("TAGALIGN_EVAL_WORKERS", 2)),
            persistent_workers=False,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=dict(
                type=spec.dataset_type,
                data_root=str(root),
                data_prefix=dict(img_path=spec.img_path, seg_map_path=spec.seg_map_path),
                ann_file=spec.ann_file,
                pipeline=[
                    dict(type=spec.load_image),
                    dict(type="Resize", scale=(spec.long_side, spec.short_side), keep_ratio=True),
                    dict(type=spec.load_annotations),
                    dict(type="CheckSegMap", num_classes=len(class_names), ignore_index=spec.ignore_index),
                    dict(type="PackSegInputs"),
                ],
            ),
        ),
        test_evaluator=dict(type="ZeroShotIoUMetric", ignore_index=spec.ignore_index),
        test_cfg=dict(type="TestLoop"),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend="nccl" if launcher != "none" else "gloo")),
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=50),
        ),
        custom_hooks=[dict(type="SavePredictionsHook", out_dir=str(save_preds))] if save_preds else [],
        log_level="INFO",
    )
    config = Config(cfg)
    if cfg_options:
        config.merge_from_dict(cfg_options)
    return config


def _statistics_255(norm: str) -> dict:
    if norm == "imagenet":
        return {"mean": IMAGENET_MEAN_255, "std": IMAGENET_STD_255}
    from ..data.transforms import normalization

    mean, std = normalization(norm)
    return {"mean": [255 * m for m in mean], "std": [255 * s for s in std]}


def evaluate(key: str, **kwargs) -> dict:
    """Evaluate one benchmark: dataset, mIoU, aAcc, classes, per_class_iou, num_images, inference."""
    config = build_test_config(key, **kwargs)
    runner = Runner.from_cfg(config)
    metrics = runner.test()
    iou_metric = runner.test_evaluator.metrics[0]
    return {
        "dataset": key,
        "mIoU": metrics["mIoU"],
        "aAcc": float(metrics["aAcc"]),
        "classes": list(iou_metric.dataset_meta["classes"]),
        "per_class_iou": iou_metric.per_class_iou,
        "num_images": len(runner.test_dataloader.dataset),
        "inference": asdict(InferenceConfig(**(kwargs.get("inference") or {}))),
    }


def check_datasets(keys: list[str], data_root: str | os.PathLike | None) -> dict[str, Path]:
    """Where each requested dataset is; every missing one is named in a single error, before anything starts."""
    specs = {**BENCHMARKS, **EXTRA_BENCHMARKS}
    roots, problems = {}, []
    for key in keys:
        try:
            roots[key] = resolve_data_root(specs[key], data_root)
        except MissingDatasetError as err:
            problems.append(str(err))
    if problems:
        raise MissingDatasetError(f"{len(problems)} of {len(keys)} datasets are missing:\n" + "\n".join(problems))
    return roots


def evaluate_many(keys: list[str], out: str | os.PathLike | None = None, save_preds: str | os.PathLike | None = None,
                  work_dir: str | os.PathLike = "work_dirs/test", **kwargs) -> dict[str, dict]:
    """Evaluate several benchmarks after checking they are all present; ``out`` is rewritten after each one, so a
    failure later loses nothing that finished."""
    for key, root in check_datasets(keys, kwargs.get("data_root")).items():
        print(f"{key}: data from {root}")
    results: dict[str, dict] = {}
    for key in keys:
        results[key] = evaluate(key, save_preds=Path(save_preds) / key if save_preds else None,
                                work_dir=Path(work_dir) / key, **kwargs)
        if is_main_process():
            print(f"{key}: mIoU {results[key]['mIoU']:.2f} over {results[key]['num_images']} images")
            if out:  # one writer under torchrun; every rank holds the same (broadcast) metrics
                write_json(results, out)
    return results


def format_table(results: dict[str, dict]) -> str:
    """Paper-style table: with-background and without-background groups, ours beside the paper's number."""
    lines = [f"{'dataset':<14}{'ours':>8}{'paper':>8}"]
    for key in results:
        if key not in PAPER_MIOU:
            lines.append(f"{key:<14}{results[key]['mIoU']:>8.2f}{'-':>8}")
    for group, keys in (("with background", WITH_BACKGROUND),
                        ("without background", [k for k in PAPER_MIOU if k not in WITH_BACKGROUND])):
        present = [k for k in keys if k in results]
        if not present:
            continue
        lines.append(f"-- {group}")
        for key in present:
            lines.append(f"{key:<14}{results[key]['mIoU']:>8.2f}{PAPER_MIOU[key]:>8.1f}")
        ours = sum(results[k]["mIoU"] for k in present) / len(present)
        paper = sum(PAPER_MIOU[k] for k in present) / len(present)
        lines.append(f"{'average':<14}{ours:>8.2f}{paper:>8.1f}")
    return "\n".join(lines)


def write_json(results: dict, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, path)
