"""Detection pass under torchrun: images/s with N processes against 1 process on the same machine.

Each run launches ``torchrun --standalone`` on this script's worker mode, which times
:func:`tools.engine.epoch.detect` (sharded batches, gathered outputs) over the demo training images with
the demo's model; the cores are split evenly between the processes (``OMP_NUM_THREADS``), so the
1-process baseline uses all of them too.

    python bench/bench_dist.py --nproc 2   # last line: {"detect_nproc_vs_1": ..., ...}
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
sys.path.insert(0, ROOT)


def worker(args: argparse.Namespace) -> None:
    from datasets.loaders import eval_loader
    from datasets.synthetic import load_demo
    from net.models import build_model
    from tools.engine.epoch import detect
    from tools.runtime import dist

    with dist.session():
        device = dist.init(torch.device("cpu"))
        data = dist.main_first(load_demo, "train")
        records = data.records[: args.images]
        torch.manual_seed(0)
        model = build_model(
            "fasterrcnn_mobilenet_v2_fpn", data.num_classes + 1, min_size=224, preset="cpu_fast"
        )
        detect(model, eval_loader(records[:8], data.image_root), device)  # warm-up
        loader = eval_loader(records, data.image_root)
        best = float("inf")
        for _ in range(args.repeat):
            dist.barrier()
            start = time.perf_counter()
            outputs = detect(model, loader, device)
            dist.barrier()
            best = min(best, time.perf_counter() - start)
        assert len(outputs) == len(records)
        if dist.is_main():
            with open(args.result, "w", encoding="utf-8") as f:
                json.dump({"seconds": best, "images": len(records), "world": dist.world_size()}, f)


def launch(nproc: int, images: int, repeat: int) -> dict:
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            os.path.abspath(__file__),
            "--worker",
            "--result",
            result,
            "--images",
            str(images),
            "--repeat",
            str(repeat),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // nproc))}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"torchrun with {nproc} processes failed:\n{proc.stderr[-3000:]}")
        with open(result, encoding="utf-8") as f:
            out = json.load(f)
    out["images_per_s"] = out["images"] / out["seconds"]
    print(f"{nproc} process(es): {out['images_per_s']:.1f} images/s", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    one = launch(1, args.images, args.repeat)
    many = launch(args.nproc, args.images, args.repeat)
    print(
        json.dumps(
            {
                "detect_nproc_vs_1": round(many["images_per_s"] / one["images_per_s"], 3),
                "nproc": args.nproc,
                "images_per_s_1": round(one["images_per_s"], 1),
                f"images_per_s_{args.nproc}": round(many["images_per_s"], 1),
                "cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
