"""Run by torchrun from tests/test_configs.py: every training config, 2 iterations, on the shapes world.

Each rank builds each config's Runner (model, optimizer, DeiT data pipeline) with the paths pointed at the world and
the CLIP swapped for its tiny one, trains 2 iterations under DDP (gloo), and rank 0 records what moved.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from mmengine.config import Config

import tagalign  # noqa: F401
from tagalign.training.run import train


def cpu_config(config: Path, world: Path, work_dir: Path) -> Config:
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict({
        "model.clip": "tagalign-tiny-112",
        "model.pretrained": str(world / "tiny_clip"),
        "model.tag_embeddings": str(world / "tags/tag_embeddings.pt"),
        "model.tag_frequency": str(world / "tags/tag_frequency.npy"),
        "train_dataloader.dataset.shards": str(world / "shards"),
        "train_dataloader.dataset.labels": str(world / "tags/labels.sqlite"),
        "train_dataloader.dataset.clip": "tagalign-tiny-112",
        "train_dataloader.batch_size": 4,
        "train_dataloader.num_workers": 0,
        "train_dataloader.pin_memory": False,
        "train_cfg.max_iters": 2,
        "default_hooks.checkpoint.interval": 2,
        "default_hooks.logger.interval": 1,
        "env_cfg.dist_cfg.backend": "gloo",
    })
    if cfg.optim_wrapper.get("type") == "AmpOptimWrapper":  # mmengine's AMP wrapper needs a GPU
        cfg.optim_wrapper.type = "OptimWrapper"
        cfg.optim_wrapper.pop("dtype", None)
    # CPU processes: DDP without device ids (mmengine's default wrapper passes LOCAL_RANK as a CUDA device)
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                                 find_unused_parameters=False)
    cfg.work_dir = str(work_dir)
    return cfg


def main() -> None:
    world, out = Path(sys.argv[1]), Path(sys.argv[2])
    torch.distributed.init_process_group("gloo")  # mmengine's own init would pick a CUDA device first
    results = {}
    for config in sys.argv[3:]:
        runner = train(cpu_config(Path(config), world, out / Path(config).stem), launcher="pytorch")
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        inner = model.tagalign
        results[config] = {
            "iters": runner.iter,
            "deit_aug": runner.cfg.train_dataloader.dataset.get("deit_aug"),
            "gates_moved": bool(any(u.gate.item() != 0 for u in inner.projector.units)),
            "itc_scale_trainable": inner.itc_loss.temperature.logit_scale.requires_grad,
            "tag_scale_trainable": inner.tag_loss.temperature.logit_scale.requires_grad,
            "tag_mode": inner.tag_loss.mode,
            "reweight_scale_moved": inner.reweight_scale is not None and
            abs(inner.reweight_scale.logit_scale.item() - math.log(1 / 0.07)) > 1e-7,
        }
        torch.distributed.barrier()
    if torch.distributed.get_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
