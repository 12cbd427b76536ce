"""Active sample mining (ASM) for torchvision detectors: train, mine, grow the labelled pool.

    python train_asm_one.py --K 100                 # built-in demo dataset, 2 CPU cores
    python train_asm_one.py --strategy none         # fully supervised baseline (upper bound)
    python train_asm_one.py --resume outputs/demo/last.pth

Reads top to bottom: options -> data -> model -> resume -> initial training -> ASM rounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time

import numpy as np
import torch

from datasets import AnnotationError
from datasets.build import add_data_args, build_datasets, describe
from net.models import MODELS, PRESETS, build_model, is_mask_model
from tools.checkpoint import git_revision, load_checkpoint, rng_state, save_checkpoint, set_rng_state, unwrap
from tools.coco_eval import COCOEvaluator
from tools.early_stop import APShiftStopper
from tools.fit import AP_KEYS, Phase, Trainer, eval_loader, make_optimizer, make_scheduler, run_phase
from tools.logs import RunLog
from tools.voc_eval import VOCEvaluator

logger = logging.getLogger("train_asm_one")

STRATEGIES = ("none", "v1", "v1+", "topk_v1", "topk_v2")


class Interrupted(Exception):
    """Raised to end the process early; the checkpoint just written lets --resume continue."""


def str2bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if value.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def count_or_fraction(value: str) -> float:
    number = float(value)
    if number <= 0 or (number > 1 and not number.is_integer()):
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] or an image count, got {value!r}")
    return number


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="fasterrcnn_mobilenet_v2_fpn", help=f"one of {sorted(MODELS)}")
    g.add_argument("--weights", default=None, help="torchvision weight name (DEFAULT) or local .pth")
    g.add_argument("--weights-backbone", default=None, help="torchvision weight name or local .pth of the backbone")
    g.add_argument("--trainable-layers", type=int, default=None)
    g.add_argument("--min-size", type=int, default=224)
    g.add_argument("--max-size", type=int, default=None)
    g.add_argument("--preset", default="cpu_fast", choices=sorted(PRESETS))
    g.add_argument("--scale-jitter", type=str2bool, default=True, help="random train scales 0.8-1.2x min-size")
    g = p.add_argument_group("training")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    g.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, default=8)
    g.add_argument("--eval-batch-size", type=int, default=8)
    g.add_argument("--workers", type=int, default=2)
    g.add_argument("--opt", default="sgd", choices=("sgd", "adamw"))
    g.add_argument("--lr", type=float, default=0.02)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--lr-steps", type=float, nargs="+", default=[0.7, 0.9], help="decay points, fractions of a phase")
    g.add_argument("--lr-gamma", type=float, default=0.1)
    g.add_argument("--warmup-iters", type=int, default=100)
    g.add_argument("--clip-grad", type=float, default=None)
    g.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    g.add_argument("--num_epoches", "--epochs", dest="epochs", type=int, default=12, help="max epochs of the initial phase")
    g.add_argument("--round-epochs", type=int, default=6, help="max epochs of each ASM round")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms (exact resume)")
    g = p.add_argument_group("early stopping (AP shift)")
    g.add_argument("--ap", default="ap_50", choices=sorted(AP_KEYS))
    g.add_argument("--ap_thre", type=float, default=0.0, help="stop only above this AP")
    g.add_argument("--ap_range", type=int, default=4, help="window of AP values")
    g.add_argument("--ap_shift_pretrain", type=float, default=0.005)
    g.add_argument("--ap_shift_asm", type=float, default=0.005)
    g.add_argument("--ap-shift-squared", action="store_true", help="mean squared instead of absolute deviation")
    g = p.add_argument_group("active sample mining")
    g.add_argument("--strategy", default="topk_v2", choices=STRATEGIES)
    g.add_argument("--K", type=int, default=100, help="images detected per ASM round")
    g.add_argument("--initial", type=count_or_fraction, default=0.2, help="initial label pool: fraction or count")
    g.add_argument("--certain_thre", type=float, default=0.8)
    g.add_argument("--uncertain_thre", type=float, default=0.3)
    g.add_argument("--judge_iou", type=float, default=0.5)
    g.add_argument("--gt_iou", type=float, default=0.8)
    g.add_argument("--cer_ratio", type=float, default=0.3)
    g.add_argument("--uncer_ratio", type=float, default=0.6)
    g.add_argument("--enable_al", type=str2bool, default=True)
    g.add_argument("--enable_sl", type=str2bool, default=True)
    g.add_argument("--max-rounds", type=int, default=None)
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", "--ckpt", dest="output_dir", default="outputs/run")
    g.add_argument("--resume", default=None, help="checkpoint to continue (restores everything)")
    g.add_argument("--exit-after-epochs", type=int, default=None,
                   help="stop the process after this many epochs in all, as if killed (resume tests)")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)  # fmt: skip
    if args.resume and args.weights:
        raise ValueError("--resume restores the model; do not combine it with --weights")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def initial_pool(n: int, initial: float, seed: int) -> list[int]:
    """Indices of the initial label pool (a fraction or a count of ``n``), drawn with its own RNG."""
    count = round(initial * n) if initial <= 1 else int(initial)
    if not 0 < count <= n:
        raise ValueError(f"--initial {initial} gives {count} images; the pool has {n}")
    return sorted(np.random.default_rng([seed, 7]).permutation(n)[:count].tolist())


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        device = setup(args)
        train_set, val_set = build_datasets(args)
    except (AnnotationError, ValueError, FileNotFoundError) as e:
        logging.getLogger("train_asm_one").error("%s", e)  # names the file and field; no traceback
        return 2
    logger.info(describe("train pool", train_set))
    logger.info(describe("evaluation", val_set))
    start_wall = time.perf_counter()
    with_masks = is_mask_model(args.model)
    model = build_model(args.model, train_set.num_classes + 1, weights=args.weights,
                        weights_backbone=args.weights_backbone, trainable_layers=args.trainable_layers,
                        min_size=args.min_size, max_size=args.max_size, preset=args.preset,
                        train_scales=(0.8, 0.9, 1.1, 1.2) if args.scale_jitter else None).to(device)  # fmt: skip
    evaluators = [VOCEvaluator(val_set.classes)]
    if args.dataset == "coco":
        evaluators.append(COCOEvaluator(val_set, ("bbox", "segm") if with_masks else ("bbox",)))
    log = RunLog(args.output_dir)
    trainer = Trainer(model, args, device, train_set.image_root, eval_loader(val_set.records, val_set.image_root,
                      args, with_masks), evaluators, log, with_masks,
                      torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None)  # fmt: skip

    # State: the phase being trained and everything a resumed run needs.
    if args.strategy == "none":
        pool = list(range(len(train_set)))
        phase = Phase("supervised", 0, args.epochs)
    else:
        pool = initial_pool(len(train_set), args.initial, args.seed)
        phase = Phase("pretrain", 0, args.epochs)
    stopper = APShiftStopper(args.ap_range, args.ap_shift_pretrain, args.ap_thre, args.ap_shift_squared)
    optimizer = make_optimizer(model, args)
    scheduler = make_scheduler(optimizer, args, phase.max_epochs)
    epochs_done = 0
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        unwrap(model).load_state_dict(ckpt["model"])
        phase = Phase.from_state(ckpt["phase"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["lr_scheduler"])
        if trainer.scaler is not None and ckpt.get("scaler"):
            trainer.scaler.load_state_dict(ckpt["scaler"])
        stopper.load_state_dict(ckpt["early_stop"])
        pool, epochs_done = ckpt["pool"], ckpt["epochs_done"]
        set_rng_state(ckpt["rng"])
        logger.info("resumed %s at %s epoch %d", args.resume, phase.name, phase.epoch)
    best_ap = max([h["metrics"][AP_KEYS[args.ap]] for h in phase.history] or [-1.0])

    def save() -> None:
        nonlocal best_ap
        state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                 "lr_scheduler": scheduler.state_dict(),
                 "scaler": trainer.scaler.state_dict() if trainer.scaler else None,
                 "phase": phase.state_dict(), "early_stop": stopper.state_dict(), "pool": pool,
                 "epochs_done": epochs_done, "rng": rng_state(), "config": vars(args), "git": git_revision()}  # fmt: skip
        save_checkpoint(os.path.join(args.output_dir, "last.pth"), state)
        ap = phase.history[-1]["metrics"][AP_KEYS[args.ap]]
        if ap > best_ap:
            best_ap = ap
            save_checkpoint(os.path.join(args.output_dir, "best.pth"), state)
        if args.exit_after_epochs is not None and epochs_done >= args.exit_after_epochs:
            raise Interrupted(f"stopped after {epochs_done} epochs (--exit-after-epochs)")

    def step() -> int:
        nonlocal epochs_done
        epochs_done += 1
        return epochs_done

    records = [train_set.records[i] for i in pool]
    try:
        metrics = run_phase(trainer, phase, records, stopper, optimizer, scheduler, save, step)
    except Interrupted as e:
        logger.warning("%s; continue with --resume %s", e, os.path.join(args.output_dir, "last.pth"))
        return 3
    finally:
        log.close()
    summary = {"rounds": 0, "ap50": metrics.get("voc/AP50"), "ap75": metrics.get("voc/AP75"),
               "labelled_images": len(pool), "human_drawn_boxes": sum(len(r) for r in records),
               "epochs": epochs_done, "wall_s": round(time.perf_counter() - start_wall, 1)}  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
