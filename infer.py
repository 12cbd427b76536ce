"""Run a checkpoint over images and write COCO results JSON (``tools/inference.py``).

    python infer.py --checkpoint outputs/run/best.pth --images photos/ --out results.json
    python infer.py --checkpoint outputs/run/best.pth --split val --out results.json   # the run's own val split
    python infer.py --checkpoint outputs/run/best.pth --dataset demo --split val --out results.json \\
        --tta-scales 0.8 1.0 1.2 --tta-flip
"""

from __future__ import annotations

import argparse
import logging

from datasets.build import add_data_args
from tools.inference import infer


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.set_defaults(dataset=None)  # the data of the run that wrote --checkpoint, unless given
    p.add_argument("--checkpoint", required=True, help="a train_asm_one.py checkpoint (last.pth / best.pth)")
    p.add_argument("--images", default=None, help="an image folder (instead of a dataset split)")
    p.add_argument("--split", choices=("train", "val"), default="val", help="dataset split to run on")
    p.add_argument("--out", required=True, help="COCO results JSON to write")
    p.add_argument("--score-thresh", type=float, default=0.05)
    p.add_argument("--tta-scales", type=float, nargs="+", default=[1.0])
    p.add_argument("--tta-flip", action="store_true")
    p.add_argument(
        "--tta-merge",
        choices=("nms", "vote"),
        default="nms",
        help="nms: keep the best box of each cluster; vote: the score-weighted mean of the cluster",
    )
    p.add_argument("--tta-iou", type=float, default=0.5)
    p.add_argument("--device", default="auto")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return infer(args)


if __name__ == "__main__":
    raise SystemExit(main())
