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
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from asm.pools import image_count  # noqa: E402
from bench.common import SHARED_WEIGHTS  # noqa: E402
from bench.efficiency_analysis import (  # noqa: E402
    ASM_METHODS,
    BASELINE,
    NOISE_SEED_OFFSET,
    RESEEDED,
    SAMPLER_METHODS,
    analyse,
    default_method,
    label_damage,
    noise_per_round,
    readings,
    round0_identical,
    sl_precision,
    supervised_bound,
    versus_random_v3,
    with_cost,
)
from bench.efficiency_report import plot, readings_table, tables  # noqa: E402
from datasets.atomic import atomic_write_text  # noqa: E402
from datasets.build import DataOptions, add_data_args  # noqa: E402
from tools.runtime.logs import read_jsonl  # noqa: E402

BCCD_CLASSES = ("RBC", "WBC", "Platelets")
AQUARIUM_ROOT = os.path.join(ROOT, "..", "shared", "data", "aquarium")
ROUND0 = "round0"  # run_all's job of a seed's shared initial phase (--share-round0)
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
LEVELS = (0.9, 0.95, 1.0)


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


def bench_root(src: str, out: str, eval_splits: list[str], n_train: int | None, n_eval: int | None) -> str:
    """A VOC root linking to ``src``'s folders, with ``train.txt`` and ``eval.txt`` (the evaluation
    splits joined); ``n_*`` keep only the first images of each split (``--quick``)."""
    root = os.path.join(out, "bccd_root")
    os.makedirs(os.path.join(root, "ImageSets", "Main"), exist_ok=True)
    for name in ("Annotations", "JPEGImages"):
        link = os.path.join(root, name)
        if not os.path.islink(link):
            os.symlink(os.path.abspath(os.path.join(src, name)), link)

    def ids(split: str, n: int | None) -> list[str]:
        with open(os.path.join(src, "ImageSets", "Main", f"{split}.txt"), encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()][:n]

    splits = {"train": ids("train", n_train), "eval": [i for s in eval_splits for i in ids(s, n_eval)]}
    for name, image_ids in splits.items():
        atomic_write_text(os.path.join(root, "ImageSets", "Main", f"{name}.txt"), "\n".join(image_ids) + "\n")
    return root


def aquarium_root(src: str, out: str, n_train: int | None, n_eval: int | None) -> str:
    """A Roboflow YOLO root linking to ``src``'s ``train`` and ``valid`` images and labels (the first
    ``n_*`` of each with ``--quick``) and its ``data.yaml``; ``test`` is left out of the study."""
    root = os.path.join(out, "aquarium_root")
    for split, n in (("train", n_train), ("valid", n_eval)):
        names = sorted(os.listdir(os.path.join(src, split, "images")))[:n]
        for sub in ("images", "labels"):
            os.makedirs(os.path.join(root, split, sub), exist_ok=True)
        for name in names:
            stem = os.path.splitext(name)[0]
            for sub, file in (("images", name), ("labels", stem + ".txt")):
                link, target = os.path.join(root, split, sub, file), os.path.join(src, split, sub, file)
                if os.path.exists(target) and not os.path.islink(link):
                    os.symlink(os.path.abspath(target), link)
    shutil.copyfile(os.path.join(src, "data.yaml"), os.path.join(root, "data.yaml"))
    return root


def study_flags(args) -> list[str]:
    """The data options of ``--study``'s dataset, a root of links in ``--output-dir``.

    Raises:
        FileNotFoundError: the dataset's folder is not where it was named.
    """
    n_train, n_eval = args.quick_images if args.quick else (None, None)
    if args.study == "aquarium":
        if not os.path.isfile(os.path.join(args.aquarium_root, "data.yaml")):
            raise FileNotFoundError(
                f"{args.aquarium_root} is not a Roboflow YOLO export (no data.yaml); pass --aquarium-root"
            )
        root = aquarium_root(os.path.abspath(args.aquarium_root), args.output_dir, n_train, n_eval)
        return ["--dataset", "folder", "--folder-root", root]
    if not os.path.isdir(os.path.join(args.bccd_root, "Annotations")):
        raise FileNotFoundError(
            f"{args.bccd_root} is not a VOC root (no Annotations/); pass --bccd-root or the data options "
            "of train_asm_one.py (--dataset ...)"
        )
    return bccd_flags(
        bench_root(os.path.abspath(args.bccd_root), args.output_dir, args.eval_splits, n_train, n_eval)
    )


