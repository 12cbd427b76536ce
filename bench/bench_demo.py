"""The first impression: the README's default command, ``python train_asm_one.py --K 100``, timed.

Runs the command as a user would on a fresh machine (its own process, a fresh demo cache, so the
dataset is generated too) and reports its wall time, its final AP50, what the model confirmed and
how often it was right, and the size of the checkpoints it wrote. The goal on 2 CPU cores:
``demo_s`` <= 300, ``ap50`` >= 0.8, ``sl_confirmed`` > 0 and ``sl_precision`` >= 0.8.

    python bench/bench_demo.py --json-out docs/bench_demo_cpu.json
    python bench/bench_demo.py --weights-backbone none      # other options are appended to the command

The last line is one JSON object: ``demo_s``, ``ap50``, ``sl_confirmed`` (boxes the model confirmed,
over every round), ``sl_precision`` (the share of its certain boxes that were right, over every
round), ``sl_by_round`` (confirmed and precision per round), ``checkpoint_mb`` (``last.pth``: what a
resume needs; ``best.pth``: the model alone), ``rounds``, ``human_drawn_boxes``,
``human_saved_fraction``, ``threads``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.runtime.logs import read_jsonl  # noqa: E402

KEYS = (
    "ap50",
    "rounds",
    "labelled_images",
    "human_drawn_boxes",
    "confirmed_boxes",
    "human_saved_fraction",
    "stopped",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json-out", default=None, help="also write the result here")
    p.add_argument(
        "--sheet-out",
        default=None,
        help="also copy the first round's sheet (the images the model labelled, its boxes drawn) here",
    )
    p.epilog = "Any other option is appended, in its order, to the default command (to try other settings)."
    args, args.extra = p.parse_known_args(argv)  # unknown options keep their order: "--epochs 12"
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        run = os.path.join(tmp, "run")
        cmd = [
            sys.executable,
            os.path.join(ROOT, "train_asm_one.py"),
            "--K",
            "100",
            "--output-dir",
            run,
            *args.extra,
        ]
        env = dict(
            os.environ, ASM_CACHE_DIR=os.path.join(tmp, "cache")
        )  # a fresh machine: the demo is generated
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"the default command failed with exit code {proc.returncode}")
        lines = proc.stdout.strip().splitlines()
        summary = json.loads(lines[-1])
        rounds = [
            e for e in read_jsonl(os.path.join(run, "log.jsonl")) if e["type"] == "round" and e["round"]
        ]
        sizes = {n: round(os.path.getsize(os.path.join(run, n)) / 2**20, 1) for n in ("last.pth", "best.pth")}
        if args.sheet_out:
            shutil.copyfile(os.path.join(run, "rounds", "round1.png"), args.sheet_out)
    begins = max((k for k, line in enumerate(lines) if line.startswith("AP50 by round")), default=0)
    print("\n".join(lines[begins:-1]))  # the closing lines the user reads
    certain, matched = sum(r["certain"] for r in rounds), sum(r["matched"] for r in rounds)
    result = {
        "demo_s": round(seconds, 1),
        "ap50": summary.get("ap50"),
        "sl_confirmed": sum(r["confirmed"] for r in rounds),
        "sl_precision": round(matched / certain, 4) if certain else None,
        "sl_by_round": {
            r["round"]: {"confirmed": r["confirmed"], "precision": r["precision"]} for r in rounds
        },
        "checkpoint_mb": sizes,
        **{k: summary.get(k) for k in KEYS if k != "ap50"},
        "threads": torch.get_num_threads(),
        "extra": args.extra,
    }
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
