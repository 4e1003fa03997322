"""An iteration-based loop that resumes the data stream by fast-forwarding the dataset, not the loader."""

from __future__ import annotations

from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import LOOPS
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator

__all__ = ["DataLayoutChangedError", "ResumableIterBasedTrainLoop"]

_LAYOUT_KEY = "tagalign_data_layout"


class DataLayoutChangedError(RuntimeError):
    """A resume would continue the data stream under another layout, repeating some samples and skipping others."""


def _check_vocabulary(model, dataset) -> None:
    """The label file and the tag embeddings must index the same vocabulary."""
    model = model.module if is_model_wrapper(model) else model
    labels = getattr(dataset, "labels", None)
    expected = getattr(model, "vocab_hash", None)
    if labels is None or expected is None or labels.vocab_hash == expected:
        return
    raise ValueError(
        f"{labels.path} labels samples with vocabulary {labels.vocab_hash}, but the model's tag embeddings come from "
        f"vocabulary {expected}: tag i of the labels is not tag i of the classifier. Rerun `tools/parse_tags.py "
        f"embed` on the folder that holds {labels.path.name} (or point the config at matching files)."
    )


@LOOPS.register_module(force=True)
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's loop pulls every consumed batch through the loader again on resume (decoding and augmenting
    each image); with :class:`TagShardDataset` the stream instead skips raw samples and starts at the batch that
    comes next. Other datasets fall back to mmengine's behaviour."""

    def run(self):
        dataset = self.dataloader.dataset
        _check_vocabulary(self.runner.model, dataset)
        if hasattr(dataset, "skip_batches"):
            self._check_data_layout(dataset)
            dataset.batch_size = self.dataloader.batch_size
            dataset.skip_batches = self._iter
            if self._iter > 0:
                print_log(f"Resuming the data stream after {self._iter} batches (fast-forward without decoding)",
                          logger="current")
            self.dataloader_iterator = _InfiniteDataloaderIterator(self.dataloader)
            self.runner.call_hook("before_train")
            self.runner.call_hook("before_train_epoch")
            while self._iter < self._max_iters and not self.stop_training:
                self.runner.model.train()
                self.run_iter(next(self.dataloader_iterator))
                self._decide_current_val_interval()
            self.runner.call_hook("after_train_epoch")
            self.runner.call_hook("after_train")
            return self.runner.model
        return super().run()

    def _check_data_layout(self, dataset) -> None:
        """Resume only under the layout the stream was cut for; record the layout for the next resume."""
        workers = self.dataloader.num_workers or 0
        layout = {"world_size": dataset.world_size, "num_workers": max(workers, 1),
                  "batch_size": self.dataloader.batch_size, "shards": len(dataset.shards),
                  "label_key": dataset.label_key, "drop_empty": dataset.drop_empty,
                  "shuffle_buffer": dataset.shuffle_buffer, "seed": dataset.seed}
        saved = self.runner.message_hub.get_info(_LAYOUT_KEY)
        if self._iter > 0 and saved:
            changed = [f"{name} {saved.get(name)} -> {value}" for name, value in layout.items()
                       if saved.get(name) != value]
            if changed:
                raise DataLayoutChangedError(
                    f"cannot resume the data stream exactly: {', '.join(changed)} since the checkpoint. Each of the "
                    f"world_size x num_workers streams owns its own samples, so another layout would repeat some "
                    f"samples and skip others. Resume with the earlier settings (e.g. --cfg-options "
                    f"train_dataloader.num_workers={saved.get('num_workers')}), or start a new run from the "
                    f"checkpoint's weights with load_from=... and resume=False."
                )
        self.runner.message_hub.update_info(_LAYOUT_KEY, layout)
