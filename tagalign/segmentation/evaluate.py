"""Run the zero-shot benchmarks through mmengine's Runner test loop and mmseg's datasets/metric."""

from __future__ import annotations

import json
import logging
import os
import pprint
import time
from dataclasses import asdict
from pathlib import Path

from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.runner import Runner

from ..atomic import atomic_write_text
from ..errors import MissingDatasetError
from ..models.templates import TEMPLATE_SETS
from . import datasets, hooks, large_vocab, metric, segmentor  # noqa: F401  (register modules)
from .benchmarks import (
    BENCHMARKS,
    EXTRA_BENCHMARKS,
    LARGE_BENCHMARKS,
    PAPER_MIOU,
    WITH_BACKGROUND,
    published_reference,
    resolve_data_root,
)
from .class_names import class_name_groups
from .inference import InferenceConfig
from .protocols import PRESETS, merge_settings, protocol_settings
from .resources import peak_memory_mb, reset_peak_memory

logger = logging.getLogger(__name__)

__all__ = ["build_test_config", "check_datasets", "evaluate", "evaluate_many", "format_table",
           "comparison_table", "resolve_settings", "run_settings"]

IMAGENET_MEAN_255 = [123.675, 116.28, 103.53]
IMAGENET_STD_255 = [58.395, 57.12, 57.375]


def _spec(key: str):
    specs = {**BENCHMARKS, **LARGE_BENCHMARKS, **EXTRA_BENCHMARKS}
    if key not in specs:
        raise KeyError(f"unknown dataset '{key}'; choose from {sorted(specs)}")
    return specs[key]


def resolve_settings(key: str, protocol: str = "tagalign", preset: str | None = None, overrides: dict | None = None,
                     device_has_cuda: bool | None = None) -> dict:
    """The evaluation settings of one dataset: protocol table, then preset, then ``overrides`` (CLI flags; nested
    ``inference`` fields merged one by one). The SCLIP family's fp16 applies on CUDA only, as the authors' OpenAI
    loader converts to fp32 on the CPU."""
    import torch
    from mmseg.registry import DATASETS

    classes = DATASETS.get(_spec(key).dataset_type).METAINFO["classes"]
    settings = protocol_settings(key, protocol, preset, with_background=classes[0] == "background")
    settings = merge_settings(settings, overrides or {})
    inference = settings["inference"]
    has_cuda = torch.cuda.is_available() if device_has_cuda is None else device_has_cuda
    if inference.get("precision") == "fp16" and not has_cuda and "precision" not in (overrides or {}).get(
            "inference", {}):
        inference["precision"] = "fp32"
    InferenceConfig(**inference)  # validate early, with a clear message
    return {"protocol": protocol, "preset": preset, **settings}


