"""Learning curves (``al_curve.py``): AP against labelled images and human-drawn boxes, per sampler and seed.

Each curve starts from a random seed batch of the training pool, trains and evaluates, then lets
the sampler add a step of images and repeats until the pool is exhausted or the step limit. Every
step is checkpointed (``<output>/<sampler>_seed<k>.pth``), so an interrupted command continues
where it stopped. Results: ``curves.json``, ``curves.csv`` and ``curves.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re

import numpy as np
import torch

from asm.pools import image_count, initial_pool
from asm.samplers import load_sampler
from datasets import AnnotationError
from datasets.records import atomic_write_text, record_from_dict, record_to_dict
from net.models import is_mask_model
from tools import dist, fit
from tools.checkpoint import load_checkpoint, run_environment, save_checkpoint, unwrap
from tools.coco_eval import COCOEvaluator
from tools.config import save_resolved
from tools.early_stop import APShiftStopper
from tools.logs import RunLog, read_jsonl
from tools.mining import mine
from tools.options import Interrupted, asm_config, model_from_args, start
from tools.predict import compute_loss, predict_proba
from tools.progress import HEARTBEAT
from tools.voc_eval import VOCEvaluator

logger = logging.getLogger("al_curve")
COLUMNS = (
    "sampler",
    "seed",
    "step",
    "images",
    "human_drawn_boxes",
    "AP50",
    "AP75",
    "AP",
    "segm_AP",
    "segm_AP50",
)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def sampler_context(sampler, model, args, train_set, remaining, device) -> tuple[dict, dict]:
    """What the sampler needs about the remaining images, plus SA results for ``al_ratio``."""
    needs = getattr(sampler, "needs", ())
    records = [train_set.records[i] for i in remaining]
    ids = [r.image_id for r in records]
    context, merged = {}, {}
    model = unwrap(model)  # each rank scores its slice of the images (tools.dist.sharded_map)
    if "probs" in needs:
        preds = dist.sharded_map(
            lambda recs: predict_proba(
                model, recs, train_set.image_root, conf_thres=args.conf_thres, device=device
            ),
            records,
        )
        context["probs"] = dict(zip(ids, (p["probs"] for p in preds)))
    if "losses" in needs:
        losses = dist.sharded_map(
            lambda recs: compute_loss(
                model, recs, train_set.image_root, is_mask_model(args.model), device=device
            ),
            records,
        )
        context["losses"] = dict(zip(ids, (v["loss"] for v in losses)))
    if "ratios" in needs:
        results = mine(model, records, train_set.image_root, asm_config(args), args, device)
        context["ratios"] = {r.sa.image_id: r.ratio for r in results}
        merged = {r.sa.image_id: r for r in results}
    return context, merged


def run_curve(args, name, cls, seed, train_set, val_set, device, counter) -> list[dict]:
    """One sampler x seed curve; checkpointed after each step; returns its steps."""
    path = os.path.join(args.output_dir, f"{_slug(name)}_seed{seed}.pth")
    index_of = {r.image_id: k for k, r in enumerate(train_set.records)}
    n = len(train_set)
    if os.path.isfile(path):
        state = load_checkpoint(path)
    else:
        recs = [train_set.records[i] for i in initial_pool(n, args.seed_batch, seed)]
        state = {
            "steps": [],
            "records": [record_to_dict(r) for r in recs],
            "drawn": sum(len(r) for r in recs),
            "model": None,
            "done": False,
        }
    if state["done"]:
        return state["steps"]
    sampler = cls(name, [r.image_id for r in train_set.records], seed=seed, aggregate=args.aggregate)
    run_args = argparse.Namespace(**{**vars(args), "seed": seed})
    log = RunLog(os.path.join(args.output_dir, f"{_slug(name)}_seed{seed}"), enabled=dist.is_main())
    with_masks = is_mask_model(args.model)
    evaluators = [
        VOCEvaluator(val_set.classes),
        COCOEvaluator(val_set, ("bbox", "segm") if with_masks else ("bbox",)),
    ]
    val_loader = fit.eval_loader(
        val_set.records, val_set.image_root, args, with_masks, pin_memory=device.type == "cuda"
    )
    scaler = torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None
    while True:
        step = len(state["steps"])
        torch.manual_seed(seed * 1000 + step)  # the same draws whether or not the run was resumed
        model = model_from_args(args, train_set.num_classes, device)
        if args.resume_or_load == "continue" and state["model"] is not None:
            unwrap(model).load_state_dict(state["model"])
        records = [record_from_dict(r) for r in state["records"]]
        trainer = fit.Trainer(
            model, run_args, device, train_set.image_root, val_loader, evaluators, log, with_masks, scaler
        )
        optimizer = fit.make_optimizer(model, run_args)
        epochs = args.epochs if step == 0 or args.step_epochs is None else args.step_epochs
        phase = fit.Phase(f"{name}/seed{seed}/step{step}", step, epochs)
        stopper = APShiftStopper(args.ap_range, args.ap_shift_pretrain, args.ap_thre, args.ap_shift_squared)
        scheduler, loader = (
            fit.make_scheduler(optimizer, run_args, epochs),
            fit.phase_loader(trainer, phase, records),
        )
        HEARTBEAT.start_phase(phase.name, epochs, 0)
        while not phase.finished:  # no checkpoint per epoch: a step is redone from its start
            metrics = fit.run_epoch(trainer, phase, loader, stopper, optimizer, scheduler, step)
        HEARTBEAT.end_phase()
        state["steps"].append(
            {
                "sampler": name,
                "seed": seed,
                "step": step,
                "images": len(records),
                "human_drawn_boxes": state["drawn"],
                **fit.ap_summary(metrics),
            }
        )
        logger.info(
            "%s seed %d step %d: %d images, %d drawn boxes, AP50 %.3f",
            name,
            seed,
            step,
            len(records),
            state["drawn"],
            metrics["voc/AP50"],
        )
        selected = [r.image_id for r in records]
        chosen = set(selected)
        remaining = [i for i in range(n) if train_set.records[i].image_id not in chosen]
        state["done"] = not remaining or (args.steps is not None and step + 1 >= args.steps)
        if not state["done"]:
            context, merged = sampler_context(sampler, model, args, train_set, remaining, device)
            picked = (
                list(sampler.select_batch(image_count(args.step_size, n), selected, **context))
                if dist.is_main()
                else None
            )
            for image_id in dist.broadcast(picked):  # selected once, on rank 0
                record = merged[image_id].sa if image_id in merged else train_set.records[index_of[image_id]]
                state["drawn"] += merged[image_id].drawn if image_id in merged else len(record)
                state["records"].append(record_to_dict(record))
        state["model"] = unwrap(model).state_dict() if args.resume_or_load == "continue" else None
        save_checkpoint(path, state)
        counter[0] += 1
        if args.exit_after_steps is not None and counter[0] >= args.exit_after_steps:
            raise Interrupted(f"stopped after {counter[0]} steps (--exit-after-steps)")
        if state["done"]:
            log.close()
            return state["steps"]


def write_results(out: str, curves: list[dict], args: argparse.Namespace) -> None:
    rows = [s for c in curves for s in c["steps"]]
    atomic_write_text(os.path.join(out, "curves.json"), json.dumps({"curves": curves}, indent=1))
    with open(os.path.join(out, "curves.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in COLUMNS} for row in rows)
    plot(curves, os.path.join(out, "curves.png"), args.x_axis, args.asm_logs)


def mean_curve(
    runs: list[list[dict]], x_key: str, y_key: str = "AP50"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeds of one method (each a list of points): mean x, mean and std of ``y_key`` over the common length."""
    length = min(len(r) for r in runs)
    xs = np.array([[p[x_key] for p in r[:length]] for r in runs], dtype=float).mean(0)
    ys = np.array([[p[y_key] for p in r[:length]] for r in runs], dtype=float)
    return xs, ys.mean(0), ys.std(0)


