"""The efficiency study's processes: one ``train_asm_one.py`` run per folder, reused only for the flags
it was made with, continued when it was cut off (``bench/asm_efficiency.py``, ``bench/bench_stability.py``)."""

from __future__ import annotations

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
from bench.efficiency_analysis import (  # noqa: E402
    ASM_METHODS,
    BASELINE,
    NOISE_SEED_OFFSET,
    RESEEDED,
    SAMPLER_METHODS,
)
from datasets.atomic import atomic_write_text  # noqa: E402
from tools.runtime.logs import read_jsonl  # noqa: E402

ROUND0 = "round0"  # run_all's job of a seed's shared initial phase (--share-round0)


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
