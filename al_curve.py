"""Learning curves: AP against labelled images and human-drawn boxes, for several samplers and seeds.

    python al_curve.py --samplers random entropy al_ratio --seeds 0 1 2 \\
        --seed-batch 0.2 --step-size 0.1 --steps 5 --output-dir outputs/curves

Each curve starts from a random seed batch of the training pool (``--seed-batch``: fraction or
count), trains and evaluates, then lets the sampler add ``--step-size`` images (fraction or count)
and repeats until the pool is exhausted or ``--steps`` evaluations are done. ``--resume-or-load``
trains each step from scratch (default) or continues from the previous step's weights.
Human-drawn boxes: all GT boxes of an image picked by ``random``/uncertainty/loss samplers; for
``al_ratio`` (ASM) only the AL boxes of its SA annotation, which is what it trains on.

Every step is checkpointed (``<output>/<sampler>_seed<k>.pth``): an interrupted command continues
where it stopped and ends with the same ``curves.json``. Results: ``curves.json``, ``curves.csv``
(one row per step) and ``curves.png`` (mean +- std over seeds; ``--x-axis images|boxes``).
``--asm-logs <run>/log.jsonl`` adds ``train_asm_one.py`` runs to the plot.
"""

from __future__ import annotations

import argparse
import logging

from datasets.build import add_data_args
from tools import dist
from tools.config import add_config_args, parse_with_config
from tools.curves import run_curves
from tools.options import HelpFormatter, add_asm_args, add_model_args, add_train_args, count_or_fraction


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_data_args(p)
    add_model_args(p)
    add_train_args(p, batch_flags=("--train-batch-size",))
    add_asm_args(p, rules_only=True)
    add_config_args(p)
    g = p.add_argument_group("curves")
    g.add_argument(
        "--samplers",
        "--sampler",
        dest="samplers",
        nargs="+",
        default=["random", "entropy"],
        help="names or module:Class (a user plug-in)",
    )
    g.add_argument("--seeds", nargs="+", type=int, default=[0])
    g.add_argument(
        "--seed-batch",
        "--seed_batch",
        type=count_or_fraction,
        default=0.4,
        help="initial pool: fraction or count",
    )
    g.add_argument(
        "--step-size",
        "--batch_size",
        dest="step_size",
        type=count_or_fraction,
        default=0.1,
        help="images added per step: fraction of the pool or count (ASM_core calls it --batch_size)",
    )
    g.add_argument("--steps", type=int, default=None, help="evaluations per curve (default: until exhausted)")
    g.add_argument("--resume-or-load", "--resume_or_load", choices=("scratch", "continue"), default="scratch")
    g.add_argument(
        "--step-epochs",
        type=int,
        default=None,
        help="max epochs of each step after the first (default: --epochs); like --round-epochs",
    )
    g.add_argument(
        "--aggregate", choices=("max", "mean", "sum"), default="max", help="box -> image uncertainty"
    )
    g.add_argument(
        "--conf-thres", type=float, default=0.05, help="detections considered by uncertainty samplers"
    )
    g.add_argument("--x-axis", choices=("images", "boxes"), default="images")
    g.add_argument("--asm-logs", nargs="*", default=[], help="train_asm_one.py log.jsonl files to plot too")
    g.add_argument("--output-dir", default="outputs/curves")
    g.add_argument("--exit-after-steps", type=int, default=None, help="stop after this many steps (tests)")
    return p


def main(argv: list[str] | None = None) -> int:
    with dist.session():
        try:
            args = parse_with_config(get_args_parser(), argv)
        except (ValueError, FileNotFoundError) as e:
            logging.getLogger("al_curve").error("%s", e)
            return 2
        return run_curves(args)


if __name__ == "__main__":
    raise SystemExit(main())
