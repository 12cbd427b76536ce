"""CPU training and evaluation with glibc's malloc as it comes, against :func:`keep_freed_memory`.

glibc hands every large freed block back to the system and faults the next one's pages in again;
``tools.runtime.process.keep_freed_memory`` (called by every entry at its start) keeps them. The allocator's
settings are fixed once a process has set them, so each setting runs in child processes of this one,
alternately (``--repeat`` pairs, which goes first swapping each time), ``--jobs`` of a setting side by
side, as the study runs its one-thread jobs. Each child trains ``--steps`` batches and evaluates
``--eval-images`` images under ``--deterministic``'s settings, and prints its times, peak memory and the
sum of its losses.

* ``train_speedup`` / ``eval_speedup``: glibc's default seconds per image over the kept setting's
  (best child of each);
* ``rss_ratio``: the kept setting's peak resident memory over the default's (largest child of each);
* ``same_losses``: every child, of either setting, summed the same losses bit for bit (the same
  machine, thread count and code: only the allocator differs).

    python bench/bench_malloc.py                               # BCCD at 416 px, batch 2, one job
    python bench/bench_malloc.py --jobs 3 --threads 1          # the CPU study's three jobs on 2 cores
    # last line: {"train_speedup": ..., "eval_speedup": ..., "rss_ratio": ..., "same_losses": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import add_bench_args, bench_data, emit, side_by_side, study_model, train_steps  # noqa: E402
from datasets import AnnotationError  # noqa: E402
from datasets.torch_data import DetectionDataset, collate_fn  # noqa: E402
from datasets.transforms import build_transforms  # noqa: E402
from tools.engine.fit import FitConfig, make_optimizer  # noqa: E402
from tools.runtime.process import deterministic_mode, keep_freed_memory, malloc_left_alone  # noqa: E402

SETTINGS = ("default", "kept")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_args(p, min_size=416, device=False)  # the CPU alone
    p.set_defaults(data="bccd")
    p.add_argument("--steps", type=int, default=30, help="training batches per child")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--eval-images", type=int, default=20)
    p.add_argument("--jobs", type=int, default=1, help="children of a setting side by side")
    p.add_argument("--threads", type=int, default=1, help="threads per child")
    p.add_argument(
        "--repeat", type=int, default=2, help="rounds of (default, kept), which goes first swapping"
    )
    p.add_argument("--json-out", default=None, help="also write the figures here")
    p.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)  # one child process
    return p


def child(args: argparse.Namespace) -> dict:
    """One process with ``args.child``'s allocator setting: seconds per image, peak memory, loss sum."""
    deterministic_mode()
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory() if args.child == "kept" else False
    torch.manual_seed(0)  # the augmentations, the initialisation, the RPN's and RoI head's sampling
    data = bench_data(args)
    n = args.steps * args.batch_size
    dataset = DetectionDataset(data.records[:n], data.image_root, build_transforms(True))
    batches = [
        [list(part) for part in collate_fn([dataset[i] for i in range(j, j + args.batch_size)])]
        for j in range(0, n, args.batch_size)
    ]
    model = study_model(args, data)
    optimizer = make_optimizer(model, FitConfig(lr=0.005, batch_size=args.batch_size))
    start = time.perf_counter()
    losses = train_steps(model, optimizer, batches)
    train_s = (time.perf_counter() - start) / n
    model.eval()
    evaluated = min(args.eval_images, n)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(evaluated):
            model([dataset[i][0]])
    eval_s = (time.perf_counter() - start) / evaluated
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "kept": kept,
        "train_s": train_s,
        "eval_s": eval_s,
        "peak_mb": peak_mb,
        "loss_sum": sum(loss.item() for loss in losses),
    }


def figures(runs: dict[str, list[dict]]) -> dict:
    """The ratios of the best (times) and largest (memory) child of each setting."""
    best = {s: {k: min(x[k] for x in runs[s]) for k in ("train_s", "eval_s")} for s in SETTINGS}
    peak = {s: max(x["peak_mb"] for x in runs[s]) for s in SETTINGS}
    return {
        "train_speedup": round(best["default"]["train_s"] / best["kept"]["train_s"], 3),
        "eval_speedup": round(best["default"]["eval_s"] / best["kept"]["eval_s"], 3),
        "rss_ratio": round(peak["kept"] / peak["default"], 3),
        "same_losses": len({x["loss_sum"] for s in SETTINGS for x in runs[s]}) == 1,
        "train_s_per_image": {s: round(best[s]["train_s"], 4) for s in SETTINGS},
        "eval_s_per_image": {s: round(best[s]["eval_s"], 4) for s in SETTINGS},
        "peak_mb": {s: round(peak[s]) for s in SETTINGS},
    }


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse in one line what would fail in the children or measure nothing; the data is read here
    once (the demo's images are written before the children read them)."""
    for name in ("steps", "batch_size", "eval_images", "jobs", "threads", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    why = malloc_left_alone()
    if why:
        parser.error(f"keep_freed_memory would change nothing here ({why}): nothing to compare")
    try:
        data = bench_data(args)
    except (AnnotationError, FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    if len(data.records) < args.steps * args.batch_size:
        parser.error(
            f"--steps {args.steps} x --batch-size {args.batch_size} needs "
            f"{args.steps * args.batch_size} images; the data has {len(data.records)}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    check(parser, args)
    start = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for r in range(args.repeat):
        for setting in SETTINGS if r % 2 == 0 else SETTINGS[::-1]:
            runs[setting] += side_by_side(__file__, argv, [setting] * args.jobs, env)
            print(
                f"round {r + 1}, {setting}: {runs[setting][-1]['train_s']:.3f} s per training image",
                flush=True,
            )
    if not all(x["kept"] for x in runs["kept"]):
        raise SystemExit("keep_freed_memory did not apply here (not glibc, or MALLOC_* / GLIBC_TUNABLES set)")
    settings = (
        "model",
        "data",
        "min_size",
        "batch_size",
        "steps",
        "eval_images",
        "jobs",
        "threads",
        "repeat",
    )
    out = (
        figures(runs)
        | {k: getattr(args, k) for k in settings}
        | {"wall_s": round(time.perf_counter() - start, 1)}
    )
    return emit(out, args.json_out)


if __name__ == "__main__":
    raise SystemExit(main())
