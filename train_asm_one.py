"""Active sample mining (ASM) for torchvision detectors: train, mine, grow the labelled pool.

    python train_asm_one.py --K 100          # built-in demo dataset
"""

from __future__ import annotations

import argparse
import logging

from datasets import AnnotationError
from datasets.build import add_data_args, build_datasets, describe

logger = logging.getLogger("train_asm_one")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    parser.add_argument("--K", type=int, default=100, help="images detected per ASM round")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        train, val = build_datasets(args)
    except (AnnotationError, ValueError) as e:
        logger.error("%s", e)  # names the file and field; no traceback for bad input
        return 2
    logger.info(describe("train pool", train))
    logger.info(describe("evaluation", val))
    logger.info("training and ASM rounds land with the detector and ASM engine changes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