def bccd_flags(root: str) -> list[str]:
    return [
        "--dataset",
        "voc",
        "--voc-roots",
        root,
        "--voc-train-split",
        "train",
        "--voc-val-split",
        "eval",
        "--voc-classes",
        *BCCD_CLASSES,
    ]


def common_flags(args, data_flags: list[str], seed: int) -> list[str]:
    """The shared protocol: data, model, schedule, seed; fixed budgets (no AP-shift early stopping),
    one evaluation per phase, deterministic so that round 0 is the same model for every method."""
    flags = [
        *data_flags,
        "--model",
        args.model,
        "--min-size",
        str(args.min_size),
        "--lr",
        str(args.lr),
        "--warmup-iters",
        str(args.warmup_iters),
        "--seed",
        str(seed),
        "--ap-shift-pretrain",
        "0",
        "--ap-shift-asm",
        "0",
        "--deterministic",
    ]
    if args.weights_backbone:
        flags += ["--weights-backbone", args.weights_backbone]
    return flags


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def run_tool(cmd: list[str], log_path: str, threads: int | None) -> str:
    """Run one method's command (its own process); its log lines (stdout) and stderr go to
    ``log_path``. Returns stdout.

    Raises:
        RuntimeError: the process failed; the message holds its last ERROR line (else its last line)
            and names the log.
    """
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        log.write(proc.stdout)  # the entry logs to stdout: why it stopped is there
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stdout + "\n" + _read(log_path)).splitlines() if line.strip()]
        errors = [line for line in lines if " ERROR " in line]
        why = (errors or lines or ["?"])[-1]
        raise RuntimeError(f"exit code {proc.returncode}: {why[:300]} (log: {log_path})")
    print(
        f"  done in {time.perf_counter() - t:.0f} s: {os.path.basename(os.path.dirname(log_path))}",
        flush=True,
    )
    return proc.stdout


def sampler_curve(
    args, data_flags: list[str], seed: int, method: str, n_train: int, threads: int | None
) -> dict:
    """One ``al_curve.py`` curve (another trainer: an extra curve, not the baseline); resumes."""
    out = os.path.join(args.output_dir, f"{method.replace('/', '_')}_seed{seed}")
    os.makedirs(out, exist_ok=True)
    cmd = [
        sys.executable,
        os.path.join(ROOT, "al_curve.py"),
        *common_flags(args, data_flags, seed),
        "--seeds",
        str(seed),
        "--train-batch-size",
        str(args.batch_size),
        "--output-dir",
        out,
        "--resume-or-load",
        "continue",
        "--samplers",
        SAMPLER_METHODS[method],
        "--seed-batch",
        str(args.initial),
        "--step-size",
        str(image_count(args.step, n_train)),
        "--epochs",
        str(args.epochs),
        "--step-epochs",
        str(args.step_epochs),
    ]
    cmd += ["--steps", str(args.steps)] if args.steps else []
    run_tool(cmd, os.path.join(out, "bench.log"), threads)
    with open(os.path.join(out, "curves.json"), encoding="utf-8") as f:
        steps = json.load(f)["curves"][0]["steps"]
    points = [
        {
            **{k: v for k, v in s.items() if k.startswith("AP")},
            "images": s["images"],
            "human_drawn_boxes": s["human_drawn_boxes"],
            "reviewed": 0,
            "moved": 0,
        }
        for s in steps
    ]
    return {"method": method, "seed": seed, "points": points}


def run_entry(
    args,
    data_flags: list[str],
    seed: int,
    out: str,
    extra: list[str],
    threads: int | None,
    start_from: str | None = None,
) -> list[dict]:
    """One ``train_asm_one.py`` run of the shared protocol (:func:`common_flags`) plus ``extra``,
    evaluated once at the end of each phase (:func:`run_flags`; ``start_from``: the run folder it
    continues). Returns its ``log.jsonl`` entries."""
    flags = [
        *common_flags(args, data_flags, seed),
        "--batch-size",
        str(args.batch_size),
        "--coco-ap",
        "true",
        *extra,
        "--eval-interval",
        "100000",
    ]
    return run_flags(flags, out, threads, start_from)


FLAGS_FILE = "bench_flags.json"  # the flags a run folder was made with


START_FROM = "--bench-start-from"  # recorded with the flags, not passed: the run this one continues
COPIED_NOT = ("bench.log", FLAGS_FILE, "summary.json")  # a started copy's own