def plot(curves: list[dict], path: str, x_axis: str, asm_logs: list[str]) -> None:
    """Mean +- std of AP50 over seeds per sampler, against images or human-drawn boxes (skipped,
    with a warning, without matplotlib: ``pip install -e ".[plot]"``)."""
    try:
        import matplotlib
    except ImportError:
        logger.warning(
            'matplotlib is not installed: no %s (pip install -e ".[plot]"); curves.json and '
            "curves.csv hold the numbers",
            path,
        )
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "images" if x_axis == "images" else "human_drawn_boxes"
    masks = any(
        s.get("segm_AP50") is not None for c in curves for s in c["steps"]
    )  # Mask R-CNN: a mask panel
    fig, axes = plt.subplots(
        1, 2 if masks else 1, figsize=(12 if masks else 6.4, 4.2), dpi=100, squeeze=False
    )
    for ax, y_key, label in zip(axes[0], ("AP50", "segm_AP50"), ("box AP50 (VOC)", "mask AP50 (COCO segm)")):
        for name in dict.fromkeys(c["sampler"] for c in curves):
            runs = [c["steps"] for c in curves if c["sampler"] == name]
            xs, mean, std = mean_curve(runs, key, y_key)
            ax.plot(xs, mean, marker="o", label=f"{name} ({len(runs)} seeds)")
            ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
        ax.set_xlabel("labelled images" if x_axis == "images" else "human-drawn boxes")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax = axes[0][0]
    for log_path in asm_logs:
        rounds = [e for e in read_jsonl(log_path) if e.get("type") == "round"]
        xk = "labelled_images" if x_axis == "images" else "human_drawn_total"
        ax.plot(
            [r[xk] for r in rounds],
            [r["AP50"] for r in rounds],
            marker="s",
            linestyle="--",
            label=f"ASM {os.path.basename(os.path.dirname(os.path.abspath(log_path)))}",
        )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_curves(args: argparse.Namespace) -> int:
    """Every sampler x seed curve of ``al_curve.py``'s options; the exit code (0 done, 2 bad input,
    3 interrupted, 5 diverged)."""
    try:
        device, train_set, val_set = start(args)
        samplers = [load_sampler(spec) for spec in args.samplers]
    except (AnnotationError, ValueError, FileNotFoundError) as e:
        logging.getLogger("al_curve").error("%s", e)
        return 2
    if dist.is_main():
        os.makedirs(args.output_dir, exist_ok=True)
        save_resolved(args, args.output_dir, run_environment())
    curves, counter = [], [0]
    try:
        for name, cls in samplers:
            for seed in args.seeds:
                steps = run_curve(args, name, cls, seed, train_set, val_set, device, counter)
                curves.append({"sampler": name, "seed": seed, "steps": steps})
                if dist.is_main():
                    write_results(args.output_dir, curves, args)
    except Interrupted as e:
        logger.warning("%s; run the same command again to continue", e)
        return 3
    except fit.Diverged as e:
        logger.error("%s", e)
        return 5
    if dist.is_main():
        print(json.dumps({"curves": len(curves), "output": os.path.abspath(args.output_dir)}))
    return 0
