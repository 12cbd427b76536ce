"""ASM compute: the detection pass against the obvious baselines, and the merge against it.

(a) the merge rules (:func:`asm.merge.merge_batch`) on 1,000 images x 100 detections, checked
    against the per-box loop of ``tests/asm_oracle.py`` (identical outputs), and reported as
    ``merge_fraction_of_detect``: merge time per image over detection time per image (target <= 0.05);
(b) the detection pass (:func:`tools.engine.epoch.detect`: DataLoader, aspect-ratio batches, inference
    mode) in images/s against an ASM_core-style loop (PIL open, ``to_tensor``, ``model([x])`` one
    image at a time) and against pure model forward on pre-loaded tensors in the same batches.
All in this process, on the demo data and the demo's model.

    python bench/bench_asm.py   # last line: {"merge_fraction_of_detect": ..., "detect_vs_forward": ..., ...}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from asm.merge import ASMConfig, merge_batch  # noqa: E402
from bench.common import add_bench_args, bench_data, bench_model, sync  # noqa: E402
from datasets.loaders import eval_loader  # noqa: E402
from tests.asm_oracle import merge_by_loop, random_batch, same_result  # noqa: E402
from tools.engine.epoch import detect  # noqa: E402


def bench_merge(n_images: int, n_dets: int) -> dict:
    dets, gts = random_batch(np.random.default_rng(0), n_images, max_gt=30, n_dets=n_dets)
    cfg = ASMConfig()
    merge_batch(dets[:10], gts[:10], cfg)  # warm-up
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        results = merge_batch(dets, gts, cfg)
        best = min(best, time.perf_counter() - t)
    assert all(same_result(r, merge_by_loop(d, g, cfg)) for r, d, g in zip(results, dets, gts)), (
        "merge != oracle"
    )
    print(
        f"merge: {best:.3f} s for {n_images} images ({sum(r.confirmed for r in results)} SL, "
        f"{sum(r.demoted for r in results)} demoted), identical to the per-box loop",
        flush=True,
    )
    return {"merge_seconds": round(best, 4), "merge_images_per_s": round(n_images / best, 1)}


@torch.inference_mode()
def per_image_loop(model, paths) -> None:
    model.eval()
    for p in paths:
        x = to_tensor(Image.open(p).convert("RGB"))
        model([x])


@torch.inference_mode()
def pure_forward(model, batches, device) -> None:
    model.eval()
    for images in batches:
        model(images)
    sync(device)


def bench_detect(args: argparse.Namespace) -> dict:
    """The detection pass against pure forward on the same batches, pre-loaded on the device."""
    device = torch.device(args.device)
    data = bench_data(args)
    records = data.records[: args.detect_images]
    model = bench_model(args, data, device).eval()
    loader = eval_loader(
        records, data.image_root, args.batch_size, args.workers, pin_memory=device.type == "cuda"
    )
    batches = [[im.to(device) for im in images] for images, _ in loader]  # the same batches, decoded up front
    paths = [os.path.join(data.image_root, r.file_name) for r in records]
    pure_forward(model, batches[:1], device)
    times: dict[str, list[float]] = {
        "detect": [],
        "forward": [],
        **({"loop": []} if device.type == "cpu" else {}),
    }
    for _ in range(args.repeat):
        t = time.perf_counter()
        detect(model, loader, device, masks=False)
        times["detect"].append(time.perf_counter() - t)
        t = time.perf_counter()
        pure_forward(model, batches, device)
        times["forward"].append(time.perf_counter() - t)
        if "loop" in times:  # ASM_core's way, one image at a time (CPU only: it would be absurd on a GPU)
            t = time.perf_counter()
            per_image_loop(model, paths)
            times["loop"].append(time.perf_counter() - t)
        print({k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    best = {k: min(v) for k, v in times.items()}
    out = {
        "detect_vs_forward": round(best["forward"] / best["detect"], 4),
        "detect_images_per_s": round(len(records) / best["detect"], 2),
        "forward_images_per_s": round(len(records) / best["forward"], 2),
        "detect_seconds": best["detect"],
        "detect_images": len(records),
    }
    if "loop" in best:
        out["detect_vs_per_image_loop"] = round(best["loop"] / best["detect"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--merge-images", type=int, default=1000)
    parser.add_argument("--merge-dets", type=int, default=100)
    parser.add_argument("--detect-images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=1, help="detection batch (1 is the CPU default)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    add_bench_args(parser)
    args = parser.parse_args()
    # the detection pass first, in a process not yet holding the merge part's ~10^5 objects
    detection = bench_detect(args)
    result = bench_merge(args.merge_images, args.merge_dets)
    per_image_detect = detection["detect_seconds"] / detection["detect_images"]
    result["merge_fraction_of_detect"] = round(
        result["merge_seconds"] / args.merge_images / per_image_detect, 4
    )
    print(json.dumps({**result, **detection}))


if __name__ == "__main__":
    main()