def build_test_config(
    key: str,
    data_root: str | os.PathLike | None = None,
    checkpoint: str | None = None,
    clip: str | None = None,
    pretrained: str | None = None,
    inference: dict | None = None,
    save_preds: str | os.PathLike | None = None,
    save_logits: str | os.PathLike | None = None,
    work_dir: str | os.PathLike = "work_dirs/test",
    launcher: str = "none",
    cfg_options: dict | None = None,
    norm: str | None = None,
    protocol: str = "tagalign",
    preset: str | None = None,
    encoder: str | None = None,
    encoder_options: dict | None = None,
    vfm: str | None = None,
    vfm_weights: str | None = None,
    lposs_vfm: str = "dino_vitb16",
    lposs_vfm_weights: str | None = None,
    sam_weights: str | None = None,
    overrides: dict | None = None,
    duplicate_names: str = "drop_from_background",
) -> Config:
    """The mmengine config of one benchmark under a protocol (spec §6.4; training-free spec §10): Resize(short S,
    long <= 2048) -> slide or whole -> IoU. ``inference`` and ``norm`` are overrides, like ``overrides``."""
    spec = _spec(key)
    root = resolve_data_root(spec, data_root)
    from mmseg.registry import DATASETS

    dataset_classes = list(DATASETS.get(spec.dataset_type).METAINFO["classes"])
    overrides = merge_settings(overrides or {}, {"inference": dict(inference or {})})
    if norm is not None:
        overrides["norm"] = norm
    settings = resolve_settings(key, protocol, preset, overrides)
    if encoder is None and preset is not None and checkpoint is None:
        encoder = PRESETS[preset][1]
    preset_options, preset_vfm = settings.pop("encoder_options", None), settings.pop("vfm", None)
    if checkpoint is None and preset is not None and encoder == PRESETS[preset][1]:
        if preset_options:
            encoder_options = {**preset_options, **(encoder_options or {})}  # the user's options over the preset's
        vfm = vfm or preset_vfm
    if encoder == "clip_surgery" and "feature_surgery" not in overrides["inference"]:
        settings["inference"]["feature_surgery"] = True  # the original method scores through its feature surgery
    settings["encoder"] = encoder
    settings["model"] = {"checkpoint": checkpoint, "clip": clip, "pretrained": pretrained,
                         "encoder_options": encoder_options, "duplicate_names": duplicate_names,
                         **({"vfm": vfm, "vfm_weights": vfm_weights} if vfm or vfm_weights else {})}
    lposs = settings["inference"].get("lposs")
    if lposs:  # the second model of LPOSS is part of what a result was computed with
        settings["model"].update(lposs_vfm=lposs_vfm, lposs_vfm_weights=lposs_vfm_weights)
    if settings["inference"].get("trident"):  # and Trident's SAM
        settings["model"].update(sam_weights=sam_weights)
    templates = settings["templates"]
    templates = list(TEMPLATE_SETS[templates]) if isinstance(templates, str) else list(templates)
    names = class_name_groups(key, settings["class_names"], dataset_classes)
    short_side = settings["short_side"] or spec.short_side
    cfg = dict(
        default_scope="mmseg",
        work_dir=str(work_dir),
        launcher=launcher,
        tagalign_settings=settings,
        model=dict(
            type="TagAlignSegmentor",
            class_names=names,
            checkpoint=checkpoint,
            clip=clip,
            pretrained=pretrained,
            encoder=encoder,
            encoder_options=encoder_options,
            vfm=vfm,
            vfm_weights=vfm_weights,
            **({"lposs_vfm": lposs_vfm, "lposs_vfm_weights": lposs_vfm_weights} if lposs else {}),
            **({"sam_weights": sam_weights} if settings["inference"].get("trident") else {}),
            templates=templates,
            normalize_each_template=settings["normalize_each_template"],
            duplicate_names=duplicate_names,
            has_background=dataset_classes[0] == "background",
            descriptions=settings.get("descriptions"),
            keep_logits=bool(save_logits),
            inference=dict(settings["inference"]),
            data_preprocessor=dict(type="SegDataPreProcessor", bgr_to_rgb=True,
                                   **_statistics_255(settings["norm"], clip, pretrained, checkpoint)),
        ),
        test_dataloader=dict(
            batch_size=1,
            num_workers=int(os.environ.get("TAGALIGN_EVAL_WORKERS", 2)),
            persistent_workers=False,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=dict(
                type=spec.dataset_type,
                serialize_data=False,  # a few thousand records: sharing them with workers is not worth a gc pass
                data_root=str(root),
                data_prefix=dict(img_path=spec.img_path, seg_map_path=spec.seg_map_path),
                ann_file=spec.ann_file,
                pipeline=[
                    dict(type=spec.load_image),
                    dict(type="Resize", scale=(spec.long_side, short_side), keep_ratio=True),
                    dict(type=spec.load_annotations),
                    dict(type="CheckSegMap", num_classes=len(dataset_classes), ignore_index=spec.ignore_index),
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
        custom_hooks=[dict(type=hook, out_dir=str(folder)) for hook, folder in
                      (("SavePredictionsHook", save_preds), ("SaveLogitsHook", save_logits)) if folder],
        log_level="INFO",
    )
    config = _EvalConfig(cfg)
    if cfg_options:
        config.merge_from_dict(cfg_options)
    return config


class _EvalConfig(Config):
    """An mmengine Config written out as plain ``key = value`` Python, once: a Runner formats its config four times
    (log, runtime info, two dumps) and mmengine's yapf formatting costs half a second per evaluation, more than a
    small benchmark's inference. The text loads back with ``Config.fromfile``."""

    @property
    def pretty_text(self) -> str:
        cached = self.__dict__.get("_plain_text")
        if cached is None:
            cached = "\n".join(f"{key} = {pprint.pformat(value, width=120, sort_dicts=False)}"
                               for key, value in self.to_dict().items()) + "\n"
            object.__setattr__(self, "_plain_text", cached)  # Config.__setattr__ would store it as a key
        return cached


def _statistics_255(norm: str, clip: str | None = None, pretrained: str | None = None,
                    checkpoint: str | None = None) -> dict:
    """Pixel mean/std on a 0-255 scale: a named set, or ``model``: the CLIP's own (``clip_normalization``; the CLIP
    a checkpoint names when ``clip`` is not given, else the default OpenAI ViT-B/16)."""
    if norm == "imagenet":
        return {"mean": IMAGENET_MEAN_255, "std": IMAGENET_STD_255}
    if norm == "model":
        from ..models.build import DEFAULT_CLIP, DEFAULT_PRETRAINED
        from ..models.checkpoint import read_checkpoint
        from ..models.clip import clip_normalization

        if clip is None and checkpoint is not None:
            saved = read_checkpoint(checkpoint)["clip"]
            clip, pretrained = saved["model_name"], pretrained if pretrained is not None else saved["pretrained"]
        elif clip is None:
            clip, pretrained = DEFAULT_CLIP, pretrained or DEFAULT_PRETRAINED
        mean, std = clip_normalization(clip, pretrained)
    else:
        from ..data.transforms import normalization

        mean, std = normalization(norm)
    return {"mean": [255 * m for m in mean], "std": [255 * s for s in std]}


def run_settings(config: Config) -> dict:
    """What a result was computed with (protocol, preset, encoder, model, every inference field), as stored in its
    JSON: a resumed run reuses a stored result only where this is equal."""
    settings = config.tagalign_settings.to_dict()
    settings["inference"] = asdict(InferenceConfig(**settings["inference"]))
    return json.loads(json.dumps(settings))


def evaluate(key: str, **kwargs) -> dict:
    """Evaluate one benchmark: dataset, mIoU, aAcc, classes, per_class_iou, num_images, inference, settings."""
    config = build_test_config(key, **kwargs)
    runner = Runner.from_cfg(config)
    reset_peak_memory()
    start = time.perf_counter()
    metrics = runner.test()
    elapsed = time.perf_counter() - start
    peak, peak_kind = peak_memory_mb()
    iou_metric = runner.test_evaluator.metrics[0]
    model = getattr(runner.model, "module", runner.model)
    settings = run_settings(config)
    return {
        "dataset": key,
        "encoder": getattr(model.tagalign, "encoder", config.tagalign_settings["encoder"]),
        "mIoU": metrics["mIoU"],
        "aAcc": float(metrics["aAcc"]),
        "classes": list(iou_metric.dataset_meta["classes"]),
        "per_class_iou": iou_metric.per_class_iou,
        "num_images": len(runner.test_dataloader.dataset),
        "seconds_per_image": elapsed / max(len(runner.test_dataloader.dataset), 1),
        "peak_memory_mb": peak,
        "peak_memory_kind": peak_kind,  # cuda: tensors on the GPU; rss: the process's resident memory
        "inference": settings["inference"],
        "settings": settings,
    }


def check_datasets(keys: list[str], data_root: str | os.PathLike | None) -> dict[str, Path]:
    """Where each requested dataset is; every missing one is named in a single error, before anything starts."""
    roots, problems = {}, []
    for key in keys:
        try:
            roots[key] = resolve_data_root(_spec(key), data_root)
        except MissingDatasetError as err:
            problems.append(str(err))
    if problems:
        raise MissingDatasetError(f"{len(problems)} of {len(keys)} datasets are missing:\n" + "\n".join(problems))
    return roots


def evaluate_many(keys: list[str], out: str | os.PathLike | None = None, save_preds: str | os.PathLike | None = None,
                  work_dir: str | os.PathLike = "work_dirs/test", previous: dict[str, dict] | None = None,
                  save_logits: str | os.PathLike | None = None, **kwargs) -> dict[str, dict]:
    """Evaluate several benchmarks after checking they are all present; ``out`` is rewritten after each one, so a
    failure later loses nothing that finished. A result in ``previous`` (an earlier run's JSON) is reused where its
    settings equal this run's (and predictions are not being saved)."""
    for key, root in check_datasets(keys, kwargs.get("data_root")).items():
        print(f"{key}: data from {root}")
    results: dict[str, dict] = {}
    for key in keys:
        stored = (previous or {}).get(key)
        preds = Path(save_preds) / key if save_preds else None
        logits = Path(save_logits) / key if save_logits else None
        reusable = stored and not preds and not logits
        if reusable and stored.get("settings") == run_settings(build_test_config(key, **kwargs)):
            results[key] = stored
            print(f"{key}: mIoU {stored['mIoU']:.2f} reused from the earlier run (same settings)")
        else:
            results[key] = evaluate(key, save_preds=preds, save_logits=logits, work_dir=Path(work_dir) / key,
                                    **kwargs)
            if is_main_process():
                print(f"{key}: mIoU {results[key]['mIoU']:.2f} over {results[key]['num_images']} images")
            if out:  # one writer under torchrun; every rank holds the same (broadcast) metrics
                write_json(results, out)
    return results


def format_table(results: dict[str, dict], reference: tuple[str, dict[str, float]] | None = ("TagAlign paper Table 1",
                                                                                          PAPER_MIOU)) -> str:
    """Paper-style table: with-background and without-background groups, ours beside the published number
    (``reference``: (source, numbers); averages over the datasets both have)."""
    source, published = reference or ("nothing published", {})
    grouped = [k for k in PAPER_MIOU]
    lines = [f"published: {source}", f"{'dataset':<14}{'ours':>8}{'published':>11}"]
    for key in results:
        if key not in grouped:
            lines.append(f"{key:<14}{results[key]['mIoU']:>8.2f}{'-':>11}")
    for group, keys in (("with background", WITH_BACKGROUND),
                        ("without background", [k for k in grouped if k not in WITH_BACKGROUND])):
        present = [k for k in keys if k in results]
        if not present:
            continue
        lines.append(f"-- {group}")
        for key in present:
            value = f"{published[key]:.2f}" if key in published else "-"
            lines.append(f"{key:<14}{results[key]['mIoU']:>8.2f}{value:>11}")
        ours = sum(results[k]["mIoU"] for k in present) / len(present)
        both = [k for k in present if k in published]
        paper = f"{sum(published[k] for k in both) / len(both):.2f}" if both else "-"
        lines.append(f"{'average':<14}{ours:>8.2f}{paper:>11}" + (
            f"  (published over {len(both)} of {len(present)})" if both and len(both) < len(present) else ""))
    return "\n".join(lines)


def comparison_table(results: dict[str, dict[str, dict]], skipped: dict[str, str] | None = None) -> str:
    """Markdown: one row per encoder, one column per dataset (mIoU), the encoder's published number in brackets,
    then the time per image and the peak memory; ``skipped`` encoders (not defined on the tower) get a row that
    says why."""
    keys = list(dict.fromkeys(key for per_dataset in results.values() for key in per_dataset))
    lines = ["| encoder | " + " | ".join(keys) + " | average | s/image | peak MB |", "|---" * (len(keys) + 4) + "|"]
    for encoder, per_dataset in results.items():
        first = next(iter(per_dataset.values()))
        reference = published_reference(encoder, trained=False,
                                        pamr=any(r["inference"]["pamr"] for r in per_dataset.values()),
                                        encoder_options=first.get("settings", {}).get("model", {}).get(
                                            "encoder_options"))
        published = reference[1] if reference else {}
        cells = []
        for key in keys:
            if key not in per_dataset:
                cells.append("-")
                continue
            cell = f"{per_dataset[key]['mIoU']:.2f}"
            cells.append(cell + (f" ({published[key]:.1f})" if key in published else ""))
        average = sum(r["mIoU"] for r in per_dataset.values()) / len(per_dataset)
        seconds = sum(r.get("seconds_per_image", 0.0) * r["num_images"] for r in per_dataset.values()) / max(
            sum(r["num_images"] for r in per_dataset.values()), 1)
        peak = max(r.get("peak_memory_mb", 0.0) for r in per_dataset.values())
        lines.append(f"| {encoder} | " + " | ".join(cells) + f" | {average:.2f} | {seconds:.3f} | {peak:,.0f} |")
    for encoder, reason in (skipped or {}).items():
        lines.append(f"| {encoder} | " + " | ".join("-" for _ in keys) + f" | not run: {reason} | - | - |")
    kinds = {r.get("peak_memory_kind", "rss") for per_dataset in results.values() for r in per_dataset.values()}
    lines.append("")
    lines.append("mIoU on this run; in brackets the method's published ViT-B/16 number (training-free spec §9), "
                 "where one exists. s/image: evaluation time per image over all datasets (loading included); "
                 f"peak MB: the largest peak of any dataset ({' and '.join(sorted(kinds))}: "
                 "cuda = GPU tensors, rss = the process's resident memory).")
    return "\n".join(lines)


def write_json(results: dict, path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(results, indent=2, allow_nan=False))  # a NaN is a bug: fail, never write it