def run_flags(flags: list[str], out: str, threads: int | None, start_from: str | None = None) -> list[dict]:
    """``train_asm_one.py flags --output-dir out`` in its own process; skipped when ``out`` holds its
    summary, continued (``--auto-resume``) when an earlier run was cut off. ``start_from``: a finished
    run folder (another run's initial phase) that ``out`` starts as a copy of, resumed with ``flags``.
    A folder is reused only for the flags it was made with (``bench_flags.json``, ``start_from``
    included). Returns the run's ``log.jsonl`` entries.

    Raises:
        RuntimeError: the run failed, or ``out`` holds a run made with other flags (or unrecorded
            ones): the message names the difference and the fix.
    """
    summary_path, flags_path = os.path.join(out, "summary.json"), os.path.join(out, FLAGS_FILE)
    made_with = [*flags, START_FROM, start_from] if start_from else flags
    if os.path.isfile(flags_path):
        with open(flags_path, encoding="utf-8") as f:
            recorded = json.load(f)
        if comparable(recorded) != comparable(made_with):
            raise RuntimeError(
                f"{out} holds a run made with other flags ({flag_difference(recorded, made_with)}): remove the "
                "folder to run it again, or pass another --output-dir"
            )
    elif os.path.isfile(os.path.join(out, "last.pth")):
        raise RuntimeError(
            f"{out} holds a run whose flags were not recorded ({FLAGS_FILE} is missing): remove the "
            "folder to run it again, or pass another --output-dir"
        )
    if not os.path.isfile(summary_path):
        if start_from and not os.path.isfile(os.path.join(out, "last.pth")):
            shutil.copytree(start_from, out, ignore=shutil.ignore_patterns(*COPIED_NOT), dirs_exist_ok=True)
        os.makedirs(out, exist_ok=True)
        atomic_write_text(flags_path, json.dumps(made_with))
        cmd = [
            sys.executable,
            os.path.join(ROOT, "train_asm_one.py"),
            *flags,
            "--output-dir",
            out,
            "--auto-resume",
        ]
        stdout = run_tool(cmd, os.path.join(out, "bench.log"), threads)
        atomic_write_text(summary_path, stdout.strip().splitlines()[-1])
    return read_jsonl(os.path.join(out, "log.jsonl"))


def comparable(flags: list[str]) -> list[str]:
    """``flags`` with every existing path resolved: a clone moved or reached by another route (``..``,
    a link) keeps its runs."""
    return [os.path.realpath(t) if os.path.exists(t) else t for t in flags]


