"""The first impression: the README's default command, ``python train_asm_one.py --K 100``, timed.

Runs the command as a user would on a fresh machine (its own process, a fresh demo cache, so the
dataset is generated too) and reports its wall time, its final AP50 and what the human did. The
goal on 2 CPU cores: ``demo_s`` <= 300 and ``ap50`` >= 0.8.

    python bench/bench_demo.py --json-out docs/bench_demo_cpu.json

The last line is one JSON object: ``demo_s``, ``ap50``, ``rounds``, ``labelled_images``,
``human_drawn_boxes``, ``confirmed_boxes``, ``human_saved_fraction``, ``threads``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    p.add_argument("extra", nargs="*", help="options appended to the default command (to try other settings)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        cmd = [
            sys.executable,
            os.path.join(ROOT, "train_asm_one.py"),
            "--K",
            "100",
            "--output-dir",
            os.path.join(tmp, "run"),
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
    print("\n".join(lines[-8:-1]))  # the closing lines the user reads
    result = {
        "demo_s": round(seconds, 1),
        **{k: summary.get(k) for k in KEYS},
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
