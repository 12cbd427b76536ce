"""Frozen BatchNorm with its bias added in place (``net/frozen_bn.py``) against torchvision's layer.

The same model, weights and batches, with every frozen BatchNorm as ours or as torchvision's, on the
CPU, measured two ways:

* in fresh processes, as the efficiency study runs (``--pairs``): one process per layer, side by
  side on one thread each, the pair's start order alternating; each trains ``--steps`` SGD steps
  after 2 warm-up steps. ``step_time_ratio``: the median over pairs of ours / torchvision's step
  seconds. ``bit_identical``: every pair ended on the same weights (sha256), ``minflt``: page faults.
* in this process (``step_time_ratio_in_process``, ``eval_time_ratio_in_process``): each batch through
  both layers in turn, alternating which goes first.

    python bench/bench_frozen_bn.py --data bccd --min-size 416 --pairs 4 --json-out docs/bench_frozen_bn_cpu.json
    python bench/bench_frozen_bn.py                                  # the demo's

The backbone is ../shared's ImageNet MobileNetV2 when it is there, else torchvision's untrained one
with frozen BatchNorm (no download; the speed is the same).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import sys
import time

import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import add_bench_args, bench_data, emit, side_by_side, study_model  # noqa: E402
from datasets.torch_data import DetectionDataset, collate_fn  # noqa: E402
from datasets.transforms import build_transforms  # noqa: E402
from net.frozen_bn import FrozenBatchNorm2d  # noqa: E402

VARIANTS = {"ours": FrozenBatchNorm2d, "torchvision": torchvision.ops.FrozenBatchNorm2d}
WARMUP = 2


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_bench_args(p, device=False)  # the CPU alone
    p.add_argument("--steps", type=int, default=12, help="timed batches per layer, after 2 warm-up")
    p.add_argument("--pairs", type=int, default=2, help="process pairs (0: in this process only)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json-out", default=None, help="also write the figures here")
    p.add_argument("--child", choices=tuple(VARIANTS), help=argparse.SUPPRESS)  # one process of a pair
    return p


def setup(args) -> tuple[torch.nn.Module, list[torch.nn.Module], list]:
    """The model (seeded), its frozen BatchNorm layers and ``--steps`` + 2 batches."""
    torch.set_num_threads(args.threads)
    data = bench_data(args)
    torch.manual_seed(0)
    model = study_model(args, data)
    frozen = [m for m in model.modules() if isinstance(m, torchvision.ops.FrozenBatchNorm2d)]
    if not frozen:
        raise SystemExit(f"{args.model}: no frozen BatchNorm layer to compare")
    dataset = DetectionDataset(data.records, data.image_root, build_transforms(False))
    n = args.batch_size
    batches = [collate_fn([dataset[i] for i in range(k * n, k * n + n)]) for k in range(args.steps + WARMUP)]
    return model.train(), frozen, batches


def use(frozen: list[torch.nn.Module], variant: str) -> None:
    for module in frozen:
        module.__class__ = VARIANTS[variant]


def train_step(model: torch.nn.Module, images, targets) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = sum(model(list(images), list(targets)).values())
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters() if p.grad is not None]


def child(args) -> dict:
    """One process of a pair: ``--steps`` SGD steps with one layer; seconds per step, page faults and
    the final weights' sha256."""
    model, frozen, batches = setup(args)
    use(frozen, args.child)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
    torch.manual_seed(1)  # the RPN's and RoI head's sampling: the same draws in both processes
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for k, (images, targets) in enumerate(batches):
        start = time.perf_counter()
        train_step(model, images, targets)
        optimizer.step()
        if k >= WARMUP:
            times.append(time.perf_counter() - start)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters()))
    return {
        "step_s": statistics.median(times),
        "minflt": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
        "sha256": digest.hexdigest(),
    }


def pairs(args, argv: list[str]) -> list[dict[str, dict]]:
    """``--pairs`` pairs of child processes side by side, alternating which starts first."""
    results = []
    for k in range(args.pairs):
        order = list(VARIANTS)[:: 1 if k % 2 == 0 else -1]
        results.append(dict(zip(order, side_by_side(__file__, argv, order))))
    return results


def alternate(frozen, batches, step) -> dict[str, float]:
    """Median seconds of ``step(images, targets)`` per layer in this process, after the warm-up."""
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for k, (images, targets) in enumerate(batches):
        for variant in list(VARIANTS)[:: 1 if k % 2 == 0 else -1]:  # alternate which goes first
            use(frozen, variant)
            start = time.perf_counter()
            step(images, targets)
            if k >= WARMUP:
                times[variant].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def in_process(args) -> dict:
    """Both layers on one batch (equal loss and gradients?), then the alternating step and eval times."""
    model, frozen, batches = setup(args)
    results = {}
    for variant in VARIANTS:
        use(frozen, variant)
        torch.manual_seed(1)
        results[variant] = train_step(model, *batches[0])
    (loss, grads), (loss_tv, grads_tv) = results["ours"], results["torchvision"]
    identical = torch.equal(loss, loss_tv) and all(torch.equal(a, b) for a, b in zip(grads, grads_tv))
    train_s = alternate(frozen, batches, lambda images, targets: train_step(model, images, targets))
    model.eval()
    with torch.no_grad():
        eval_s = alternate(frozen, batches, lambda images, targets: model(list(images)))
    return {
        "step_time_ratio_in_process": round(train_s["ours"] / train_s["torchvision"], 3),
        "eval_time_ratio_in_process": round(eval_s["ours"] / eval_s["torchvision"], 3),
        "gradients_identical": identical,
        "step_s_in_process": {v: round(t, 3) for v, t in train_s.items()},
        "eval_s_in_process": {v: round(t, 3) for v, t in eval_s.items()},
        "frozen_layers": len(frozen),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = get_args_parser().parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    start = time.perf_counter()
    figures = in_process(args)  # first: it writes the demo's images once, before two processes read them
    if args.pairs:
        runs = pairs(args, argv)
        ratios = [p["ours"]["step_s"] / p["torchvision"]["step_s"] for p in runs]
        figures |= {
            "step_time_ratio": round(statistics.median(ratios), 3),
            "step_time_ratios": [round(r, 3) for r in ratios],
            "bit_identical": all(p["ours"]["sha256"] == p["torchvision"]["sha256"] for p in runs),
            "step_s": {v: round(statistics.median(p[v]["step_s"] for p in runs), 3) for v in VARIANTS},
            "minflt": {v: round(statistics.median(p[v]["minflt"] for p in runs)) for v in VARIANTS},
        }
    settings = ("model", "data", "min_size", "batch_size", "threads", "steps", "pairs")
    figures |= {k: getattr(args, k) for k in settings} | {"wall_s": round(time.perf_counter() - start, 1)}
    return emit(figures, args.json_out)


if __name__ == "__main__":
    raise SystemExit(main())
