"""Convert PASCAL-Context-459 and ADE20K-847 into CAT-Seg's layout (what tools/test.py reads; docs/datasets.md).

    python tools/convert_large_vocab.py pc459 data/VOCdevkit/VOC2010 [--ids pascalcontext_val.txt]
    python tools/convert_large_vocab.py ade847 data/ADE20K_2021_17_01

Outputs that exist are skipped, so a killed run continues where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tagalign.segmentation.convert_large_vocab import convert_ade847, convert_pc459  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["pc459", "ade847"])
    parser.add_argument("root", help="VOCdevkit/VOC2010 (with trainval/*.mat) or ADE20K_2021_17_01")
    parser.add_argument("--ids", help="pc459: the validation ids (default ImageSets/SegmentationContext/val.txt)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.dataset == "pc459":
            convert_pc459(args.root, args.ids)
        else:
            convert_ade847(args.root)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"Not converted: {err}")


if __name__ == "__main__":
    main()
