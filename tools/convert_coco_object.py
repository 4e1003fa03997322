"""Make COCO-Object label maps (``*_instanceTrainIds.png``) from COCO-Stuff-164k annotations.

    python tools/convert_coco_object.py data/coco_stuff164k/annotations/val2017 [--source trainids|raw]

--source trainids (default) reads mmseg's *_labelTrainIds.png; raw reads the original stuffthingmaps PNGs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tagalign.segmentation.convert import convert_coco_object  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ann_dir")
    parser.add_argument("--source", choices=["trainids", "raw"], default="trainids")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert_coco_object(args.ann_dir, args.source, args.overwrite)


if __name__ == "__main__":
    main()
