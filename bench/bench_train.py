"""Training-loop speed: ``train_one_epoch`` against a bare forward/backward loop on the same batches.

All loops run in this process on the same batches, decoded and moved to the device up front:

* ``train_overhead_ratio``: the engine (on-device loss sums and finiteness guard, progress bar,
  warm-up) over the bare loop;
* ``loader_ratio`` / ``loader_vs_bare``: the engine fed by the real phase loader (decoding and
  augmentation in ``--workers`` persistent workers, pinned memory on CUDA) against the bare loop;
* ``amp_speedup`` (``--amp``, CUDA): fp32 engine time over mixed-precision engine time.

Each loop runs ``--repeat`` times, interleaved; the best time of each is compared.

    python bench/bench_train.py                       # CPU, demo data
    python bench/bench_train.py --device cuda --data bccd --min-size 480 --batch-size 8 --amp --workers 8
    # last line: {"train_overhead_ratio": ..., "loader_vs_bare": ..., "amp_speedup": ..., ...}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import add_bench_args, bench_data, bench_model, sync, train_steps  # noqa: E402
from datasets.loaders import train_loader  # noqa: E402
from datasets.torch_data import DetectionDataset, collate_fn  # noqa: E402
from datasets.transforms import build_transforms  # noqa: E402
from tools.engine.epoch import to_device, train_one_epoch  # noqa: E402
from tools.engine.fit import FitConfig, make_optimizer


def bare_loop(model, optimizer, batches, device) -> None:
    train_steps(model, optimizer, batches)
    sync(device)


def timed(fn, *args, **kwargs) -> float:
    """Seconds of ``fn(*args, **kwargs)``, device work included (``args[3]`` is the device)."""
    start = time.perf_counter()
    fn(*args, **kwargs)
    sync(args[3])
    return time.perf_counter() - start


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    add_bench_args(parser)
    return parser


def main() -> None:
    args = get_args_parser().parse_args()
    device = torch.device(args.device)
    data = bench_data(args)
    n = min(args.batches * args.batch_size, len(data.records))
    records = data.records[:n]
    torch.manual_seed(0)
    dataset = DetectionDataset(records, data.image_root, build_transforms(True))
    batches = [
        to_device(*collate_fn([dataset[i] for i in range(j, min(j + args.batch_size, n))]), device)
        for j in range(0, n, args.batch_size)
    ]
    model = bench_model(args, data, device)
    optimizer = make_optimizer(model, FitConfig(lr=0.005, batch_size=args.batch_size))
    # workers live across the repeats, as in a phase
    loader = train_loader(
        records,
        data.image_root,
        args.batch_size,
        (0,),
        workers=args.workers,
        pin_memory=device.type == "cuda",
    )
    amp = args.amp and device.type == "cuda"
    bare_loop(model, optimizer, batches[:2], device)  # warm-up (allocator, kernels)
    times: dict[str, list[float]] = {"bare": [], "engine": [], "loader": [], **({"amp": []} if amp else {})}
    for rep in range(args.repeat):
        times["bare"].append(timed(bare_loop, model, optimizer, batches, device))
        times["engine"].append(timed(train_one_epoch, model, optimizer, batches, device, epoch=rep))
        loader.batch_sampler.set_epoch(rep)
        times["loader"].append(timed(train_one_epoch, model, optimizer, loader, device, epoch=rep))
        if amp:
            scaler = torch.amp.GradScaler("cuda")
            times["amp"].append(
                timed(train_one_epoch, model, optimizer, batches, device, epoch=rep, scaler=scaler)
            )
        print({k: round(v[-1], 3) for k, v in times.items()}, flush=True)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "train_overhead_ratio": round(best["engine"] / best["bare"], 4),
        "train_images_per_s": round(n / best["engine"], 2),
        "bare_images_per_s": round(n / best["bare"], 2),
        "loader_ratio": round(best["loader"] / best["bare"], 4),
        "loader_vs_bare": round(best["bare"] / best["loader"], 4),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": args.model,
        "batch_size": args.batch_size,
        "min_size": args.min_size,
        "data": args.data,
    }
    if amp:
        result["amp_speedup"] = round(best["engine"] / best["amp"], 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