def flag_difference(old: list[str], new: list[str]) -> str:
    """The options whose values differ between two flag lists, as ``--opt old -> new``."""

    def by_option(flags: list[str]) -> dict[str, str]:
        out, key = {}, None
        for tok in flags:
            if tok.startswith("--"):
                key = tok
                out[key] = ""
            elif key is not None:
                out[key] = f"{out[key]} {tok}".strip()
        return out

    a, b = by_option(comparable(old)), by_option(comparable(new))
    diffs = [
        f"{k} {a.get(k, '(absent)') or '(set)'} -> {b.get(k, '(absent)') or '(set)'}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    return "; ".join(diffs) or "the same options in another order"


def asm_schedule(args, n_train: int) -> list[str]:
    """The pool and epochs of every ASM run: images per round, the initial pool, epochs per phase."""
    return [
        "--K",
        str(image_count(args.step, n_train)),
        "--initial",
        str(args.initial),
        "--epochs",
        str(args.epochs),
        "--round-epochs",
        str(args.step_epochs),
    ]


def max_rounds(args) -> int | None:
    """The last round of every run: ``--steps`` points; None: until the pool is exhausted. Random
    draws every box of the images the default takes in the same round (v1+ keeps the queue's order),
    so its last reading is at or above the default's: every reading of the default has random on both
    sides (:func:`bench.efficiency_analysis.reading` refuses one that has not)."""
    return args.steps - 1 if args.steps else None


def asm_curve(args, data_flags: list[str], seed: int, method: str, n_train: int, threads: int | None) -> dict:
    """One ``train_asm_one.py`` run (``method`` "supervised": ``--strategy none``)."""
    out = os.path.join(args.output_dir, f"asm_{method.replace('+', 'plus').replace('/', '_')}_seed{seed}")
    extra = ["--review-cost", str(args.review_cost), "--move-cost", str(args.move_cost)]
    if method == "supervised":
        extra += ["--strategy", "none", "--epochs", str(args.supervised_epochs)]
    else:
        extra += [*asm_schedule(args, n_train), *ASM_METHODS[method]]
        if method in RESEEDED:
            extra += ["--train-seed", str(seed + NOISE_SEED_OFFSET)]
        last = max_rounds(args)
        if last is not None:
            extra += ["--max-rounds", str(last)]
        if args.round_cache:
            extra += ["--round-cache", os.path.join(args.output_dir, "round_cache")]
    start_from = None
    if args.share_round0 and method != "supervised":
        start_from = shared_round0(args, data_flags, seed, n_train, threads)
    log = run_entry(args, data_flags, seed, out, extra, threads, start_from)
    rounds = {}
    for entry in log:
        if entry.get("type") == "round":
            rounds[entry["round"]] = entry  # a resumed run may repeat a round's line: keep the last
    points, reviewed, moved = [], 0, 0
    for k, r in sorted(rounds.items()):
        reviewed += r.get("confirmed", 0) + r.get("deleted", 0)
        moved += r.get("moved", 0)
        points.append(
            {
                **{key: v for key, v in r.items() if key.startswith("AP")},
                "images": r["labelled_images"],
                "human_drawn_boxes": r["human_drawn_total"],
                "reviewed": reviewed,
                "moved": moved,
                "precision": r.get("precision"),
                "loose": r.get("loose", 0),
                "wrong_class": r.get("wrong_class", 0),
                "confirmed": r.get("confirmed", 0),  # this round's: certain boxes that replaced a GT box
                "certain": r.get("certain", 0),
                "matched": r.get("matched", 0),
                "round_drawn": r.get("drawn", 0),
                "thresholds": r.get("thresholds"),
                "round": k,
            }
        )
    reused = sum(entry.get("type") == "reused" for entry in log)
    # the seconds of the run's last process (a resumed run's: since the resume), from run_flags' summary
    summary_path, run_s = os.path.join(out, "summary.json"), None
    if os.path.isfile(summary_path):
        with open(summary_path, encoding="utf-8") as f:
            run_s = json.load(f).get("wall_s")
    return {
        "method": method,
        "seed": seed,
        "points": points,
        "reused_rounds": reused,
        "run_s": run_s,
        "final_images": final_images(out),
    }


def final_images(out: str) -> str | None:
    """A digest of the image ids in a finished run's label pool (``last.pth``), or None."""
    import hashlib

    from tools.engine.checkpoint import load_checkpoint

    path = os.path.join(out, "last.pth")
    if not os.path.isfile(path):
        return None
    asm = load_checkpoint(path).get("asm")
    if not asm:
        return None
    labelled = asm["labelled"]  # packed (a dict of columns) or one dict per record
    ids = sorted(
        map(str, labelled["image_id"] if isinstance(labelled, dict) else [r["image_id"] for r in labelled])
    )
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]


_ROUND0_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def shared_round0(args, data_flags: list[str], seed: int, n_train: int, threads: int | None) -> str:
    """The folder of ``seed``'s initial phase, trained once (``--max-rounds 0``) for every method that
    mines it; a method's run starts as a copy of it (:func:`run_flags`). Jobs of one seed wait here."""
    out = os.path.join(args.output_dir, f"asm_round0_seed{seed}")
    extra = [*asm_schedule(args, n_train), "--max-rounds", "0"]
    with _LOCKS_LOCK:
        lock = _ROUND0_LOCKS.setdefault(out, threading.Lock())
    with lock:
        run_entry(args, data_flags, seed, out, extra, threads)
    return out


def job_order(args) -> list[tuple[str, int]]:
    """Every (method, seed) job, longest first so that the last ones to start are short (two idle
    cores are not left to one job at the end): the shared initial phases (the ASM methods start from
    them; al_curve's samplers train their own), the supervised bounds (the whole pool), random (the
    rounds the others may repeat, :func:`after_baseline`), the other methods, and the reseeded noise
    runs last (the shortest with ``--noise-rounds``, never longer)."""
    mined = args.share_round0 and any(m in ASM_METHODS for m in args.methods)
    shared = [(ROUND0, s) for s in args.seeds] if mined else []
    bounds = [("supervised", s) for s in args.supervised_seeds or args.seeds]
    methods = [(m, s) for s in args.seeds for m in args.methods]
    return shared + bounds + sorted(methods, key=lambda job: (job[0] in RESEEDED, job[0] != BASELINE))


def after_baseline(args, method: str, seed: int, finished: dict[int, threading.Event]) -> None:
    """With ``--round-cache``, an ASM method waits for random of its seed: the rounds it trains on
    random's labels are then loaded from the cache. :func:`job_order` starts random earlier, so the
    wait ends."""
    if args.round_cache and method in ASM_METHODS and method != BASELINE and seed in finished:
        finished[seed].wait()


