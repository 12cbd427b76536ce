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
* ``random/reseed``: random with another ``--train-seed``: the same labels round by round, another
  batch order (and, with ``--no-share-round0``, another initialisation); how far it lands from random
  is the noise floor of every margin;
* ``al_curve/random``, ``al_curve/entropy``: ``al_curve.py`` learning curves, another trainer
  (extra curves, not the baseline).

Round 0 (the initial pool's model) is the same for every method of a seed: with ``--share-round0``
(the default) it is trained once per seed (``asm_round0_seed<s>``, ``--max-rounds 0``) and each
method's run starts as a copy of it, resumed with its own round options (README, "One initial model,
several strategies"); with ``--no-share-round0`` each run trains its own, the same by
``--deterministic``. ``round0_identical`` says whether it was (AP50 equal within 1e-6).

Human cost, two x-axes: boxes drawn from scratch, and a weighted cost = drawn + ``--review-cost`` x
(confirmed + deleted) + ``--move-cost`` x moved (README, "What a round costs the human").

Data: BCCD by default (pool = ``train``, 205 images; evaluation = ``val`` + ``test``, 159 images), or
any labelled dataset through the entry's own data options, forwarded as they are:

    python bench/asm_efficiency.py --jobs 9 --json-out docs/efficiency_bccd.json      # v2 protocol (GPU)
    python bench/asm_efficiency.py --cpu --jobs 3 --json-out docs/efficiency_bccd_cpu.json     # CPU protocol
    python bench/asm_efficiency.py --quick                                             # smoke run
    python bench/asm_efficiency.py --quick --dataset voc --voc-roots data/my_voc --discover-classes

Each method resumes from its checkpoints, so an interrupted benchmark continues when the command is
run again; a method that dies (a non-finite loss, say) is reported and the others go on.

Writes ``efficiency.json`` (settings, every point, the summary), ``efficiency.png`` and
``efficiency.md`` in ``--output-dir``. The last line printed is one JSON object with
``default_method``, ``supervised_ap50``, ``round0_identical``, ``box_fraction_to_95pct`` and
``box_fraction_to_100pct`` (per method; null where a method does not reach the level in every
seed), ``asm_vs_random`` and ``seeds``.
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

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from asm.pools import image_count  # noqa: E402
from bench.common import SHARED_WEIGHTS  # noqa: E402
from datasets.atomic import atomic_write_text  # noqa: E402
from datasets.build import DataOptions, add_data_args  # noqa: E402
from tools.curves import mean_curve  # noqa: E402
from tools.logs import read_jsonl  # noqa: E402

BCCD_CLASSES = ("RBC", "WBC", "Platelets")
SAMPLER_METHODS = {"al_curve/random": "random", "al_curve/entropy": "entropy"}  # another trainer
DEFAULT_METHOD = "v1+"  # train_asm_one.py's own defaults
BASELINE = "random"  # the same trainer, every box drawn
# random again with another training seed: the same labels round by round, another initialisation and
# batch order. |AP(random) - AP(noise)| is the training noise that any change of labels also brings.
NOISE = "random/reseed"
NOISE_SEED_OFFSET = 1000
ROUND0 = "round0"  # run_all's job of a seed's shared initial phase (--share-round0)
ASM_METHODS = {  # name -> train_asm_one.py flags besides the shared protocol
    "random": ["--strategy", "random"],
    "v1+": [],
    "v1+/replay": ["--round-train", "replay"],
    "topk_v2": ["--strategy", "topk_v2"],
    "v1+/gate": ["--mining-gate", "0.5"],
    "v1+/cand": ["--candidates", "4"],
    "v1+/fixed": ["--certain-precision", "none"],  # one certain threshold (--certain-thre) for all
    "v1+/calib": ["--certain-precision", "0.85"],  # per-class thresholds calibrated on the validation set
    NOISE: ["--strategy", "random"],  # and --train-seed seed + NOISE_SEED_OFFSET (asm_curve)
}
DEFAULT_METHODS = ("random", "v1+")
# The CPU protocol: 3 seeds of random + v1+/fixed + v1+/calib + random/reseed and one supervised bound
# on BCCD, --jobs 3 (three one-thread processes on 2 idle cores): 90 min with round 0 shared per seed,
# the round cache and freed memory kept (tools.process.keep_freed_memory). Batches of 2 give the 20
# initial images 300 steps in 30 epochs: with batches of 4 (150 steps) round 0 sat on the RoI head's
# background plateau for up to 19 epochs and ended at AP50 0.15-0.40 by training seed alone. 8 epochs
# per round: 6 left seed 1 0.0025 under random (BENCHMARKS.md has every study's times).
CPU_PROTOCOL = {
    "min_size": 416,
    "epochs": 30,
    "step_epochs": 8,
    "batch_size": 2,
    "supervised_epochs": 14,
    "steps": 5,
    "methods": ["random", "v1+/fixed", "v1+/calib", NOISE],
    "supervised_seeds": [1],  # one bound shared by the seeds (it differs only in initialisation)
    "noise_rounds": 2,  # on BCCD the margins are read at round 2: random's later budgets lie past ASM's
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
    p.add_argument("--bccd-root", default=os.path.join(ROOT, "..", "shared", "data", "bccd"))
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
    p.add_argument(
        "--noise-rounds",
        type=int,
        default=None,
        help="random/reseed stops after this round (>= 2: the noise floor is read from round 2, where "
        "the margins are); default: as many rounds as the others",
    )
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


def max_rounds(args, method: str) -> int | None:
    """The last round of a method's run: ``--steps`` points, random/reseed's ``--noise-rounds`` when
    fewer; None: until the pool is exhausted."""
    last = args.steps - 1 if args.steps else None
    if method == NOISE and args.noise_rounds is not None:
        last = args.noise_rounds if last is None else min(last, args.noise_rounds)
    return last


def asm_curve(args, data_flags: list[str], seed: int, method: str, n_train: int, threads: int | None) -> dict:
    """One ``train_asm_one.py`` run (``method`` "supervised": ``--strategy none``)."""
    out = os.path.join(args.output_dir, f"asm_{method.replace('+', 'plus').replace('/', '_')}_seed{seed}")
    extra = ["--review-cost", str(args.review_cost), "--move-cost", str(args.move_cost)]
    if method == "supervised":
        extra += ["--strategy", "none", "--epochs", str(args.supervised_epochs)]
    else:
        extra += [*asm_schedule(args, n_train), *ASM_METHODS[method]]
        if method == NOISE:
            extra += ["--train-seed", str(seed + NOISE_SEED_OFFSET)]
        last = max_rounds(args, method)
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
    return {"method": method, "seed": seed, "points": points, "reused_rounds": reused, "run_s": run_s}


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
    return shared + bounds + sorted(methods, key=lambda job: (job[0] == NOISE, job[0] != BASELINE))


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


def with_cost(curves: list[dict], review_cost: float, move_cost: float) -> None:
    for c in curves:
        for p in c["points"]:
            p["cost"] = round(
                p["human_drawn_boxes"] + review_cost * p["reviewed"] + move_cost * p["moved"], 2
            )


def first_reaching(points: list[dict], key: str, target: float, x: str = "human_drawn_boxes") -> float | None:
    """``x`` at the first point whose ``key`` reaches ``target`` (None if none does)."""
    return next((p[x] for p in points if p.get(key) is not None and p[key] >= target - 1e-12), None)


def _interp(points: list[dict], x: str, key: str, at: np.ndarray) -> np.ndarray:
    """``key`` at ``at`` (linear between points, flat beyond them): for the area under a curve."""
    return np.interp(at, [p[x] for p in points], [p[key] for p in points])


def step_index(points: list[dict], x: str, at: float) -> int | None:
    """Index of the last point whose ``x`` is at or below ``at`` (step interpolation: what the curve
    had measured with no more than that budget), or None outside the curve: before its first point,
    and past its last (a budget the curve never had)."""
    reached = [i for i, p in enumerate(points) if p[x] <= at + 1e-9]
    return reached[-1] if reached and at <= points[-1][x] + 1e-9 else None


def analyse(curves: list[dict], total_boxes: int, methods: list[str], key: str = "AP50") -> dict:
    """For one metric (``AP50`` or ``AP50/<class>``): the supervised value, box and cost fractions
    to reach 90/95/100% of it, the area under the curve, and each ASM method against random."""
    bounds = {c["seed"]: c["points"][-1][key] for c in curves if c["method"] == "supervised"}
    shared = float(np.mean(list(bounds.values()))) if bounds else None
    seeds = {c["seed"] for c in curves}
    sup = {s: bounds.get(s, shared) for s in seeds} if bounds else {}  # a seed without its own: the mean
    result = {
        "supervised": _mean_std(list(bounds.values())),
        "box_fraction": {},
        "cost_fraction": {},
        "auc": {},
        "vs_random": {},
    }
    for m in methods:
        runs = [c for c in curves if c["method"] == m and c["seed"] in sup]
        if not runs:
            continue
        for name, x in (("box_fraction", "human_drawn_boxes"), ("cost_fraction", "cost")):
            result[name][m] = {}
            for level in LEVELS:
                reached = [first_reaching(c["points"], key, level * sup[c["seed"]], x) for c in runs]
                # a level counts as reached only when every seed reaches it; the mean over seeds then
                frac = None if None in reached else round(float(np.mean(reached)) / total_boxes, 4)
                result[name][m][f"{round(level * 100)}pct"] = frac
        # mean AP over the budget from the shared initial pool to every box drawn (flat past a curve's end)
        start = min(c["points"][0]["human_drawn_boxes"] for c in runs)
        grid = np.linspace(start, total_boxes, 201)
        result["auc"][m] = round(
            float(np.mean([_interp(c["points"], "human_drawn_boxes", key, grid).mean() for c in runs])), 4
        )
    randoms = {c["seed"]: c["points"] for c in curves if c["method"] == BASELINE}
    noise = training_noise([c for c in curves if c["method"] == NOISE], randoms, key)
    result["training_noise"] = noise
    for m in (m for m in methods if m in ASM_METHODS and m not in (BASELINE, NOISE)):
        runs = [c for c in curves if c["method"] == m and c["seed"] in randoms]
        result["vs_random"][m] = versus_random(runs, randoms, key, noise)
    return result


def training_noise(runs: list[dict], randoms: dict[int, list[dict]], key: str = "AP50") -> dict | None:
    """How far two trainings on the same labels land apart: ``|AP(random) - AP(random/reseed)|`` at
    each round after round 1 (the rounds the margins are read at), over the seeds. ``mean`` is the
    noise floor printed beside every margin; ``max`` the largest gap training noise alone made;
    ``per_round`` the mean gap of each round (noise shrinks as the models near their plateau)."""
    by_round: dict[int, list[float]] = {}
    for c in (c for c in runs if c["seed"] in randoms):
        for k, (p, q) in enumerate(list(zip(c["points"], randoms[c["seed"]]))[2:], start=2):
            by_round.setdefault(k, []).append(abs(p[key] - q[key]))
    gaps = [g for v in by_round.values() for g in v]
    if not gaps:
        return None
    return {
        "mean": round(float(np.mean(gaps)), 4),
        "max": round(float(np.max(gaps)), 4),
        "n": len(gaps),
        "per_round": {k: round(float(np.mean(v)), 4) for k, v in sorted(by_round.items())},
    }


def versus_random(
    runs: list[dict], randoms: dict[int, list[dict]], key: str = "AP50", noise: dict | None = None
) -> dict:
    """One ASM method's curves (one per seed) against random's of the same seed, after round 1.

    * At equal drawn boxes, by step interpolation: at each of random's points, the ASM curve's last
      point with no more drawn boxes than random's (:func:`step_index`). ASM is credited only with what
      it had measured on that budget or less, random with its own measured point. A straight line
      between ASM's or random's points would credit one side with values between two measurements
      (on a concave curve the chord runs low); reading random by a step at ASM's budgets would
      credit random with less than it has and favour ASM. Only random's points within the ASM
      curve's range are read: past its last point ASM never had that budget (every method stops
      at the same number of images, ASM on fewer boxes), so no measurement of either side exists
      there; ``margin_at_equal_images`` compares the ends.
    * At equal images: random's point of the same round (both add K images per round).
    * The noise floor: the mean gap between two trainings on the same labels (``noise``, from
      :func:`training_noise`). Training is seeded per epoch, so identical labels give an identical
      model: ``|ASM - random|`` at round 1 (``round1_gap_ap50``) is 0 whenever the method confirmed
      no box in round 1 (``same_labels_round1``), and says nothing about noise.

    ``min_margin_ap50`` is the smallest equal-box margin over the seeds and rounds after round 1,
    ``at_or_above_after_round1`` whether it is >= 0 in every seed, ``within_noise_after_round1``
    whether it is >= minus the largest gap training noise alone made (``noise["max"]``).
    ``above_below_equal`` counts those margins by sign (equal: within 1e-9): a method no better than
    random lands above in about half of them, so "at or above in every seed" says little while the
    noise floor is larger than the margins. ``margins_by_lead`` splits them by how many rounds
    ASM's point is ahead of random's: at lead 0 both curves measured the same round, which for a
    method that keeps the queue's order (``v1+``) means the same images, so the margin is training
    noise on labels that differ only where the human confirmed a model's box; from lead 1 on ASM's
    saving bought it a round's images for random's boxes.
    """
    boxes: dict[int, list[float]] = {}
    images: dict[int, list[float]] = {}
    by_lead: dict[int, list[float]] = {}
    per_seed, round1, same_labels = {}, [], []
    for c in runs:
        ref = randoms[c["seed"]]
        seed_boxes = []
        for k, r in enumerate(ref[1:], start=1):  # after the shared round 0
            j = step_index(c["points"], "human_drawn_boxes", r["human_drawn_boxes"])
            if j is not None:
                margin = c["points"][j][key] - r[key]
                boxes.setdefault(k, []).append(margin)
                if k >= 2:
                    seed_boxes.append(margin)
                    by_lead.setdefault(j - k, []).append(margin)
            if k < len(c["points"]):
                images.setdefault(k, []).append(c["points"][k][key] - r[key])
        if len(c["points"]) > 1 and len(ref) > 1:
            round1.append(abs(c["points"][1][key] - ref[1][key]))
            same_labels.append(c["points"][1].get("confirmed", 0) == 0)
        per_seed[c["seed"]] = {
            "min_margin_ap50": round(min(seed_boxes), 4) if seed_boxes else None,
            "at_or_above_after_round1": bool(seed_boxes) and min(seed_boxes) >= -1e-9,
        }
    late_boxes = [v for k, vs in boxes.items() if k >= 2 for v in vs]
    late_images = [v for k, vs in images.items() if k >= 2 for v in vs]
    worst = round(min(late_boxes), 4) if late_boxes else None
    return {
        "min_margin_ap50": worst,
        "at_or_above_after_round1": bool(per_seed)
        and all(s["at_or_above_after_round1"] for s in per_seed.values()),
        "margin_at_equal_images": round(min(late_images), 4) if late_images else None,
        "noise_floor_ap50": noise["mean"] if noise else None,
        "noise_max_ap50": noise["max"] if noise else None,
        "within_noise_after_round1": None
        if noise is None or worst is None
        else worst >= -noise["max"] - 1e-9,
        "above_below_equal": _signs(late_boxes),
        "margins_by_lead": {
            lead: {"n": len(v), "min": round(min(v), 4), "above_below_equal": _signs(v)}
            for lead, v in sorted(by_lead.items())
        },
        "round1_gap_ap50": round(float(np.mean(round1)), 4) if round1 else None,
        "same_labels_round1": bool(same_labels) and all(same_labels),
        "mean_margin_per_round": {k: round(float(np.mean(v)), 4) for k, v in sorted(boxes.items())},
        "mean_margin_at_equal_images_per_round": {
            k: round(float(np.mean(v)), 4) for k, v in sorted(images.items())
        },
        "per_seed": per_seed,
    }


def _signs(margins: list[float]) -> list[int]:
    """How many margins are above, below and equal to zero (equal: within 1e-9)."""
    signs = [int(np.sign(v)) if abs(v) > 1e-9 else 0 for v in margins]
    return [signs.count(1), signs.count(-1), signs.count(0)]


def default_method(methods: list[str]) -> str:
    """The method that runs ``train_asm_one.py``'s defaults: ``v1+`` when it ran, else the one whose
    flags leave every ASM option at its default (``v1+/fixed`` or ``v1+/calib``)."""
    from tools.options import add_asm_args

    if DEFAULT_METHOD in methods:
        return DEFAULT_METHOD
    parser = argparse.ArgumentParser()
    add_asm_args(parser)
    defaults = vars(parser.parse_args([]))
    same = [m for m in methods if m in ASM_METHODS and vars(parser.parse_args(ASM_METHODS[m])) == defaults]
    return same[0] if same else DEFAULT_METHOD


def sl_precision(curves: list[dict], methods: list[str]) -> dict:
    """Per ASM method: the share of its certain boxes that were right, over every round and seed
    (``overall``), per round (mean over the seeds that had certain boxes), and the share of the new
    images' boxes confirmed rather than drawn (``confirmed_share``)."""
    out = {}
    for m in (m for m in methods if m in ASM_METHODS and m not in (BASELINE, NOISE)):
        runs = [c for c in curves if c["method"] == m]
        conf = sum(p.get("confirmed", 0) for c in runs for p in c["points"])
        certain = sum(p.get("certain", 0) for c in runs for p in c["points"])
        matched = sum(p.get("matched", 0) for c in runs for p in c["points"])
        drawn = sum(p.get("round_drawn", 0) for c in runs for p in c["points"][1:])
        by_round: dict[int, list[float]] = {}
        for c in runs:
            for k, p in enumerate(c["points"][1:], start=1):
                if p.get("precision") is not None:
                    by_round.setdefault(k, []).append(p["precision"])
        out[m] = {
            "overall": round(matched / certain, 4) if certain else None,
            "per_round": {k: round(float(np.mean(v)), 4) for k, v in sorted(by_round.items())},
            "confirmed": conf,
            "confirmed_share": round(conf / (conf + drawn), 4) if conf + drawn else 0.0,
        }
    return out


def round0_identical(curves: list[dict], tol: float = 1e-6) -> dict[int, bool]:
    """Per seed: whether every same-trainer method's round 0 (the model of the shared initial pool)
    has the same AP50 within ``tol``."""
    by_seed: dict[int, list[float]] = {}
    for c in curves:
        if c["method"] in ASM_METHODS and c["method"] != NOISE and c["points"]:
            by_seed.setdefault(c["seed"], []).append(c["points"][0]["AP50"])
    return {seed: max(aps) - min(aps) <= tol for seed, aps in sorted(by_seed.items())}


def _mean_std(values: list[float]) -> dict | None:
    return (
        {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4)} if values else None
    )


def plot(curves: list[dict], summary: dict, methods: list[str], total_boxes: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=90)
    sup = summary["supervised"]["mean"]
    for ax, key, label in (
        (axes[0], "human_drawn_boxes", "human-drawn boxes (% of all train boxes)"),
        (axes[1], "cost", "weighted cost (% of drawing every box)"),
    ):
        for i, m in enumerate(methods):
            runs = [c["points"] for c in curves if c["method"] == m]
            if not runs:
                continue
            xs, mean, std = mean_curve(runs, key)
            xs = 100 * xs / total_boxes
            # each later line thinner, so that a curve another one equals still shows around it
            width = 1.2 + 1.0 * (len(methods) - 1 - i)
            ax.plot(xs, mean, marker="s" if m in ASM_METHODS else "o", markersize=3, linewidth=width, label=m)
            ax.fill_between(xs, mean - std, mean + std, alpha=0.15)
        ax.axhline(sup, color="k", linestyle="--", linewidth=1, label=f"supervised {sup:.3f}")
        ax.set_xlabel(label)
        ax.set_ylabel("AP50 (evaluation split)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    seeds = sorted({c["seed"] for c in curves})
    fig.suptitle(
        f"AP50 against human effort (seeds {seeds}; mean +- std; {BASELINE}: same trainer, every box drawn)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _lead_line(method: str, by_lead: dict) -> str:
    """``v1+: lead 0: 1 margin(s), min -0.036 (0 / 1 / 0); lead 1: ...`` (above / below / equal)."""
    parts = [
        f"lead {lead}: {v['n']} margin(s), min {v['min']:+.3f} ({' / '.join(map(str, v['above_below_equal']))})"
        for lead, v in by_lead.items()
    ]
    return f"{method}: " + "; ".join(parts)


def tables(curves: list[dict], summary: dict, per_class: dict, methods: list[str], total_boxes: int) -> str:
    """Markdown: the summary per method, per class, and every point."""
    pct = lambda v: "never" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    sup = summary["supervised"]
    lines = [
        f"Supervised upper bound: AP50 {sup['mean']:.3f} +- {sup['std']:.3f} ({total_boxes} train boxes, all drawn).",
        "",
        "| method | boxes to 90% | 95% | 100% of supervised AP50 | cost to 100% | AUC AP50 "
        "| min margin vs random after round 1 | above / below / equal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in (m for m in methods if m in summary["box_fraction"]):
        b, vs = summary["box_fraction"][m], summary["vs_random"].get(m, {})
        margin = vs.get("min_margin_ap50")
        lines.append(
            f"| {m} | {pct(b['90pct'])} | {pct(b['95pct'])} | {pct(b['100pct'])} | "
            f"{pct(summary['cost_fraction'][m]['100pct'])} | {summary['auc'][m]:.3f} | "
            f"{'-' if margin is None else f'{margin:+.3f}'} | "
            f"{' / '.join(map(str, vs.get('above_below_equal', []))) or '-'} |"
        )
    leads = [
        _lead_line(m, vs["margins_by_lead"])
        for m, vs in summary["vs_random"].items()
        if vs.get("margins_by_lead")
    ]
    if leads:
        lines += ["", "Margins by how many rounds ASM's point is ahead of random's (lead 0: the same round):"]
        lines += [f"- {line}" for line in leads]
    noise = summary.get("training_noise")
    if noise:
        per_round = ", ".join(f"round {k}: {v:.3f}" for k, v in noise["per_round"].items())
        lines += ["", f"Training noise (same labels, another training seed; mean AP50 gap): {per_round}."]
    lines += [
        "",
        "| class | supervised AP50 | " + " | ".join(f"{m}: boxes to 100% / AUC" for m in methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for cls, s in per_class.items():
        cells = [
            f"{pct(s['box_fraction'][m]['100pct'])} / {s['auc'][m]:.3f}" if m in s["auc"] else "-"
            for m in methods
        ]
        lines.append(f"| {cls} | {s['supervised']['mean']:.3f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| method | seed | point | images | drawn | % boxes | cost | AP50 | precision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in curves:
        for k, p in enumerate(c["points"]):
            prec = "-" if p.get("precision") is None else f"{p['precision']:.3f}"
            lines.append(
                f"| {c['method']} | {c['seed']} | {k} | {p['images']} | {p['human_drawn_boxes']} | "
                f"{100 * p['human_drawn_boxes'] / total_boxes:.1f}% | {p['cost']:.0f} | {p['AP50']:.3f} | {prec} |"
            )
    return "\n".join(lines) + "\n"


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
    if args.noise_rounds is not None and args.noise_rounds < 2:
        parser.error(
            f"--noise-rounds {args.noise_rounds}: the noise floor is read from round 2 on; give 2 or more"
        )
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


def replot(path: str) -> int:
    """``--replot``: the plot and tables of a finished study, from the JSON it wrote."""
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    methods, total = result["settings"]["methods"], result["settings"]["total_boxes"]
    plot(result["curves"], result["summary"], methods, total, os.path.splitext(path)[0] + ".png")
    print(tables(result["curves"], result["summary"], result["per_class"], methods, total))
    return 0


def main(argv: list[str] | None = None) -> int:
    args, data_flags, data = parse(argv)
    if args.replot:
        return replot(args.replot)
    os.makedirs(args.output_dir, exist_ok=True)
    if data is None:  # BCCD: train vs val + test
        if not os.path.isdir(os.path.join(args.bccd_root, "Annotations")):
            print(
                f"error: {args.bccd_root} is not a VOC root (no Annotations/); pass --bccd-root or the data "
                "options of train_asm_one.py (--dataset ...)",
                file=sys.stderr,
            )
            return 2
        n_train, n_eval = args.quick_images if args.quick else (None, None)
        data_flags = bccd_flags(
            bench_root(os.path.abspath(args.bccd_root), args.output_dir, args.eval_splits, n_train, n_eval)
        )
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
        "default_method": default_method(args.methods),
        "baseline": BASELINE,
        "supervised_ap50": summary["supervised"]["mean"],
        "round0_identical": bool(same_start) and all(same_start.values()),
        "round0_identical_per_seed": same_start,
        "interpolation": "step",
        **{
            f"box_fraction_to_{level}pct": {m: v[f"{level}pct"] for m, v in summary["box_fraction"].items()}
            for level in (90, 95, 100)
        },
        "asm_vs_random": {
            m: {
                k: v[k]
                for k in (
                    "min_margin_ap50",
                    "at_or_above_after_round1",
                    "margin_at_equal_images",
                    "noise_floor_ap50",
                    "noise_max_ap50",
                    "within_noise_after_round1",
                    "above_below_equal",
                    "margins_by_lead",
                    "round1_gap_ap50",
                    "same_labels_round1",
                )
            }
            for m, v in summary["vs_random"].items()
        },
        "training_noise_ap50": summary["training_noise"],
        "sl_precision": sl_precision(curves, args.methods),
        "reused_rounds": {
            m: sum(c.get("reused_rounds", 0) for c in curves if c["method"] == m) for m in args.methods
        },
        "failed": failures,
        "seeds": args.seeds,
    }
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
    atomic_write_text(os.path.join(args.output_dir, "efficiency.md"), table)
    print(table)
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
