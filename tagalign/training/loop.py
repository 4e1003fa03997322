"""An iteration-based loop that resumes the data stream by fast-forwarding the dataset, not the loader."""

from __future__ import annotations

from mmengine.logging import print_log
from mmengine.registry import LOOPS
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator

__all__ = ["ResumableIterBasedTrainLoop"]


@LOOPS.register_module(force=True)
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's loop pulls every consumed batch through the loader again on resume (decoding and augmenting
    each image); with :class:`TagShardDataset` the stream instead skips raw samples and starts at the batch that
    comes next. Other datasets fall back to mmengine's behaviour."""

    def run(self):
        dataset = self.dataloader.dataset
        if hasattr(dataset, "skip_batches"):
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