def run_all(args, data_flags: list[str], n_train: int) -> tuple[list[dict], list[dict]]:
    """Every (method, seed) job, ``--jobs`` at a time; returns the curves and the failures."""
    jobs = job_order(args)
    threads = None if args.jobs <= 1 else max(1, (os.cpu_count() or 1) // args.jobs)
    random_done = {s: threading.Event() for m, s in jobs if m == BASELINE}

    def one(job):
        method, seed = job
        try:
            if method == ROUND0:
                shared_round0(args, data_flags, seed, n_train, threads)
                return None, None
            after_baseline(args, method, seed, random_done)
            runner = sampler_curve if method in SAMPLER_METHODS else asm_curve
            return runner(args, data_flags, seed, method, n_train, threads), None
        except (
            RuntimeError,
            OSError,
            KeyError,
            ValueError,
        ) as e:  # one method's death is reported, not fatal
            print(f"  FAILED {method} seed {seed}: {e}", flush=True)
            return None, {"method": method, "seed": seed, "error": str(e)}
        finally:
            if method == BASELINE:
                random_done[seed].set()

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        done = list(pool.map(one, jobs))
    return [c for c, _ in done if c], [f for _, f in done if f]


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


def study_v3(curves: list[dict], methods: list[str]) -> dict:
    """Protocol v3's figures: the noise of every round, every reading of every ASM method against
    random, each method's summary against random, and what its confirmed boxes cost."""
    noise = noise_per_round(curves)
    compared = [m for m in methods if m in ASM_METHODS and m != BASELINE and m not in RESEEDED]
    taken, refused = [], []
    for m in compared:
        t, r = readings(curves, m, noise)
        taken, refused = taken + t, refused + r
    return {
        "noise_per_round": noise,
        "readings": taken,
        "refused_readings": refused,
        "vs_random": {m: versus_random_v3([r for r in taken if r["method"] == m]) for m in compared},
        "label_damage_ap50": {m: label_damage(curves, m) for m in compared},
    }


def replot(path: str) -> int:
    """``--replot``: the plot and tables of a finished study, from the JSON it wrote."""
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    methods, total = result["settings"]["methods"], result["settings"]["total_boxes"]
    plot(result["curves"], result["summary"], methods, total, os.path.splitext(path)[0] + ".png")
    print(tables(result["curves"], result["summary"], result["per_class"], methods, total))
    print(readings_table(result.get("readings", []), result.get("refused_readings", [])))
    return 0


def main(argv: list[str] | None = None) -> int:
    args, data_flags, data = parse(argv)
    if args.replot:
        return replot(args.replot)
    os.makedirs(args.output_dir, exist_ok=True)
    if data is None:  # BCCD (train vs val + test) or Aquarium (train vs valid)
        try:
            data_flags = study_flags(args)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        data = parse([*data_flags, "--output-dir", args.output_dir])[2]
    from datasets import AnnotationError
    from datasets.build import build_datasets

    try:
        train, _ = build_datasets(data)
    except (AnnotationError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total_boxes, classes = train.num_boxes(), list(train.classes)
    start = time.perf_counter()
    curves, failures = run_all(args, data_flags, len(train))
    with_cost(curves, args.review_cost, args.move_cost)
    if not any(c["method"] == "supervised" for c in curves):
        print(f"error: no supervised run finished: {failures}", file=sys.stderr)
        return 1
    summary = analyse(curves, total_boxes, args.methods)
    per_class = {cls: analyse(curves, total_boxes, args.methods, f"AP50/{cls}") for cls in classes}
    same_start = round0_identical(curves)
    headline = {
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
    }
    # the seconds every run's last process took (a run reused from an earlier invocation: its own)
    headline["run_s_total"] = round(sum(c.get("run_s") or 0 for c in curves), 1)
    headline["wall_s"] = round(time.perf_counter() - start, 1)  # this invocation (reused runs cost nothing)
    result = {
        **headline,
        "settings": {
            **vars(args),
            "data_flags": data_flags,
            "classes": classes,
            "total_boxes": total_boxes,
            "train_images": len(train),
        },
        "summary": summary,
        "per_class": per_class,
        "curves": curves,
    }
    for path in filter(None, (os.path.join(args.output_dir, "efficiency.json"), args.json_out)):
        atomic_write_text(path, json.dumps(result, indent=1))
    for path in filter(None, (os.path.join(args.output_dir, "efficiency.json"), args.json_out)):
        plot(curves, summary, args.methods, total_boxes, os.path.splitext(path)[0] + ".png")
    table = tables(curves, summary, per_class, args.methods, total_boxes)
    table += "\n" + readings_table(headline["readings"], headline["refused_readings"])
    atomic_write_text(os.path.join(args.output_dir, "efficiency.md"), table)
    print(table)
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
