"""PISA against the standard RoI head on BCCD: supervised AP50 / AP per seed, and the step time.

Each (head, seed) is a ``train_asm_one.py --strategy none`` run with the efficiency study's shared
protocol (``bench/asm_efficiency.py``: ImageNet MobileNetV2 backbone from ../shared/weights, val +
test evaluation, ``--deterministic``), differing only in ``--roi-head``; runs resume when the command
is repeated. The step time is measured in this process: the same batches through both heads,
alternating, after a warm-up; ``step_time_ratio`` = PISA's median step / the standard head's.

    python bench/bench_pisa.py --jobs 2 --json-out docs/pisa_bccd_cpu.json     # seeds 1 2 3
    python bench/bench_pisa.py --timing-only                                   # the step times alone

``step_time_ratio`` is measured with the study's sampling (``cpu_fast``: 300 proposals and 64 RoIs
per image), ``step_time_ratio_512`` with MMDetection's (2,000 proposals and 512 RoIs per image).
PISA becomes the default only if it wins AP50 in every seed at no more than 1.2x the step time;
the last line says whether it does (``pisa_wins``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import asm_efficiency as efficiency  # noqa: E402
from bench.study_data import bccd_flags, bench_root  # noqa: E402
from bench.study_runs import run_entry  # noqa: E402
from datasets.atomic import atomic_write_text  # noqa: E402

HEADS = ("standard", "pisa")
MAX_STEP_RATIO = 1.2


def get_args_parser() -> argparse.ArgumentParser:
    p = efficiency.get_args_parser()
    p.description = __doc__
    p.add_argument(
        "--timing-steps", type=int, default=8, help="training steps timed per head (after 2 warm-up)"
    )
    p.add_argument("--timing-only", action="store_true", help="only the step-time ratios (no training runs)")
    p.set_defaults(seeds=[1, 2, 3], output_dir=os.path.join(ROOT, "outputs", "pisa"), cpu=True)
    return p


def run_head(args, data_flags: list[str], seed: int, head: str, threads: int | None) -> dict:
    """One supervised run (resumes); its AP50, COCO-style AP and epoch seconds."""
    out = os.path.join(args.output_dir, f"{head}_seed{seed}")
    extra = ["--strategy", "none", "--epochs", str(args.supervised_epochs), "--roi-head", head]
    log = run_entry(args, data_flags, seed, out, extra, threads)
    point = [e for e in log if e["type"] == "round"][-1]
    seconds = [e["seconds"] for e in log if e["type"] == "epoch"]
    return {
        "head": head,
        "seed": seed,
        "AP50": round(point["AP50"], 4),
        "AP": None if point.get("AP") is None else round(point["AP"], 4),
        "AP50_per_class": {k[5:]: round(v, 4) for k, v in point.items() if k.startswith("AP50/")},
        "epoch_s": round(statistics.median(seconds), 1),
    }


# MMDetection's PISA sampling: 2,000 proposals per image into the RoI head, 512 RoIs sampled of them
MMDET_SAMPLING = dict(
    rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=2000, box_batch_size_per_image=512
)


def step_time_ratio(args, data, steps: int, **sampling) -> tuple[float, dict[str, float]]:
    """PISA's median training step over the standard head's, and both medians in seconds: the same
    model, weights and batches; ``sampling``: RPN / RoI sampling options over the ``cpu_fast`` preset's."""
    from datasets.torch_data import DetectionDataset, collate_fn
    from datasets.transforms import build_transforms
    from net.models import build_model

    torch.manual_seed(0)
    models = {
        head: build_model(
            args.model,
            data.num_classes + 1,
            min_size=args.min_size,
            preset="cpu_fast",
            roi_head=head,
            **sampling,
        ).train()
        for head in HEADS
    }
    models["pisa"].load_state_dict(models["standard"].state_dict())
    dataset = DetectionDataset(
        data.records[: args.batch_size * (steps + 2)], data.image_root, build_transforms(False)
    )
    batches = [
        collate_fn([dataset[i] for i in range(k, k + args.batch_size)])
        for k in range(0, len(dataset) - args.batch_size + 1, args.batch_size)
    ]
    times: dict[str, list[float]] = {head: [] for head in HEADS}
    for k, (images, targets) in enumerate(batches):
        for head in (
            HEADS if k % 2 == 0 else HEADS[::-1]
        ):  # alternate, so drift in the machine's speed cancels
            model = models[head]
            start = time.perf_counter()
            sum(model(list(images), list(targets)).values()).backward()
            model.zero_grad(set_to_none=True)
            if k >= 2:  # after a warm-up
                times[head].append(time.perf_counter() - start)
    medians = {head: statistics.median(times[head]) for head in HEADS}
    return round(medians["pisa"] / medians["standard"], 3), {h: round(t, 3) for h, t in medians.items()}


