"""Run setup from the checked options: the process (device, seeds), the data, the model, its
loaders and the run object (:class:`tools.loop.run.Run`) with its initial label pool.

:mod:`tools.loop.options` defines and checks the options; this module acts on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import torch
from torch.utils.data import DataLoader

from asm.pools import ASMState
from datasets.atomic import atomic_write_text
from datasets.build import DataOptions, boxes_per_class, build_datasets
from datasets.loaders import eval_loader
from datasets.records import RecordSet
from net.models import build_model, is_mask_model
from tools.engine.coco_eval import COCOEvaluator
from tools.engine.evaluator import OutcomeEvaluator
from tools.engine.fit import FitContext
from tools.engine.voc_eval import VOCEvaluator
from tools.loop import held_out
from tools.loop.options import NO_WEIGHTS, fit_config, pisa_config, training_seed
from tools.loop.run import Run
from tools.runtime import dist
from tools.runtime.logs import RunLog
from tools.runtime.process import (
    choose_device,
    configure_logging,
    default_workers,
    deterministic_mode,
    keep_freed_memory,
    run_environment,
    seed_everything,
)


def settle(args: argparse.Namespace, device: torch.device) -> argparse.Namespace:
    """A copy of ``args`` with the values that depend on the device and the process count: DataLoader
    workers, the detection batch and ``--auto-scale-lr``'s rate (``--no-validate`` is applied by
    :func:`fit_config`, so that a resumed run can turn it off). The copy is what the run saves, so that config.yaml reproduces it."""
    log = logging.getLogger(__name__)
    settled = {}
    if args.workers is None:
        settled["workers"] = default_workers() if device.type == "cuda" else 0
    if args.eval_batch_size is None:
        settled["eval_batch_size"] = 8 if device.type == "cuda" else 1
    if args.no_validate:  # fit_config() then evaluates at each phase's end; eval_interval is kept for later
        log.warning(
            "--no-validate: evaluating at the end of each phase only; AP-shift early stopping cannot stop "
            "a phase early"
        )
    if args.auto_scale_lr:
        total = args.batch_size * dist.world_size()
        scaled = args.lr * total / args.base_batch_size
        log.info("--auto-scale-lr: lr %g x %d / %d = %g", args.lr, total, args.base_batch_size, scaled)
        # config.yaml then holds the scaled lr and no second scaling: it reproduces this run
        settled |= {"lr": scaled, "auto_scale_lr": False}
    return argparse.Namespace(**{**vars(args), **settled})


def start(args: argparse.Namespace) -> tuple[argparse.Namespace, torch.device, RecordSet, RecordSet]:
    """Set up the process (:mod:`tools.runtime.process`) for options already checked
    (:func:`tools.loop.options.check_options`), then load the training pool and the evaluation set
    (rank 0 first: it fills the caches).

    Returns:
        The options settled for this device (:func:`settle`), the device, the two sets.

    Raises:
        ValueError: bad options or data, or more processes than evaluation images.
    """
    configure_logging(args.log_level)
    keep_freed_memory()
    device = choose_device(args.device)
    if args.sync_bn:
        if device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA: torch's SyncBatchNorm runs on GPUs only")
        if not dist.is_distributed():
            logging.getLogger(__name__).warning("--sync-bn has no effect in a single process")
    seed_everything(training_seed(args))
    if args.deterministic:
        deterministic_mode()
    args = settle(args, device)
    train_set, val_set = dist.main_first(build_datasets, DataOptions.of(vars(args)))
    if hasattr(args, "eval_from_labels"):  # al_curve.py evaluates on the data's split
        train_set, val_set = held_out.settle(args, train_set, val_set)
    dist.check_shardable(len(val_set), "evaluation images")
    if getattr(args, "oracle", None) == "none":  # al_curve.py has no human in the loop
        check_tool_names(train_set)
    return args, device, train_set, val_set


def check_tool_names(train_set) -> None:
    """A labelling tool's files name each image in text (Label Studio JSON, CVAT and VOC XML): a file
    name that is not UTF-8 cannot be written there exactly. The simulated human reads and writes such
    names byte for byte; a human in the loop needs them renamed, said before any training.

    Raises:
        ValueError: one line naming the first such files.
    """
    bad = [r.file_name for r in train_set.records if not _is_utf8(r.file_name)]
    if bad:
        shown = ", ".join(repr(os.fsencode(n)) for n in bad[:3]) + (
            f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        )
        raise ValueError(
            f"--oracle none: {len(bad)} image file names under {train_set.image_root} are not UTF-8 ({shown}); "
            "a labelling tool's files cannot name them: rename them to UTF-8 (e.g. convmv -f latin1 -t utf-8)"
        )


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def model_from_args(args: argparse.Namespace, num_classes: int, device: torch.device) -> torch.nn.Module:
    """The detector the options describe, for ``num_classes`` foreground classes.

    Under ``torchrun`` it comes wrapped in ``DistributedDataParallel`` (see :mod:`tools.runtime.dist`).
    """
    model = build_model(
        args.model,
        num_classes + 1,
        weights=args.weights,
        weights_backbone=None if args.weights_backbone in (None, NO_WEIGHTS) else args.weights_backbone,
        trainable_layers=args.trainable_layers,
        min_size=args.min_size,
        max_size=args.max_size,
        preset=args.preset,
        roi_head=args.roi_head,
        pisa=pisa_config(args),
        train_scales=(0.8, 0.9, 1.1, 1.2) if args.scale_jitter else None,
    ).to(device)
    return dist.wrap_model(model, device, args.sync_bn)


def evaluation_loader(args: argparse.Namespace, val_set: RecordSet, device: torch.device) -> DataLoader:
    """The evaluation batches of ``val_set`` under the (settled) options; with masks for Mask R-CNN."""
    return eval_loader(
        val_set.records,
        val_set.image_root,
        args.eval_batch_size,
        args.workers,
        is_mask_model(args.model),
        pin_memory=device.type == "cuda",
    )


def amp_scaler(args: argparse.Namespace, device: torch.device) -> torch.amp.GradScaler | None:
    """``--amp``'s gradient scaler on CUDA; None trains in fp32."""
    return torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None


