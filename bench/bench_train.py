"""Training-loop overhead: ``train_one_epoch`` vs a bare forward/backward loop, same batches.

Both loops run in this process over the same pre-decoded batches (demo data, the demo's model), so
the ratio isolates what the engine adds (loss bookkeeping, finiteness check, progress bar, warm-up).
Each loop runs ``--repeat`` times, alternating; the best time of each is compared. A third figure,
``loader_ratio``, times the engine fed by the real DataLoader (decoding + augmentation in
``--workers`` worker processes) against the same bare loop.

    python bench/bench_train.py    # last line: {"train_overhead_ratio": ..., "train_images_per_s": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.synthetic import load_demo  # noqa: E402
from datasets.torch_data import DetectionDataset, collate_fn  # noqa: E402
from datasets.transforms import build_transforms  # noqa: E402
from net.models import build_model  # noqa: E402
from tools.engine import train_one_epoch  # noqa: E402
from tools.fit import seeded_generator, train_loader  # noqa: E402


def bare_loop(model, optimizer, batches) -> None:
    model.train()
    for images, targets in batches:
        loss = sum(model(list(images), list(targets)).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="fasterrcnn_mobilenet_v2_fpn")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_demo("train")
    n = args.batches * args.batch_size
    dataset = DetectionDataset(data.records[:n], data.image_root, build_transforms(True))
    batches = [collate_fn([dataset[i] for i in range(j, j + args.batch_size)]) for j in range(0, n, args.batch_size)]
    model = build_model(args.model, data.num_classes + 1, min_size=224, preset="cpu_fast")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    device = torch.device("cpu")
    bare_loop(model, optimizer, batches[:2])  # warm-up (allocator, MKL-DNN kernels)
    times = {"bare": [], "engine": [], "loader": []}
    loader_args = argparse.Namespace(batch_size=args.batch_size, workers=args.workers)
    for rep in range(args.repeat):
        t = time.perf_counter()
        bare_loop(model, optimizer, batches)
        times["bare"].append(time.perf_counter() - t)
        t = time.perf_counter()
        train_one_epoch(model, optimizer, batches, device, epoch=rep)
        times["engine"].append(time.perf_counter() - t)
        loader = train_loader(data.records[:n], data.image_root, loader_args, seeded_generator(0, rep))
        t = time.perf_counter()
        train_one_epoch(model, optimizer, loader, device, epoch=rep)
        times["loader"].append(time.perf_counter() - t)
        print({k: round(v[-1], 2) for k, v in times.items()}, flush=True)
    best = {k: min(v) for k, v in times.items()}
    print(json.dumps({"train_overhead_ratio": round(best["engine"] / best["bare"], 4),
                      "train_images_per_s": round(n / best["engine"], 2),
                      "bare_images_per_s": round(n / best["bare"], 2),
                      "loader_ratio": round(best["loader"] / best["bare"], 4)}))  # fmt: skip


if __name__ == "__main__":
    main()
