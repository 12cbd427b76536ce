"""Learning curves: AP against labelled images and human-drawn boxes, for several samplers and seeds.

    python al_curve.py --samplers random entropy al_ratio --seeds 0 1 2 \\
        --seed-batch 0.2 --step-size 0.1 --steps 5 --output-dir outputs/curves

Each curve starts from a random seed batch of the training pool (``--seed-batch``: fraction or
count), trains and evaluates, then lets the sampler add ``--step-size`` images (fraction or count)
and repeats until the pool is exhausted or ``--steps`` evaluations are done. ``--resume-or-load``
trains each step from scratch (default) or continues from the previous step's weights.
Human-drawn boxes: all GT boxes of an image picked by ``random``/uncertainty/loss samplers; for
``al_ratio`` (ASM) only the AL boxes of its SA annotation, which is what it trains on.

Every step is checkpointed (``<output>/<sampler>_seed<k>.pth``): an interrupted command continues
where it stopped and ends with the same ``curves.json``. Results: ``curves.json``, ``curves.csv``
(one row per step) and ``curves.png`` (mean +- std over seeds; ``--x-axis images|boxes``).
``--asm-logs <run>/log.jsonl`` adds ``train_asm_one.py`` runs to the plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re

import torch

from asm.pools import image_count, initial_pool
from asm.samplers import load_sampler
from datasets import AnnotationError
from datasets.build import add_data_args
from datasets.records import record_from_dict, record_to_dict
from net.models import is_mask_model
from tools.engine import fit
from tools.engine.checkpoint import load_checkpoint, save_checkpoint, unwrap
from tools.engine.coco_eval import COCOEvaluator
from tools.engine.mining import mine
from tools.engine.predict import compute_loss, predict_proba
from tools.engine.voc_eval import VOCEvaluator
from tools.loop.config import add_config_args, parse_with_config, save_resolved
from tools.loop.options import (
    HelpFormatter,
    add_asm_args,
    add_model_args,
    add_train_args,
    ap_stopper,
    asm_config,
    check_options,
    count_or_fraction,
    fit_config,
)
from tools.loop.report import AP50, ap_summary
from tools.loop.setup import amp_scaler, evaluation_loader, model_from_args, start
from tools.runtime import dist
from tools.runtime.curves import write_results
from tools.runtime.logs import RunLog
from tools.runtime.process import run_environment
from tools.runtime.stop import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_DONE, EXIT_INTERRUPTED, Interrupted

logger = logging.getLogger("al_curve")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_data_args(p)
    add_model_args(p)
    add_train_args(p, batch_flags=("--train-batch-size",))
    add_asm_args(p, rules_only=True)
    add_config_args(p)
    g = p.add_argument_group("curves")
    g.add_argument(
        "--samplers",
        "--sampler",
        dest="samplers",
        nargs="+",
        default=["random", "entropy"],
        help="names or module:Class (a user plug-in)",
    )
    g.add_argument("--seeds", nargs="+", type=int, default=[0])
    g.add_argument(
        "--seed-batch",
        "--seed_batch",
        type=count_or_fraction,
        default=0.4,
        help="initial pool: fraction or count",
    )
    g.add_argument(
        "--step-size",
        "--batch_size",
        dest="step_size",
        type=count_or_fraction,
        default=0.1,
        help="images added per step: fraction of the pool or count (ASM_core calls it --batch_size)",
    )
    g.add_argument("--steps", type=int, default=None, help="evaluations per curve (default: until exhausted)")
    g.add_argument("--resume-or-load", "--resume_or_load", choices=("scratch", "continue"), default="scratch")
    g.add_argument(
        "--step-epochs",
        type=int,
        default=None,
        help="max epochs of each step after the first (default: --epochs); like --round-epochs",
    )
    g.add_argument(
        "--aggregate", choices=("max", "mean", "sum"), default="max", help="box -> image uncertainty"
    )
    g.add_argument(
        "--conf-thres", type=float, default=0.05, help="detections considered by uncertainty samplers"
    )
    g.add_argument("--x-axis", choices=("images", "boxes"), default="images")
    g.add_argument("--asm-logs", nargs="*", default=[], help="train_asm_one.py log.jsonl files to plot too")
    g.add_argument("--output-dir", default="outputs/curves")
    g.add_argument("--exit-after-steps", type=int, default=None, help="stop after this many steps (tests)")
    return p


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def sampler_context(sampler, model, args, train_set, remaining, device) -> tuple[dict, dict]:
    """What the sampler needs about the remaining images, plus SA results for ``al_ratio``."""
    needs = getattr(sampler, "needs", ())
    records = [train_set.records[i] for i in remaining]
    ids = [r.image_id for r in records]
    context, merged = {}, {}
    model = unwrap(model)  # each rank scores its slice of the images (tools.runtime.dist.sharded_map)
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
        results = mine(
            model, records, train_set.image_root, asm_config(args), device, args.eval_batch_size, args.workers
        )
        context["ratios"] = {r.sa.image_id: r.ratio for r in results}
        merged = {r.sa.image_id: r for r in results}
    return context, merged


def run_curve(args, name, cls, seed, train_set, val_set, device, counter) -> list[dict]:
    """One sampler x seed curve; checkpointed after each step; returns its steps."""
    path = os.path.join(args.output_dir, f"{_slug(name)}_seed{seed}.pth")
    state = load_checkpoint(path) if os.path.isfile(path) else new_curve(train_set, args.seed_batch, seed)
    if state["done"]:
        return state["steps"]
    sampler = cls(name, [r.image_id for r in train_set.records], seed=seed, aggregate=args.aggregate)
    fit_cfg = dataclasses.replace(fit_config(args), seed=seed)
    log = RunLog(os.path.join(args.output_dir, f"{_slug(name)}_seed{seed}"), enabled=dist.is_main())
    with_masks = is_mask_model(args.model)
    evaluators = [
        VOCEvaluator(val_set.classes),
        COCOEvaluator(val_set, ("bbox", "segm") if with_masks else ("bbox",)),
    ]
    val_loader, scaler = evaluation_loader(args, val_set, device), amp_scaler(args, device)
    while True:
        step = len(state["steps"])
        torch.manual_seed(seed * 1000 + step)  # the same draws whether or not the run was resumed
        model = model_from_args(args, train_set.num_classes, device)
        if args.resume_or_load == "continue" and state["model"] is not None:
            unwrap(model).load_state_dict(state["model"])
        records = [record_from_dict(r) for r in state["records"]]
        trainer = fit.FitContext(
            model, fit_cfg, device, train_set.image_root, val_loader, evaluators, log, with_masks, scaler
        )
        epochs = args.epochs if step == 0 or args.step_epochs is None else args.step_epochs
        phase = fit.Phase(f"{name}/seed{seed}/step{step}", step, epochs)
        training = fit.PhaseTraining(trainer, phase, ap_stopper(args, args.ap_shift_pretrain))
        metrics = training.train(records, lambda step=step: step)  # no checkpoint per epoch: a step is redone
        record_step(state, name, seed, len(records), metrics)
        state["done"] = not grow_pool(state, args, sampler, model, train_set, device)
        state["model"] = unwrap(model).state_dict() if args.resume_or_load == "continue" else None
        save_checkpoint(path, state)
        counter[0] += 1
        if args.exit_after_steps is not None and counter[0] >= args.exit_after_steps:
            raise Interrupted(f"stopped after {counter[0]} steps (--exit-after-steps)")
        if state["done"]:
            log.close()
            return state["steps"]


def new_curve(train_set, seed_batch: float, seed: int) -> dict:
    """A curve's state before its first step: the seed batch (the same initial pool as ASM's)."""
    records = [train_set.records[i] for i in initial_pool(len(train_set), seed_batch, seed)]
    return {
        "steps": [],
        "records": [record_to_dict(r) for r in records],
        "drawn": sum(len(r) for r in records),
        "model": None,
        "done": False,
    }


def record_step(state: dict, name: str, seed: int, images: int, metrics: dict) -> None:
    """Add the step just trained to the curve, and say it in one line."""
    step = len(state["steps"])
    state["steps"].append(
        {
            "sampler": name,
            "seed": seed,
            "step": step,
            "images": images,
            "human_drawn_boxes": state["drawn"],
            **ap_summary(metrics),
        }
    )
    logger.info(
        "%s seed %d step %d: %d images, %d drawn boxes, AP50 %.3f",
        name,
        seed,
        step,
        images,
        state["drawn"],
        metrics[AP50],
    )


def grow_pool(state: dict, args, sampler, model, train_set, device) -> bool:
    """The sampler's next batch joins the curve's records (chosen on rank 0); False when the curve
    is done (no image left, or ``--steps`` reached)."""
    n = len(train_set)
    selected = [r["image_id"] for r in state["records"]]
    chosen = set(selected)
    remaining = [i for i in range(n) if train_set.records[i].image_id not in chosen]
    if not remaining or (args.steps is not None and len(state["steps"]) >= args.steps):
        return False
    context, merged = sampler_context(sampler, model, args, train_set, remaining, device)
    picked = (
        list(sampler.select_batch(image_count(args.step_size, n), selected, **context))
        if dist.is_main()
        else None
    )
    index_of = {r.image_id: k for k, r in enumerate(train_set.records)}
    for image_id in dist.broadcast(picked):  # selected once, on rank 0
        record = merged[image_id].sa if image_id in merged else train_set.records[index_of[image_id]]
        state["drawn"] += merged[image_id].drawn if image_id in merged else len(record)
        state["records"].append(record_to_dict(record))
    return True


def run_curves(args: argparse.Namespace) -> int:
    """Every sampler x seed curve of ``al_curve.py``'s options; the exit code (0 done, 2 bad input,
    3 interrupted, 5 diverged)."""
    try:
        args, device, train_set, val_set = start(args)
        samplers = [load_sampler(spec) for spec in args.samplers]
    except (AnnotationError, ValueError, FileNotFoundError) as e:
        logging.getLogger("al_curve").error("%s", e)
        return EXIT_BAD_INPUT
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
                    write_results(args.output_dir, curves, args.x_axis, args.asm_logs)
    except Interrupted as e:
        logger.warning("%s; run the same command again to continue", e)
        return EXIT_INTERRUPTED
    except fit.Diverged as e:
        logger.error("%s", e)
        return EXIT_DIVERGED
    if dist.is_main():
        print(json.dumps({"curves": len(curves), "output": os.path.abspath(args.output_dir)}))
    return EXIT_DONE


def main(argv: list[str] | None = None) -> int:
    with dist.session():
        try:
            args = parse_with_config(get_args_parser(), argv)
            check_options(args)
        except (ValueError, FileNotFoundError) as e:
            logging.getLogger("al_curve").error("%s", e)
            return EXIT_BAD_INPUT
        return run_curves(args)


if __name__ == "__main__":
    raise SystemExit(main())
