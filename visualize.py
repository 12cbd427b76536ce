"""Draw a split's ground truth and, with a checkpoint, its predictions (``tools/drawing.py``).

    python visualize.py --checkpoint outputs/run/best.pth --split val --num 8 --out viz/
"""

from __future__ import annotations

import argparse

from datasets.build import add_data_args
from tools.drawing import draw_split


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.add_argument("--checkpoint", default=None, help="draw its predictions too (else ground truth only)")
    p.add_argument("--split", choices=("train", "val"), default="val")
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--out", default="viz")
    return p


def main(argv: list[str] | None = None) -> int:
    print(draw_split(get_args_parser().parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
