"""Training hooks: skipped-sample counts and throughput in the log; CLIP identity checks; tagalign checkpoints."""

from __future__ import annotations

import time
from pathlib import Path

from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..models.checkpoint import save_checkpoint
from ..models.clip import clip_identity

__all__ = ["ExportTagAlignCheckpointHook", "TrainingStatsHook"]


def _inner(runner):
    model = runner.model
    return getattr(model, "module", model).tagalign


@HOOKS.register_module(force=True)
class TrainingStatsHook(Hook):
    """Logs samples/s and the running totals of skipped samples (corrupt images, samples without labels, CJK
    captions when ``skip_cjk`` is on)."""

    priority = "BELOW_NORMAL"

    def __init__(self) -> None:
        self.totals = {"skipped_corrupt": 0, "skipped_unlabelled": 0, "skipped_cjk": 0}
        self._last = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        import torch

        counts = torch.tensor([float(data_batch.get(k, 0)) for k in self.totals] + [len(data_batch["images"])])
        if get_world_size() > 1:
            all_reduce(counts, op="sum")
        for key, value in zip(self.totals, counts[:-1].tolist()):
            self.totals[key] += int(value)
            runner.message_hub.update_scalar(f"train/{key}", self.totals[key])
        now = time.perf_counter()
        if self._last is not None:
            runner.message_hub.update_scalar("train/samples_per_s", counts[-1].item() / max(now - self._last, 1e-9))
        self._last = now

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        inner = _inner(runner)
        checkpoint.setdefault("meta", {})["tagalign"] = {
            "clip": clip_identity(inner.clip).to_dict(),
            "tag_vocab_hash": inner.tag_vocab_hash,
            "config": inner.config,
            "skipped": dict(self.totals),
        }

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get("meta", {}).get("tagalign")
        if not saved:
            return
        current = clip_identity(_inner(runner).clip)
        if saved["clip"]["weights_hash"] != current.weights_hash:
            raise RuntimeError(
                f"the checkpoint was trained on CLIP {saved['clip']['model_name']} ({saved['clip']['pretrained']}, "
                f"hash {saved['clip']['weights_hash']}); this run loads {current.model_name} ({current.pretrained}, "
                f"hash {current.weights_hash})"
            )
        inner = _inner(runner)
        saved_encoder = (saved.get("config", {}).get("encoder", "surgery"), saved.get("config", {}).get(
            "encoder_options", {}))
        if saved_encoder != (inner.encoder, inner.encoder_options):
            raise RuntimeError(
                f"the checkpoint's projector was trained on the '{saved_encoder[0]}' encoder {saved_encoder[1]}; "
                f"this run's config uses '{inner.encoder}' {inner.encoder_options}. Resume with the same "
                f"model.encoder, or start a new work dir."
            )
        self.totals.update(saved.get("skipped", {}))


@HOOKS.register_module(force=True)
class ExportTagAlignCheckpointHook(Hook):
    """Beside each mmengine checkpoint, and at the end, write the small tagalign checkpoint that tools/test.py,
    tools/demo.py and ``tagalign.load`` read: ``WORK_DIR/tagalign_iter_N.pth`` and ``WORK_DIR/tagalign_latest.pth``."""

    priority = "LOW"

    def __init__(self, keep_every: bool = True) -> None:
        self.keep_every = keep_every

    def _export(self, runner, step: int) -> None:
        if not is_main_process():
            return
        extra = {"iteration": step, "config": runner.cfg.pretty_text if runner.cfg else None}
        save_checkpoint(_inner(runner), Path(runner.work_dir) / "tagalign_latest.pth", extra=extra)
        if self.keep_every:
            save_checkpoint(_inner(runner), Path(runner.work_dir) / f"tagalign_iter_{step}.pth", extra=extra)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self._export(runner, checkpoint.get("meta", {}).get("iter", runner.iter))  # mmengine's step: iter + 1

    def after_train(self, runner) -> None:
        if not (Path(runner.work_dir) / f"tagalign_iter_{runner.iter}.pth").exists():
            self._export(runner, runner.iter)