def write_load_report(output_dir: str, train_set: RecordSet, val_set: RecordSet) -> None:
    """``load_report.json``: every skipped or fixed file of both sets (the log shows 10 per kind),
    each once: what both loads found in a folder they share (an image without its XML, two images of
    one stem) is under ``train`` alone."""
    seen = {tuple(e) for e in (train_set.report.entries if train_set.report else [])}
    report = {}
    for name, d in (("train", train_set), ("evaluation", val_set)):
        entries = d.report.entries if d.report else []
        if name == "evaluation":
            entries = [e for e in entries if tuple(e) not in seen]
        report[name] = {"entries": [list(e) for e in entries], "boxes_per_class": boxes_per_class(d)}
    atomic_write_text(os.path.join(output_dir, "load_report.json"), json.dumps(report, indent=1))


def build_run(
    args: argparse.Namespace, device: torch.device, train_set: RecordSet, val_set: RecordSet
) -> Run:
    """The model, its evaluators, log and trainer, and a new run with its initial label pool (all of
    the training set for ``--strategy none``)."""
    with_masks = is_mask_model(args.model)
    model = model_from_args(args, train_set.num_classes, device)
    evaluators = [VOCEvaluator(val_set.classes)]
    if args.coco_ap or (args.coco_ap is None and args.dataset == "coco"):
        evaluators.append(COCOEvaluator(val_set, ("bbox", "segm") if with_masks else ("bbox",)))
    log = RunLog(args.output_dir, enabled=dist.is_main())
    trainer = FitContext(
        model,
        fit_config(args),
        device,
        train_set.image_root,
        evaluation_loader(args, val_set, device),
        evaluators,
        log,
        with_masks,
        amp_scaler(args, device),
    )
    run = Run(args, model, trainer, train_set, run_environment())
    policy = run.policy  # built once, from the options (asm.policy.RoundPolicy)
    if policy.calibration is not None and policy.shows_model:  # calibrates the rounds
        evaluators.append(OutcomeEvaluator(policy.rules.gt_iou, policy.rules.uncertain_thre))
    if policy.strategy == "none":
        run.train_records = list(train_set.records)
        return run
    initial = held_out.initial_indices(args, train_set)
    run.asm = ASMState.start(
        policy.strategy,
        policy.K,
        train_set.records,
        initial,
        args.seed,
        args.cer_ratio,
        args.uncer_ratio,
        args.max_passes,
        args.round_train,
    )
    run.train_records = [train_set.records[i] for i in initial]
    run.initial_boxes = sum(len(r) for r in run.train_records)  # the held-out ones' too: drawn by the human
    if getattr(args, "eval_from_labels", None) is not None:  # the evaluation set: their held-out share
        run.asm.hold_out(held_out.first_held_out(args, train_set), held_out.WHY)
        run.train_records = [r for r in run.train_records if r.image_id not in run.asm.held_out]
    return run