def main(argv: list[str] | None = None) -> int:
    args, data_flags, data = efficiency.parse(argv, get_args_parser())
    os.makedirs(args.output_dir, exist_ok=True)
    if data is None:
        n_train, n_eval = args.quick_images if args.quick else (None, None)
        data_flags = bccd_flags(
            bench_root(os.path.abspath(args.bccd_root), args.output_dir, args.eval_splits, n_train, n_eval)
        )
        data = efficiency.parse([*data_flags, "--output-dir", args.output_dir], get_args_parser())[2]
    from datasets.build import build_datasets

    train, _ = build_datasets(data)
    start = time.perf_counter()
    (ratio, seconds), (ratio_512, seconds_512) = (
        step_time_ratio(args, train, args.timing_steps),
        step_time_ratio(args, train, args.timing_steps, **MMDET_SAMPLING),
    )
    ratios = {
        "step_time_ratio": ratio,
        "step_time_ratio_512": ratio_512,
        "step_s": seconds,  # median seconds of a training step per head
        "step_s_512": seconds_512,
    }
    if args.timing_only:
        print(json.dumps(ratios | {"wall_s": round(time.perf_counter() - start, 1)}))
        return 0
    threads = None if args.jobs <= 1 else max(1, (os.cpu_count() or 1) // args.jobs)
    jobs = [(seed, head) for seed in args.seeds for head in HEADS]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        runs = list(pool.map(lambda job: run_head(args, data_flags, job[0], job[1], threads), jobs))
    result = summary(args, runs, ratios, data_flags)
    for path in filter(None, (os.path.join(args.output_dir, "pisa.json"), args.json_out)):
        atomic_write_text(path, json.dumps(result, indent=1))
    print(
        json.dumps(
            {k: v for k, v in result.items() if k not in ("runs", "settings")}
            | {"wall_s": round(time.perf_counter() - start, 1)}
        )
    )
    return 0


def summary(args, runs: list[dict], ratios: dict, data_flags: list[str]) -> dict:
    """The heads' mean AP over the seeds, the step-time ratios, whether PISA wins, and the settings."""
    ratio = ratios["step_time_ratio"]

    def mean(head: str, key: str) -> float | None:
        values = [r[key] for r in runs if r["head"] == head and r[key] is not None]
        return round(statistics.mean(values), 4) if values else None

    by_seed = {s: {r["head"]: r for r in runs if r["seed"] == s} for s in args.seeds}
    wins = (
        all(v["pisa"]["AP50"] > v["standard"]["AP50"] for v in by_seed.values()) and ratio <= MAX_STEP_RATIO
    )
    return {
        "seeds": args.seeds,
        "ap50_baseline": mean("standard", "AP50"),
        "ap50_pisa": mean("pisa", "AP50"),
        "ap_baseline": mean("standard", "AP"),
        "ap_pisa": mean("pisa", "AP"),
        **ratios,
        "pisa_wins": wins,
        "runs": runs,
        "settings": {
            "data_flags": data_flags,
            "min_size": args.min_size,
            "epochs": args.supervised_epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "model": args.model,
            "weights_backbone": args.weights_backbone,
            "quick": args.quick,
        },
    }


if __name__ == "__main__":
    raise SystemExit(main())
