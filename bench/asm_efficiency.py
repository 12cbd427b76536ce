"""Annotation efficiency on real data: human work needed to reach the fully supervised AP50.

Every method is a ``train_asm_one.py`` run: the same trainer, seed, initial pool, model
initialisation, schedule and round-train rule; they differ only in the labelling rule. For each
seed, each method runs as its own process (``--jobs`` of them at once), adding K images per round:

* ``supervised``: every train image, every box drawn (``--strategy none``; the upper bound);
* ``random``: the same-trainer baseline (``--strategy random``): the next K images of the seeded
  queue, every box drawn by the human; exactly ``v1+ --enable-sl false`` without the detection pass;
* ASM methods: ``v1+`` is the entry's defaults (``default_method``); the others change one thing:
  ``v1+/replay`` (ASM_core's replay rule), ``topk_v2``, ``v1+/gate`` (mining gate), ``v1+/cand``
  (informative choice among 4K candidates), ``v1+/calib`` (per-class calibrated certain thresholds);
* ``random/reseed``, ``v1+/reseed``: random and the default with another ``--train-seed``: the same
  labels round by round, another batch order (and, with ``--no-share-round0``, another
  initialisation); how far they land from their method at each round is that round's noise;
* ``al_curve/random``, ``al_curve/entropy``: ``al_curve.py`` learning curves, another trainer
  (extra curves, not the baseline).

Round 0 (the initial pool's model) is the same for every method of a seed: with ``--share-round0``
(the default) it is trained once per seed (``asm_round0_seed<s>``, ``--max-rounds 0``) and each
method's run starts as a copy of it, resumed with its own round options (README, "One initial model,
several strategies"); with ``--no-share-round0`` each run trains its own, the same by
``--deterministic``. ``round0_identical`` says whether it was (AP50 equal within 1e-6).

Human cost, two x-axes: boxes drawn from scratch, and a weighted cost = drawn + ``--review-cost`` x
(confirmed + deleted) + ``--move-cost`` x moved (README, "What a round costs the human").

Protocol v3 (``bench.efficiency_analysis``): every round of the default after the shared round 0 is
a *reading*: its drawn boxes against random's first point at or above them (and the straight line
between random's two neighbours), judged against the noise of its own round; the readings' mean
margin with a 95% bootstrap interval; the supervised bound in several training seeds; what the
confirmed boxes cost (``label_damage_ap50``) and how right the certain boxes were (``sl_precision``).

Data: BCCD by default (pool = ``train``, 205 images; evaluation = ``val`` + ``test``, 159 images),
Aquarium with ``--study aquarium`` (a Roboflow YOLOv5 export: pool = ``train``, 448 images;
evaluation = ``valid``, 127 images), or any labelled dataset through the entry's own data options,
forwarded as they are:

    python bench/asm_efficiency.py --cpu --jobs 3 --json-out docs/efficiency_bccd_cpu.json     # CPU protocol
    python bench/asm_efficiency.py --cpu --jobs 3 --study aquarium --json-out docs/efficiency_aquarium_cpu.json
    python bench/asm_efficiency.py --quick                                             # smoke run
    python bench/asm_efficiency.py --quick --dataset voc --voc-roots data/my_voc --discover-classes

Each method resumes from its checkpoints, so an interrupted benchmark continues when the command is
run again; a method that dies (a non-finite loss, say) is reported and the others go on.

Writes ``efficiency.json`` (settings, every point, the summary), ``efficiency.png`` and
``efficiency.md`` in ``--output-dir``. The last line printed is one JSON object with ``protocol``,
``default_method``, ``supervised_ap50`` (``{mean, std, n}``), ``round0_identical``,
``box_fraction_to_{90,95,100}pct`` (per method; null where a method does not reach the level in
every seed), ``noise_per_round``, ``readings``, ``vs_random``, ``label_damage_ap50``,
``sl_precision``, ``run_s_total``, ``wall_s`` and ``seeds``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import study_runs as runs  # noqa: E402
from bench.common import SHARED_WEIGHTS  # noqa: E402
from bench.efficiency_analysis import (  # noqa: E402
    ASM_METHODS,
    BASELINE,
    SAMPLER_METHODS,
    analyse,
    default_method,
    round0_identical,
    sl_precision,
    study_v3,
    supervised_bound,
    with_cost,
)
from bench.efficiency_report import plot, readings_table, replot, tables  # noqa: E402
from bench.study_data import AQUARIUM_ROOT, study_flags  # noqa: E402
from datasets.atomic import atomic_write_text  # noqa: E402
from datasets.build import DataOptions, add_data_args  # noqa: E402

DEFAULT_METHODS = ("random", "v1+")
PROTOCOL = "v3"
# The CPU protocol (v3): 3 seeds of random and the default, each trained again with another training
# seed to the end (the noise of every round), and the supervised bound in 3 seeds, --jobs 3 (three
# one-thread processes on 2 idle cores), round 0 shared per seed, the round cache. Batches of 2 give
# the 20 initial images 300 steps in 30 epochs: with batches of 4 (150 steps) round 0 sat on the RoI
# head's background plateau for up to 19 epochs and ended at AP50 0.15-0.40 by training seed alone.
# 8 epochs per round: 6 left seed 1 0.0025 under random (CHANGELOG.md has every study's history).
CPU_PROTOCOL = {
    "min_size": 416,
    "epochs": 30,
    "step_epochs": 8,
    "batch_size": 2,
    "supervised_epochs": 14,
    "steps": 5,
    "methods": ["random", "v1+", "random/reseed", "v1+/reseed"],
    "supervised_seeds": [1, 2, 3],
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="Any other option is a data option of train_asm_one.py (--dataset voc|coco|"
        "folder and its flags), forwarded to every run; without one: BCCD.",
    )
    p.add_argument(
        "--study",
        choices=("bccd", "aquarium"),
        default="bccd",
        help="the data when no data option is given: BCCD (VOC; train vs val + test) or Aquarium (a "
        "Roboflow YOLOv5 export; train vs valid)",
    )
    p.add_argument("--bccd-root", default=os.path.join(ROOT, "..", "shared", "data", "bccd"))
    p.add_argument("--aquarium-root", default=AQUARIUM_ROOT)
    p.add_argument("--eval-splits", nargs="+", default=["val", "test"])
    p.add_argument(
        "--methods", nargs="+", default=list(DEFAULT_METHODS), choices=(*SAMPLER_METHODS, *ASM_METHODS)
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument(
        "--supervised-seeds",
        nargs="+",
        type=int,
        default=None,
        help="seeds of the supervised bound (default: --seeds); a seed without its own bound is "
        "compared with their mean",
    )
    p.add_argument(
        "--share-round0",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train each seed's initial phase once and mine it with every method (a copy of that run, "
        "resumed with the method's round options; random/reseed's --train-seed then seeds its rounds); "
        "--no-share-round0: one initial phase per run",
    )
    p.add_argument(
        "--round-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the ASM runs share <output-dir>/round_cache (train_asm_one.py --round-cache): a round another "
        "method trained on the same labels (v1+ while it confirms no box, against random) is loaded, not "
        "trained again, with the same figures; each method waits for random of its seed",
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="method x seed processes at once (one GPU or the CPU cores)"
    )
    p.add_argument(
        "--weights-backbone",
        default=SHARED_WEIGHTS if os.path.isfile(SHARED_WEIGHTS) else None,
        help="ImageNet backbone (.pth or torchvision name); default: ../shared/weights if present",
    )
    p.add_argument("--model", default="fasterrcnn_mobilenet_v2_fpn")
    p.add_argument("--min-size", type=int, default=480)
    p.add_argument("--initial", type=float, default=20, help="initial pool: fraction or count")
    p.add_argument("--step", type=float, default=20, help="images added per step/round: fraction or count")
    p.add_argument(
        "--steps", type=int, default=None, help="points per curve (default: until the pool is exhausted)"
    )
    p.add_argument("--epochs", type=int, default=30, help="epochs on the initial pool")
    p.add_argument("--step-epochs", type=int, default=10, help="epochs of each later step/round")
    p.add_argument("--supervised-epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--warmup-iters", type=int, default=50)
    p.add_argument(
        "--review-cost", type=float, default=0.2, help="cost of confirming or deleting a box, in draws"
    )
    p.add_argument(
        "--move-cost", type=float, default=0.5, help="cost of moving a model box onto an object, in draws"
    )
    p.add_argument(
        "--cpu",
        action="store_true",
        help=f"the CPU protocol ({', '.join(f'{k}={v}' for k, v in CPU_PROTOCOL.items())}); "
        "options given explicitly win",
    )
    p.add_argument(
        "--replot",
        metavar="JSON",
        default=None,
        help="only draw a study's plot (beside the file, .png) and print its tables, from its JSON",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny input, one epoch per step, two points (on BCCD: a slice of the data)",
    )
    p.add_argument("--quick-images", type=int, nargs=2, default=(16, 8), metavar=("TRAIN", "EVAL"))
    p.add_argument("--output-dir", default=os.path.join(ROOT, "outputs", "efficiency"))
    p.add_argument(
        "--json-out", default=None, help="also write the results JSON here (docs/efficiency_bccd.json)"
    )
    return p


def parse(
    argv: list[str] | None,
    parser: argparse.ArgumentParser | None = None,
) -> tuple[argparse.Namespace, list[str], DataOptions | None]:
    """The study's options (``parser``: this script's, or a benchmark's that extends it), the data
    flags to forward (checked against the entry's data options), and those flags parsed (None: BCCD)."""

    parser = parser or get_args_parser()
    args, rest = parser.parse_known_args(argv)
    given = {
        a.lstrip("-").split("=")[0].replace("-", "_") for a in (argv or sys.argv[1:]) if a.startswith("--")
    }
    if args.cpu:
        for key, value in CPU_PROTOCOL.items():
            if key not in given:
                setattr(args, key, value)
    if args.quick:
        args.min_size, args.epochs, args.step_epochs, args.supervised_epochs = 128, 1, 1, 1
        args.initial, args.step, args.steps, args.weights_backbone = 4, 4, 2, None
    if not rest:
        return args, [], None
    data_parser = argparse.ArgumentParser(prog="asm_efficiency.py (data options)", add_help=False)
    add_data_args(data_parser)
    data = data_parser.parse_args(rest)  # an unknown option: one line, exit 2
    # a flat folder's seeded split lands in <output-dir>/splits
    return args, rest, DataOptions.of({**vars(data), "output_dir": args.output_dir})


def load_study_data(args, data_flags: list[str], data):
    """The study's data flags and training pool: ``--study``'s dataset when no data option was given.

    Raises:
        FileNotFoundError, ValueError, AnnotationError: the data is not there or not readable.
    """
    from datasets.build import build_datasets

    if data is None:  # BCCD (train vs val + test) or Aquarium (train vs valid)
        data_flags = study_flags(args)
        data = parse([*data_flags, "--output-dir", args.output_dir])[2]
    return data_flags, build_datasets(data)[0]


def headline_of(args, curves: list[dict], summary: dict, failures: list[dict]) -> dict:
    """The figures printed on the last line (and at the top of the JSON)."""
    same_start = round0_identical(curves)
    return {
        "protocol": PROTOCOL,
        "default_method": default_method(args.methods),
        "baseline": BASELINE,
        "supervised_ap50": supervised_bound(curves),
        "round0_identical": bool(same_start) and all(same_start.values()),
        "round0_identical_per_seed": same_start,
        **{
            f"box_fraction_to_{level}pct": {m: v[f"{level}pct"] for m, v in summary["box_fraction"].items()}
            for level in (90, 95, 100)
        },
        **study_v3(curves, args.methods),
        "sl_precision": sl_precision(curves, args.methods),
        "reused_rounds": {
            m: sum(c.get("reused_rounds", 0) for c in curves if c["method"] == m) for m in args.methods
        },
        "failed": failures,
        "seeds": args.seeds,
        # the seconds every run's last process took (a run reused from an earlier invocation: its own)
        "run_s_total": round(sum(c.get("run_s") or 0 for c in curves), 1),
    }


def main(argv: list[str] | None = None) -> int:
    from datasets import AnnotationError

    args, data_flags, data = parse(argv)
    if args.replot:
        return replot(args.replot)
    os.makedirs(args.output_dir, exist_ok=True)
    try:
        data_flags, train = load_study_data(args, data_flags, data)
    except (AnnotationError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total_boxes, classes = train.num_boxes(), list(train.classes)
    start = time.perf_counter()
    curves, failures = runs.run_all(args, data_flags, len(train))
    with_cost(curves, args.review_cost, args.move_cost)
    if not any(c["method"] == "supervised" for c in curves):
        print(f"error: no supervised run finished: {failures}", file=sys.stderr)
        return 1
    summary = analyse(curves, total_boxes, args.methods)
    per_class = {cls: analyse(curves, total_boxes, args.methods, f"AP50/{cls}") for cls in classes}
    headline = headline_of(args, curves, summary, failures)
    headline["wall_s"] = round(time.perf_counter() - start, 1)  # this invocation (reused runs cost nothing)
    settings = {**vars(args), "data_flags": data_flags, "classes": classes, "total_boxes": total_boxes}
    result = {
        **headline,
        "settings": {**settings, "train_images": len(train)},
        "summary": summary,
        "per_class": per_class,
        "curves": curves,
    }
    for path in filter(None, (os.path.join(args.output_dir, "efficiency.json"), args.json_out)):
        atomic_write_text(path, json.dumps(result, indent=1))
        plot(curves, summary, args.methods, total_boxes, os.path.splitext(path)[0] + ".png")
    table = tables(curves, summary, per_class, args.methods, total_boxes)
    table += "\n" + readings_table(headline["readings"], headline["refused_readings"])
    atomic_write_text(os.path.join(args.output_dir, "efficiency.md"), table)
    print(table)
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
