"""Does training help? A supervised run on a small demo set, from scratch, on the CPU.

From scratch on 2 CPU cores a detector needs a few thousand image passes to be good (the default
run reaches AP50 ~0.7); this check asks that ~1,000 of them clearly help: the best AP50 after the
first epoch rises by more than the epoch-to-epoch noise of 30 evaluation images (0.02), and the
last epoch's loss is below 0.7 of the first. It was a test; as a statistical check of a learning
curve it lives here, where its figures are printed, not asserted.

    python bench/bench_learns.py

The last line is one JSON object: ``ap50_first``, ``ap50_best``, ``ap50_gain``, ``loss_ratio``,
``learns`` (both conditions), ``epochs``, ``wall_s``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.runtime.logs import read_jsonl  # noqa: E402
from train_asm_one import main as train_main  # noqa: E402

COMMAND = (
    "--strategy none --demo-train 160 --demo-val 30 --min-size 128 --epochs 6 --batch-size 8 "
    "--warmup-iters 10 --workers 0 --deterministic --ap-range 10"
).split()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json-out", default=None, help="also write the result here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_learns_") as tmp:
        out = os.path.join(tmp, "run")
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = train_main([*COMMAND, "--cache-dir", os.path.join(tmp, "cache"), "--output-dir", out])
        if code != 0:
            raise SystemExit(f"the training run failed with exit code {code}")
        epochs = [e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "epoch"]
        wall = time.perf_counter() - start
    aps = [e["AP50"] for e in epochs]
    gain = max(aps[1:]) - aps[0]
    loss_ratio = epochs[-1]["losses"]["loss"] / epochs[0]["losses"]["loss"]
    result = {
        "ap50_first": round(aps[0], 4),
        "ap50_best": round(max(aps), 4),
        "ap50_gain": round(gain, 4),
        "loss_ratio": round(loss_ratio, 4),
        "learns": bool(gain > 0.02 and loss_ratio < 0.7),
        "epochs": len(epochs),
        "wall_s": round(wall, 1),
    }
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
