"""Does the initial phase train without diverging? The efficiency study's and the demo's, many seeds.

Runs, each as its own ``train_asm_one.py`` process that stops after the initial phase
(``--max-rounds 0``):

* the CPU efficiency study's initial phase (``bench/asm_efficiency.py --cpu``: BCCD train, 20
  images, the epochs, input size and batch of its ``CPU_PROTOCOL``, ImageNet MobileNetV2-FPN from
  ``../shared/weights`` when present, ``--deterministic``) for ``--seeds`` at each of ``--threads``
  (one thread: two runs side by side; two threads: one at a time);
* the demo's pretrain phase (``python train_asm_one.py`` with its defaults, ``--max-rounds 0``) for
  ``--demo-seeds``, one thread each.

A run diverged when it exits with code 5 (rollbacks exhausted). Every run resumes from its
checkpoints and a finished one is reused only when its flags are the same, so an interrupted bench
continues when run again.

    python bench/bench_stability.py --json-out docs/stability_cpu.json

The last line is one JSON object: ``runs``, ``diverged``, ``ap50_mean`` (the BCCD runs that
finished), ``demo_ap50_mean``, ``rollbacks``, ``wall_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.asm_efficiency import CPU_PROTOCOL, SHARED_WEIGHTS  # noqa: E402
from bench.study_data import bccd_flags, bench_root  # noqa: E402
from bench.study_runs import common_flags, run_flags  # noqa: E402
from datasets.atomic import atomic_write_text  # noqa: E402

DIVERGED = 5  # train_asm_one.py's exit code when the rollbacks are exhausted


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bccd-root", default=os.path.join(ROOT, "..", "shared", "data", "bccd"))
    p.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--demo-seeds", nargs="*", type=int, default=[1, 2, 3])
    p.add_argument("--lr", type=float, default=None, help="the study's --lr (default: the study's)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train_asm_one.py flags")
    p.add_argument("--output-dir", default=os.path.join(ROOT, "outputs", "stability"))
    p.add_argument("--json-out", default=None)
    return p


def study_args(lr: float | None) -> argparse.Namespace:
    """The CPU study's protocol values (:data:`bench.asm_efficiency.CPU_PROTOCOL`)."""
    from bench.asm_efficiency import get_args_parser as study_parser

    args = study_parser().parse_args(["--cpu"])
    for key, value in CPU_PROTOCOL.items():
        setattr(args, key, value)
    if lr is not None:
        args.lr = lr
    args.weights_backbone = SHARED_WEIGHTS if os.path.isfile(SHARED_WEIGHTS) else None
    return args


def one_run(name: str, out: str, flags: list[str], threads: int) -> dict:
    """One initial phase; its AP50, losses by epoch and rollbacks, or that it diverged."""
    started = time.perf_counter()
    try:
        log = run_flags(flags, out, threads)
    except RuntimeError as e:
        diverged = str(e).startswith(f"exit code {DIVERGED}:")
        return {"run": name, "threads": threads, "diverged": diverged, "ap50": None, "error": str(e)[:300]}
    epochs = [e for e in log if e["type"] == "epoch"]
    rounds = [e for e in log if e["type"] == "round" and e["round"] == 0]
    return {
        "run": name,
        "threads": threads,
        "diverged": False,
        "ap50": rounds[-1]["AP50"] if rounds else None,
        "losses_by_epoch": [round(e["losses"]["loss"], 4) for e in epochs],
        "rollbacks": epochs[-1]["rollbacks"] if epochs else 0,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def bccd_jobs(args, study) -> dict[str, tuple[str, list[str], int]]:
    """The CPU study's initial phase on BCCD per seed and thread count: name -> (folder, flags, threads)."""
    data = bccd_flags(
        bench_root(os.path.abspath(args.bccd_root), args.output_dir, ["val", "test"], None, None)
    )
    bccd = {}
    for seed in args.seeds:
        for threads in args.threads:
            name = f"bccd_seed{seed}_t{threads}"
            flags = [
                *common_flags(study, data, seed),
                "--batch-size",
                str(study.batch_size),
                "--K",
                "20",
                "--initial",
                "20",
                "--epochs",
                str(study.epochs),
                "--max-rounds",
                "0",
                "--eval-interval",
                "100000",
                *args.extra,
            ]
            bccd[name] = (os.path.join(args.output_dir, name), flags, threads)
    return bccd


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    study = study_args(args.lr)
    bccd = bccd_jobs(args, study)
    demo = {
        f"demo_seed{seed}": (
            os.path.join(args.output_dir, f"demo_seed{seed}"),
            ["--seed", str(seed), "--max-rounds", "0", *args.extra],
            1,
        )
        for seed in args.demo_seeds
    }
    jobs = {**bccd, **demo}
    start = time.perf_counter()
    singles = [(n, *j) for n, j in jobs.items() if j[2] == 1]
    with ThreadPoolExecutor(2) as pool:  # one-thread runs two at a time on the two cores
        runs = list(pool.map(lambda job: one_run(job[0], job[1], job[2], 1), singles))
    runs += [one_run(n, out, flags, t) for n, (out, flags, t) in jobs.items() if t != 1]
    finished = [r for r in runs if r["run"] in bccd and r["ap50"] is not None]
    demo_done = [r for r in runs if r["run"] in demo and r["ap50"] is not None]
    result = {
        "what": "initial phases without divergence: the CPU efficiency study's (BCCD, 20 images, "
        f"{study.epochs} epochs, {study.min_size} px, batch {study.batch_size}) per seed and thread count, "
        "and the demo's pretrain phase (its defaults)",
        "runs": len(runs),
        "diverged": sum(r["diverged"] for r in runs),
        "failed_otherwise": sum(r["ap50"] is None and not r["diverged"] for r in runs),
        "ap50_mean": round(sum(r["ap50"] for r in finished) / len(finished), 4) if finished else None,
        "demo_ap50_mean": round(sum(r["ap50"] for r in demo_done) / len(demo_done), 4) if demo_done else None,
        "rollbacks": sum(r.get("rollbacks", 0) for r in runs),
        "study_lr": study.lr,
        "extra_flags": args.extra,
        "wall_s": round(time.perf_counter() - start, 1),
        "per_run": runs,
    }
    for path in filter(None, (os.path.join(args.output_dir, "stability.json"), args.json_out)):
        atomic_write_text(path, json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("per_run", "what")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
