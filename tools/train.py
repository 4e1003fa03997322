"""Train TagAlign's projector with mmengine.

    python tools/train.py CONFIG [--work-dir DIR] [--resume] [--launcher none|pytorch|slurm] [--cfg-options k=v ...]
    torchrun --nproc_per_node=8 tools/train.py configs/tagalign_cc12m.py --launcher pytorch
    srun --ntasks-per-node=8 --gpus-per-node=8 python tools/train.py configs/tagalign_cc12m.py --launcher slurm

--resume continues from the last checkpoint in the work directory: weights, optimizer, AMP scaler, iteration and
data position. Checkpoints: WORK_DIR/iter_N.pth (full training state) and WORK_DIR/tagalign_latest.pth (the small
file tools/test.py --checkpoint and tools/demo.py read).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmengine.config import Config, DictAction  # noqa: E402

from tagalign.training.checkpoint_io import ForeignCheckpointError  # noqa: E402
from tagalign.training.run import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--work-dir")
    parser.add_argument("--resume", action="store_true", help="continue from the work dir's last checkpoint")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys, key=value")
    args = parser.parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        train(cfg, work_dir=args.work_dir, resume=args.resume, launcher=args.launcher)
    except ForeignCheckpointError as err:
        sys.exit(f"Not resuming: {err}")


if __name__ == "__main__":
    main()
