"""Active sample mining (ASM) for torchvision detectors: train, mine, grow the labelled pool.

    python train_asm_one.py --K 100                 # built-in demo dataset, 2 CPU cores
    python train_asm_one.py --strategy none         # fully supervised baseline (upper bound)
    python train_asm_one.py --output-dir outputs/demo --resume   # continue that run

Reads top to bottom: options -> data -> model -> resume -> initial training -> ASM rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
import time

import numpy as np
import torch

from asm.merge import ASMConfig
from asm.pools import ASMState, initial_pool
from asm.select import calibrate_scores, choose_informative, class_thresholds, detection_outcomes
from datasets import AnnotationError
from datasets.atomic import atomic_write_text
from datasets.build import DataOptions, add_data_args, describe, labelled_indices
from datasets.records import record_from_dict, record_to_dict
from net.models import is_mask_model
from tools import dist, run_dir
from tools.checkpoint import (
    CheckpointError,
    RunState,
    best_path,
    last_path,
    read_state,
    rng_state,
    run_environment,
    save_checkpoint,
    set_rng_state,
    unwrap,
    weights_digest,
)
from tools.coco_eval import COCOEvaluator
from tools.config import add_config_args, parse_with_config, save_resolved
from tools.drawing import round_sheet, to_tensorboard
from tools.fit import (
    AP_KEYS,
    Diverged,
    FitContext,
    Phase,
    ap_summary,
    make_optimizer,
    make_scheduler,
    phase_loader,
    run_epoch,
)
from tools.labelling import export_round, results_from_imported
from tools.logs import RunLog, read_jsonl
from tools.mining import detect_sorted, merge_with_oracle, preannotate
from tools.options import (
    NO_VALIDATE_INTERVAL,
    OPTION_PRESETS,
    HelpFormatter,
    add_asm_args,
    add_model_args,
    add_train_args,
    amp_scaler,
    ap_stopper,
    asm_config,
    check_options,
    evaluation_loader,
    fit_config,
    model_from_args,
    start,
    str2bool,
)
from tools.progress import HEARTBEAT, rounds_planned
from tools.resume import NOT_COMPARED, reconcile, run_folder
from tools.stop import STOP, Interrupted, Stopped, resume_command
from tools.voc_eval import VOCEvaluator

logger = logging.getLogger("train_asm_one")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter, epilog=MMDET_FLAGS)
    p.add_argument(
        "config_file", nargs="?", default=None, help="a YAML config (as --config; MMDetection style)"
    )
    add_data_args(p)
    add_model_args(p)
    add_train_args(p)
    add_asm_args(p)
    add_config_args(p)
    g = p.add_argument_group("evaluation and output")
    g.add_argument(
        "--coco-ap",
        type=str2bool,
        default=None,
        help="also evaluate COCO-style bbox AP (default: only with --dataset coco)",
    )
    g.add_argument(
        "--output-dir",
        "--ckpt",
        "--work-dir",
        dest="output_dir",
        default=None,
        help=f"the run's folder (default {DEFAULT_OUTPUT}; with --resume CKPT, the checkpoint's folder)",
    )
    g.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        help="continue a run (restores everything): CKPT, or without a value <output-dir>/last.pth; the run "
        "keeps its options (tools/resume.py says which may change)",
    )
    g.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue from <output-dir>/last.pth when it exists, otherwise start (MMDetection's --resume "
        "without a path)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an --output-dir that holds another run (its checkpoints and logs are removed)",
    )
    g.add_argument(
        "--exit-after-epochs",
        type=int,
        default=None,
        help="stop the process after this many epochs in all, as if killed (resume tests)",
    )
    return p


MMDET_FLAGS = """MMDetection's tools/train.py flags here:
  CONFIG (positional)   the same (also --config, several merged in order)
  --work-dir DIR        --output-dir DIR (alias)
  --resume [CKPT]       --resume CKPT, or --auto-resume for the latest in --output-dir
  --amp                 --amp (CUDA)
  --auto-scale-lr       --auto-scale-lr, with --base-batch-size (16)
  --cfg-options K=V     --cfg-options K=V
  --no-validate         --no-validate (MMDetection 2.x)
  --seed / --deterministic   the same
  --launcher pytorch    torchrun ... train_asm_one.py (README "Several GPUs")
  --gpu-id N            --device cuda:N
"""


class Paused(Exception):
    """A round waits for a human's labels (``--oracle none``) in ``folder``."""

    def __init__(self, message: str, folder: str):
        super().__init__(message)
        self.folder = folder


class LabelsMissing(Exception):
    """--resume of a paused round before its labels were imported."""


class Run:
    """The mutable state of a run that a checkpoint holds (:meth:`state`: a :class:`~tools.checkpoint.RunState`)."""

    def __init__(self, args, model, trainer, train_set, environment: dict):
        self.args, self.model, self.trainer = args, model, trainer
        self.classes = list(train_set.classes)
        self.label_to_cat_id = {str(k): v for k, v in train_set.label_to_cat_id.items()}
        self.environment = environment  # git revision, CPU, threads: read once per process
        self.rules = asm_config(args)  # the merge rules; a round may gate or calibrate them (round_rules)
        self.asm: ASMState | None = None
        self.phase = Phase("supervised" if args.strategy == "none" else "pretrain", 0, args.epochs)
        self.train_records: list = []  # what the current phase trains on
        self.awaiting: str | None = None  # labelling folder of a round paused for a human (--oracle none)
        self.last_outcomes: dict | None = None  # the last batch's detection outcomes (--certain-precision)
        self.thresholds: dict[int, float] = {}  # this round's per-class certain thresholds
        self.epochs_done = 0
        self.best_ap = -1.0
        self.initial_boxes = 0  # boxes of the initial label pool, all drawn by the human
        self.round_stopper = ap_stopper(args, args.ap_shift_asm)
        self.new_phase(self.phase, args.ap_shift_pretrain)

    def new_phase(self, phase: Phase, threshold: float) -> None:
        self.phase = phase
        self.stopper = ap_stopper(self.args, threshold)
        self.optimizer = make_optimizer(self.model, self.trainer.config)
        self.scheduler = make_scheduler(self.optimizer, self.trainer.config, phase.max_epochs)

    def state(self) -> RunState:
        scaler = self.trainer.scaler
        return RunState(
            model=unwrap(self.model).state_dict(),
            optimizer=self.optimizer.state_dict(),
            lr_scheduler=self.scheduler.state_dict(),
            scaler=scaler.state_dict() if scaler else None,
            phase=self.phase.state_dict(),
            early_stop=self.stopper.state_dict(),
            round_stop=self.round_stopper.state_dict(),
            epochs_done=self.epochs_done,
            best_ap=self.best_ap,
            asm=self.asm.state_dict() if self.asm else None,
            train_records=[record_to_dict(r) for r in self.train_records],
            rng=rng_state(),
            config=vars(self.args),
            git=self.environment["git"],
            environment=self.environment,
            classes=self.classes,
            awaiting=self.awaiting,
            label_to_cat_id=self.label_to_cat_id,
            last_outcomes=self.last_outcomes,
            log_lines=self.trainer.log.lines,
        )

    def load_state(self, state: RunState, path: str = "checkpoint") -> None:
        """Restore everything :meth:`state` saved.

        Raises:
            CheckpointError: the checkpoint is of another dataset (classes), model or optimizer setup.
        """
        made_with = state.config.get("strategy", self.args.strategy)
        if made_with != self.args.strategy:  # e.g. a supervised checkpoint under v1+ would run no round
            raise CheckpointError(
                f"{path}: made with --strategy {made_with}, this command says --strategy "
                f"{self.args.strategy}; resume with --strategy {made_with}, or start a new run from "
                f"its model with --weights {path}"
            )
        if state.classes is not None and list(state.classes) != self.classes:
            raise CheckpointError(
                f"{path}: made for the classes {state.classes}, this run has {self.classes}"
            )
        try:
            unwrap(self.model).load_state_dict(state.model)
        except RuntimeError as e:
            detail = next(
                (
                    line.strip()
                    for line in str(e).splitlines()
                    if "size mismatch" in line or "Missing" in line
                ),
                str(e).splitlines()[0],
            )
            raise CheckpointError(
                f"{path}: made for another model or class count than --model "
                f"{self.args.model} ({detail[:200]})"
            ) from e
        self.phase = Phase.from_state(state.phase)
        self.new_phase(self.phase, 0.0)
        try:
            self.optimizer.load_state_dict(state.optimizer)
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"{path}: its optimizer state does not fit --opt {self.args.opt} with these "
                f"trainable layers ({e})"
            ) from e
        self.scheduler.load_state_dict(state.lr_scheduler)
        if self.trainer.scaler is not None and state.scaler:
            self.trainer.scaler.load_state_dict(state.scaler)
        self.stopper.load_state_dict(state.early_stop)
        self.round_stopper.load_state_dict(state.round_stop)
        self.epochs_done, self.best_ap = state.epochs_done, state.best_ap
        self.asm = ASMState.from_state(state.asm) if state.asm else None
        self.train_records = [record_from_dict(r) for r in state.train_records]
        self.awaiting = state.awaiting
        self.last_outcomes = state.last_outcomes
        if state.log_lines is not None and self.trainer.log.truncate(state.log_lines):
            logger.info(
                "log.jsonl: dropped the records written after %s was saved (they are written again)", path
            )
        set_rng_state(state.rng)  # rank 0's: a single process resumes exactly
        if dist.rank() > 0:  # the other ranks keep augmentations of their own
            torch.manual_seed(self.args.seed + dist.rank() + 1000 * self.epochs_done)

    def save(self) -> None:
        """Checkpoint: ``last.pth``, and ``best.pth`` on a new best AP of an evaluated epoch."""
        out = self.args.output_dir
        state = self.state()
        with STOP.deferred():  # Ctrl-C or SIGTERM: after the write, not in the middle of it
            save_checkpoint(last_path(out), state.to_dict())
            if self.phase.history and self.phase.history[-1].get("evaluated", True):
                ap = self.phase.history[-1]["metrics"][AP_KEYS[self.args.ap]]
                if ap > self.best_ap:
                    self.best_ap = state.best_ap = ap
                    save_checkpoint(best_path(out), state.to_dict())

    def train_phase(self) -> dict:
        """Train the current phase from its next epoch to its end (last epoch, or AP settled),
        with a checkpoint after every epoch. Returns the last evaluation's metrics."""
        phase, exit_after = self.phase, self.args.exit_after_epochs
        metrics = phase.history[-1]["metrics"] if phase.history else {}
        loader = phase_loader(self.trainer, phase, self.train_records)
        HEARTBEAT.start_phase(phase.name, phase.max_epochs, phase.epoch)
        while not phase.finished:
            metrics = run_epoch(
                self.trainer,
                phase,
                loader,
                self.stopper,
                self.optimizer,
                self.scheduler,
                step=self.epochs_done + 1,
            )
            self.epochs_done += 1
            self.save()
            if exit_after is not None and self.epochs_done >= exit_after:
                raise Interrupted(f"stopped after {self.epochs_done} epochs (--exit-after-epochs)")
        HEARTBEAT.end_phase()
        return metrics


def start_round(run: Run, train_set, device) -> None:
    """Detect the next batch, merge with the oracle, move the pools; set up the round's training.

    With ``--candidates C`` the model detects ``C x K`` images and the ``K`` most informative are
    kept (:func:`asm.select.choose_informative`); the rest stay unlabelled. With ``--oracle none``
    the round pauses instead: the pre-annotations are exported for a labelling tool and
    :class:`Paused` ends the process until the labels are imported.
    """
    args, asm = run.args, run.asm
    oracle = {r.image_id: r for r in train_set.records}
    cfg, info = round_rules(run, train_set.num_classes)
    if args.strategy == "random":  # nothing is shown to the human: no detection pass
        batch = [oracle[i] for i in asm.next_batch()]
        shown = raw = [no_detections() for _ in batch]
    else:
        ids = asm.next_batch(args.candidates)
        dets = dict(
            zip(
                ids,
                detect_sorted(
                    run.model,
                    [oracle[i] for i in ids],
                    train_set.image_root,
                    device,
                    args.eval_batch_size,
                    args.workers,
                ),
            )
        )
        if args.candidates > 1:
            fresh = [i for i in ids if i not in asm.pending]
            picks = choose_informative(
                [dets[i] for i in fresh],
                asm.K - (len(ids) - len(fresh)),
                cfg,
                train_set.num_classes,
                args.diversity,
            )
            asm.prefer([fresh[j] for j in picks])
            info["candidates"] = len(ids)
        batch = [oracle[i] for i in asm.next_batch()]
        raw = [dets[r.image_id] for r in batch]
        shown = calibrate_scores(raw, run.thresholds, cfg) if run.thresholds else raw
    if args.oracle == "none":
        pre, scores, estimates = preannotate(shown, batch, cfg)
        run.awaiting = os.path.join(
            "labelling", f"round{asm.round + 1}"
        )  # relative to the run folder: it can move
        folder = os.path.join(args.output_dir, run.awaiting)
        if dist.is_main():
            export_round(folder, asm.round + 1, pre, scores, train_set, estimates)
        run.save()
        raise Paused(f"round {asm.round + 1}: {len(batch)} images with pre-annotations in {folder}", folder)
    if args.certain_precision is not None:  # this batch, detected before training on it, calibrates the next
        run.last_outcomes = detection_outcomes(raw, batch, cfg.gt_iou, cfg.uncertain_thre)
    info["max_score"] = round(max((float(d["scores"][0]) for d in shown if len(d["scores"])), default=0.0), 4)
    finish_round(run, train_set, merge_with_oracle(shown, batch, cfg), info)


def no_detections() -> dict:
    """An image's detections when the model shows the human nothing (``--strategy random``)."""
    return {
        "boxes": np.zeros((0, 4), np.float32),
        "scores": np.zeros(0, np.float32),
        "labels": np.zeros(0, np.int64),
    }


def round_rules(run: Run, num_classes: int) -> tuple[ASMConfig, dict]:
    """This round's merge rules: no SL below the mining gate; per-class certain thresholds
    calibrated on the last batch (``--certain-precision``). Also what to log about them."""
    args, cfg = run.args, run.rules
    ap50 = run.phase.history[-1]["metrics"]["voc/AP50"] if run.phase.history else 0.0
    info = {"ap50_before": ap50}  # the model that detected this round's images
    if args.strategy == "random":  # the human draws every box of the next K images
        return dataclasses.replace(cfg, enable_sl=False), info
    info["gated"] = bool(cfg.enable_sl and ap50 < args.mining_gate)
    if info["gated"]:  # ASM_core's ap_thre: a weak model's boxes are not offered to the human
        cfg = dataclasses.replace(cfg, enable_sl=False)
    run.thresholds = {}
    if args.certain_precision is not None and run.last_outcomes:
        run.thresholds = class_thresholds(
            run.last_outcomes, num_classes, args.certain_precision, cfg.certain_thre, cfg.uncertain_thre
        )
        info["thresholds"] = {run.classes[c - 1]: round(t, 4) for c, t in run.thresholds.items()}
    return cfg, info


def resume_labelled(run: Run, train_set) -> None:
    """Continue a round paused for a human, with the labels imported by import_labels.py."""
    folder = os.path.join(
        run.args.output_dir, run.awaiting
    )  # older checkpoints hold an absolute path: join keeps it
    path = os.path.join(folder, "imported.json")
    if not os.path.isfile(path):
        raise LabelsMissing(f"no labels imported for {folder}: run import_labels.py first")
    with open(path, encoding="utf-8") as f:
        results = results_from_imported(json.load(f))
    run.awaiting = None
    finish_round(run, train_set, results)


def finish_round(run: Run, train_set, results, info: dict | None = None) -> None:
    """Move the pools with the round's results (selection on rank 0, broadcast to the others)."""
    args = run.args
    if dist.is_main():
        run.train_records = run.asm.apply(results)
        run.asm.rounds[-1].update(info or {})
        sheet = round_sheet(results, train_set.image_root, train_set.classes)
        os.makedirs(os.path.join(args.output_dir, "rounds"), exist_ok=True)
        sheet.save(os.path.join(args.output_dir, "rounds", f"round{run.asm.round}.png"))
        write_round_report(run, results)
        if run.trainer.log.enabled:
            to_tensorboard(run.trainer.log.writer, "ASM/most_uncertain", sheet, run.asm.round)
    if dist.is_distributed():
        state, train = dist.broadcast((run.asm.state_dict(), [record_to_dict(r) for r in run.train_records]))
        run.asm, run.train_records = ASMState.from_state(state), [record_from_dict(r) for r in train]
    asm = run.asm
    info = asm.rounds[-1]
    human = human_work(run)
    run.trainer.log.scalars(
        {
            "ASM/images_joined": info["images_joined"],
            "ASM/images_held": info["images_held"],
            "ASM/mean_al_ratio": info["ratio_sum"] / max(info["images"], 1),
            "ASM/precision": info["precision"],
            "ASM/round/drawn": info["drawn"],
            "ASM/round/confirmed": info["confirmed"],
            "ASM/round/deleted": info["deleted"],
            "ASM/round/moved": info["moved"],
            **{f"ASM/human/{k}": v for k, v in human.items()},
            "ASM/label_pool": len(asm.labelled),
        },
        asm.round,
    )
    why = ""
    if info["precision"] is None and "max_score" in info:  # say why the precision column shows "-"
        why = (
            f" (no certain boxes: the model's best score was {info['max_score']:.3f}, below --certain-thre "
            f"{run.rules.certain_thre})"
        )
    logger.info(
        "round %d: detected %d, drew %d, confirmed %d, moved %d, deleted %d boxes, precision %s%s; "
        "label pool %d (%.0f%% of its boxes confirmed, not drawn), training on %d",
        asm.round,
        info["images"],
        info["drawn"],
        info["confirmed"],
        info["moved"],
        info["deleted"],
        _fmt(info["precision"]),
        why,
        len(asm.labelled),
        100 * human["saved_fraction"],
        len(run.train_records),
    )
    run.new_phase(Phase(f"round{asm.round}", asm.round, args.round_epochs), args.ap_shift_asm)
    run.save()


def human_work(run: Run) -> dict:
    """What the human has done so far: boxes drawn (the initial pool's included), confirmed, deleted
    and moved, the weighted cost, and the share of the label pool's boxes confirmed from the model
    rather than drawn (``saved_fraction``)."""
    cost, (pool_boxes, confirmed_in_pool) = run.asm.cost, run.asm.pool_boxes()
    return {
        "drawn": run.initial_boxes + cost.drawn,
        "confirmed": cost.confirmed,
        "deleted": cost.deleted,
        "moved": cost.moved,
        "weighted_cost": round(
            run.initial_boxes + cost.weighted(run.args.review_cost, run.args.move_cost), 2
        ),
        "saved_fraction": round(confirmed_in_pool / pool_boxes, 4) if pool_boxes else 0.0,
    }


def write_round_report(run: Run, results) -> str:
    """``<output>/rounds/round<r>.json``: every image detected this round, its AL ratio and boxes
    (confirmed, drawn, moved, deleted), whether it joined the label pool, and why."""
    asm = run.asm
    images = [
        {
            "image_id": r.sa.image_id,
            "file_name": r.sa.file_name,
            "al_ratio": round(float(r.ratio), 4),
            "confirmed": r.confirmed,
            "drawn": r.drawn,
            "moved": 0 if r.moved is None else int(r.moved.sum()),
            "deleted": r.deleted,
            "joined_pool": asm.labelled.get(r.sa.image_id) is r.sa,
            "reason": asm.fates.get(r.sa.image_id, ""),
        }
        for r in results
    ]
    report = {
        "round": asm.round,
        "strategy": asm.strategy,
        "K": asm.K,
        "rules": dataclasses.asdict(run.rules),
        "summary": asm.rounds[-1],
        "human_so_far": human_work(run),
        "images": images,
    }
    path = os.path.join(run.args.output_dir, "rounds", f"round{asm.round}.json")
    atomic_write_text(path, json.dumps(report, indent=1))
    return path


def plan_rounds(run: Run, current: int | None = None) -> None:
    """Tell the progress line which round comes (``current``: the one running) and how many are planned."""
    if run.asm is None:
        return
    asm, max_rounds = run.asm, run.args.max_rounds
    left = rounds_planned(
        len(asm.unlabelled) + len(asm.pending),
        asm.K,
        None if max_rounds is None else max(max_rounds - asm.round, 0),
    )
    HEARTBEAT.set(round=asm.round + 1 if current is None else current, rounds=asm.round + left)


def check_ranks_agree(asm: ASMState) -> list[str]:
    """Every rank's pool digest (one entry per process); raises if the ranks' pools differ."""
    digests = dist.all_gather(asm.digest())
    if len(set(digests)) > 1:
        raise RuntimeError(f"round {asm.round}: the processes hold different pools {digests}")
    return digests


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(run: Run) -> str:
    """Per-round table: label pool, the human's boxes, pseudo-label precision, AP."""
    lines = ["round  labelled  drawn  confirmed  moved  deleted  precision   AP50   AP75"]
    for r in run.asm.rounds:
        lines.append(
            f"{r['round']:>5}  {r['labelled_images']:>8}  {r['drawn']:>5}  {r['confirmed']:>9}  "
            f"{r.get('moved', 0):>5}  {r['deleted']:>7}  {_fmt(r['precision']):>9}  {_fmt(r.get('AP50')):>5}  "
            f"{_fmt(r.get('AP75')):>5}"
        )
    return "\n".join(lines)


def closing_story(run: Run, ap50: float | None) -> str:
    """The lines a person reads at the end of a run: AP50 round by round, the human's boxes against
    the model's, where the outputs are, and what to try next on their own data."""
    out = run.args.output_dir
    log_path = os.path.join(out, "log.jsonl")
    rounds = [e for e in read_jsonl(log_path) if e["type"] == "round"] if os.path.isfile(log_path) else []
    points = sorted({e["round"]: e.get("AP50") for e in rounds}.items()) or [
        (run.asm.round if run.asm else 0, ap50)
    ]
    curve = " -> ".join(f"round {k}: {_fmt(v)}" for k, v in points)
    lines = ["", f"AP50 by round: {curve}"]
    if run.asm is not None:
        human = human_work(run)
        total = human["drawn"] + human["confirmed"]
        lines.append(
            f"The human drew {human['drawn']} boxes (moved {human['moved']}) and confirmed {human['confirmed']} "
            f"from the model: {100 * human['saved_fraction']:.0f}% of the {total} pool boxes were not drawn by "
            "hand."
        )
    lines += [
        f"Outputs in {out}: the best model best.pth, round sheets rounds/round<r>.png and .json, the log "
        "log.jsonl;",
        f"  curves: tensorboard --logdir {shlex.quote(os.path.join(out, 'tb'))}",
        "Next, on your own data (VOC XML; README 'Your own data' for COCO, YOLO and Roboflow exports):",
        "  python train_asm_one.py --dataset voc --voc-roots path/to/data --discover-classes --output-dir runs/mine",
        "",
    ]
    return "\n".join(lines)


def explain_drop(run: Run, ap50: float) -> None:
    """Warn when a round's training left AP50 well below the model that started the round, with
    what the round did (LR restart, its labels' precision, what it trained on)."""
    info = run.asm.rounds[-1]
    before = info.get("ap50_before")
    if before is None or not (ap50 < 0.5 * before and before - ap50 > 0.05):
        return
    logger.warning(
        "round %d: AP50 fell from %.3f to %.3f. The round retrained %d images for %d epochs from "
        "--lr %g with %d warm-up iterations; its pseudo-label precision was %s (%d of its boxes "
        "confirmed from the model). A short round often recovers in the next one; if not, try fewer "
        "--round-epochs, a lower --lr or a higher --certain-thre",
        info["round"],
        before,
        ap50,
        info["train_images"],
        run.phase.max_epochs,
        run.args.lr,
        run.args.warmup_iters,
        _fmt(info["precision"]),
        info["confirmed"],
    )


def next_steps(paused: Paused, output_dir: str, command: str) -> str:
    """What the human does after a round paused for labels: push, label, pull (or a file export and
    import_labels.py), then continue. The continue command is also kept in the round's folder
    (``continue.txt``), where ``labelstudio_round.py pull`` reads it."""
    run = shlex.quote(output_dir)
    if dist.is_main():
        atomic_write_text(os.path.join(paused.folder, "continue.txt"), command + "\n")
    return (
        f"{paused}. Next:\n"
        f"  1. with a running Label Studio (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY set):\n"
        f"       python labelstudio_round.py push --run {run}\n"
        f"       (label every task in the browser)\n"
        f"       python labelstudio_round.py pull --run {run}\n"
        f"     or with another tool: label the files in that folder (CVAT XML, COCO, VOC), then\n"
        f"       python import_labels.py --run {run} --labels <the tool's export>\n"
        f"  2. continue the run:\n"
        f"       {command}"
    )


def continue_command(args: argparse.Namespace, argv: list[str] | None) -> str:
    """The exact command that continues this run from its last checkpoint (``argv``: the command
    line's options; None: ``sys.argv``)."""
    options = list(argv) if argv is not None else sys.argv[1:]
    return resume_command(options, last_path(args.output_dir), "train_asm_one.py")


def main(argv: list[str] | None = None) -> int:
    with dist.session():
        return run_main(argv)


DEFAULT_OUTPUT = "outputs/run"


def resolve_resume(args: argparse.Namespace, argv: list[str] | None) -> RunState | None:
    """Settle the run's folder and, on a resume, its options (:mod:`tools.resume`: the checkpoint's,
    except the few that may change, which are listed)."""
    log = logging.getLogger("train_asm_one")
    folder = args.output_dir or DEFAULT_OUTPUT
    if args.auto_resume and args.resume is None and os.path.isfile(last_path(folder)):
        args.resume = ""
        log.info(
            "--auto-resume: continuing %s%s",
            last_path(folder),
            " (its model, not --weights)" if args.weights else "",
        )
        args.weights = None
    if args.resume is not None and args.weights:
        raise ValueError("--resume restores the model; do not combine it with --weights")
    if args.resume == "":  # --resume without a value: this folder's last checkpoint
        args.resume = last_path(folder)
    if args.resume is None:
        args.output_dir = folder
        return None
    args.output_dir = run_folder(args.resume, args.output_dir)
    if not os.path.isfile(args.resume):
        raise FileNotFoundError(f"checkpoint not found: {args.resume} (--resume)")
    state = read_state(args.resume)  # read once: run_job() restores from it
    saved = state.config
    defaults = vars(get_args_parser().parse_args([]))
    named = set(explicit_options(get_args_parser(), argv if argv is not None else sys.argv[1:]))
    given = {k: v for k, v in vars(args).items() if k in named or v != defaults.get(k)}
    if args.auto_scale_lr and "lr" in given:  # the checkpoint holds the scaled rate
        given["lr"] = args.lr * args.batch_size * dist.world_size() / args.base_batch_size
    values, applied = reconcile(given, saved)
    vars(args).update(values)
    args.auto_scale_lr = False  # the checkpoint's lr is the rate the run started with, scaled once
    if (
        saved.get("eval_interval") == NO_VALIDATE_INTERVAL
        and not args.no_validate
        and "eval_interval" not in given
    ):
        args.eval_interval = defaults["eval_interval"]  # a checkpoint from before fit_config applied it
    for line in applied:
        log.warning("--resume: applied the new value of %s", line)
    if args.no_validate and "eval_interval" in given:
        log.warning("--resume: --eval-interval has no effect while --no-validate is on (--no-validate false)")
    predated = sorted(k for k in vars(args) if k not in saved and k not in NOT_COMPARED)
    if predated:
        log.info(
            "--resume: the checkpoint predates %s; taking %s",
            ", ".join("--" + k.replace("_", "-") for k in predated),
            ", ".join(f"{k}={getattr(args, k)!r}" for k in predated),
        )
    return state


def explicit_options(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """The option names (dests) written on a command line."""
    actions = parser._option_string_actions
    return [actions[tok.split("=", 1)[0]].dest for tok in argv if tok.split("=", 1)[0] in actions]


def run_main(argv: list[str] | None) -> int:
    log = logging.getLogger("train_asm_one")
    try:
        args = parse_with_config(get_args_parser(), argv, OPTION_PRESETS)
        checkpoint = resolve_resume(args, argv)
        check_options(args)
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        log.error("%s", e)  # names the option or the config file and key; no traceback
        return 2
    try:
        # the folder is claimed before the data loads: --overwrite also clears the old run's splits/
        with (
            STOP,
            run_dir.claim(args.output_dir, bool(args.resume), args.overwrite, enabled=dist.will_be_main()),
        ):
            try:
                args, device, train_set, val_set = start(args)
                if args.strategy != "none":
                    dist.check_shardable(args.K, "--K (images detected per round)")
                    initial_pool(
                        len(train_set), args.initial, args.seed
                    )  # --initial larger than the pool: say so now
            except (AnnotationError, ValueError, FileNotFoundError) as e:
                log.error("%s", e)  # names the file and field; no traceback
                return 2
            return run_job(args, device, train_set, val_set, argv, checkpoint)
    except run_dir.OutputDirError as e:
        log.error("%s", e)
        return 2
    except Stopped as e:  # before training started, or between the loop and its handler
        log.warning("%s before anything was saved; run the same command again", e)
        return e.exit_code


def run_job(
    args: argparse.Namespace,
    device: torch.device,
    train_set,
    val_set,
    argv: list[str] | None = None,
    checkpoint: RunState | None = None,
) -> int:
    """Initial phase, then ASM rounds until the pool is exhausted, AP settles or --max-rounds;
    ``checkpoint``: the one ``--resume`` names, already read (None: a new run)."""
    logger.info(describe("train pool", train_set))
    logger.info(describe("evaluation", val_set))
    if dist.is_main():  # every skipped or fixed file of both sets, beyond the first 10 per kind logged
        atomic_write_text(
            os.path.join(args.output_dir, "load_report.json"),
            json.dumps(
                {
                    name: d.report.to_dict() if d.report else None
                    for name, d in (("train", train_set), ("evaluation", val_set))
                },
                indent=1,
            ),
        )
    start_wall = time.perf_counter()
    with_masks = is_mask_model(args.model)
    model = model_from_args(args, train_set.num_classes, device)
    evaluators = [VOCEvaluator(val_set.classes)]
    if args.coco_ap or (args.coco_ap is None and args.dataset == "coco"):
        evaluators.append(COCOEvaluator(val_set, ("bbox", "segm") if with_masks else ("bbox",)))
    log = RunLog(args.output_dir, enabled=dist.is_main())
    environment = run_environment()
    if dist.is_main():
        logger.info("resolved config written to %s", save_resolved(args, args.output_dir, environment))
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
    run = Run(args, model, trainer, train_set, environment)
    if args.strategy == "none":
        run.train_records = list(train_set.records)
    else:
        initial = labelled_indices(train_set, DataOptions.of(vars(args))) or initial_pool(
            len(train_set), args.initial, args.seed
        )
        run.asm = ASMState.start(
            args.strategy,
            args.K,
            train_set.records,
            initial,
            args.seed,
            args.cer_ratio,
            args.uncer_ratio,
            args.max_passes,
            args.round_train,
        )
        run.train_records = [train_set.records[i] for i in initial]
    run.initial_boxes = sum(len(r) for r in run.train_records) if run.asm else 0
    if checkpoint is not None:
        try:
            run.load_state(checkpoint, args.resume)
        except CheckpointError as e:
            logger.error("%s", e)
            return 2
        logger.info("resumed %s: %s epoch %d", args.resume, run.phase.name, run.phase.epoch)
    try:
        if run.awaiting:  # a round paused for a labelling tool
            resume_labelled(run, train_set)
        plan_rounds(run, run.phase.index)
        stopped = "the supervised baseline finished"
        metrics = run.train_phase()  # the initial phase, or the round a resumed run was in
        if run.asm is None:  # the supervised point of a learning curve
            log.jsonl(
                {
                    "type": "round",
                    "round": 0,
                    "labelled_images": len(run.train_records),
                    "human_drawn_total": sum(len(r) for r in run.train_records),
                    **ap_summary(metrics),
                }
            )
        while run.asm is not None:
            if run.phase.index > 0:  # a round's training just finished
                run.asm.rounds[-1].update(ap_summary(metrics))
                explain_drop(run, metrics["voc/AP50"])
                human = human_work(run)
                log.jsonl(
                    {
                        "type": "round",
                        **run.asm.rounds[-1],
                        "human_drawn_total": human["drawn"],
                        "human": human,
                        "pool_digests": check_ranks_agree(run.asm),
                    }
                )
                if run.round_stopper.update(run.asm.round, metrics[AP_KEYS[args.ap]]):
                    stopped = (
                        f"AP settled across rounds (shift {run.round_stopper.ap_shift:.4f} < --ap-shift-asm)"
                    )
                    break
            elif not run.asm.rounds:  # the initial phase: the start of the learning curve
                log.jsonl(
                    {
                        "type": "round",
                        "round": 0,
                        "labelled_images": len(run.asm.labelled),
                        "human_drawn_total": run.initial_boxes,
                        **ap_summary(metrics),
                    }
                )
            if run.asm.exhausted():
                stopped = "the unlabelled pool is exhausted"
                break
            if args.max_rounds is not None and run.asm.round >= args.max_rounds:
                stopped = f"--max-rounds {args.max_rounds} reached"
                break
            plan_rounds(run)
            start_round(run, train_set, device)
            metrics = run.train_phase()
    except Interrupted as e:
        logger.warning("%s; continue with: %s", e, continue_command(args, argv))
        return 3
    except Stopped as e:
        if os.path.isfile(last_path(args.output_dir)):
            logger.warning(
                "%s; the last checkpoint is complete. Continue with: %s", e, continue_command(args, argv)
            )
        else:
            logger.warning("%s before the first checkpoint; run the same command again to start over", e)
        return e.exit_code
    except Paused as e:
        logger.warning("%s", next_steps(e, args.output_dir, continue_command(args, argv)))
        return 4
    except LabelsMissing as e:
        logger.error("%s", e)
        return 2
    except Diverged as e:
        logger.error("%s", e)
        return 5
    finally:
        log.close()
    if not dist.is_main():
        return 0
    summary = {
        "strategy": args.strategy,
        "rounds": run.asm.round if run.asm else 0,
        "stopped": stopped,
        "ap50": metrics.get("voc/AP50"),
        "ap75": metrics.get("voc/AP75"),
        "labelled_images": len(run.asm.labelled) if run.asm else len(run.train_records),
    }
    if run.asm is not None:
        print(summary_table(run))
        human = human_work(run)
        summary.update(
            {
                "human_drawn_boxes": human["drawn"],
                "confirmed_boxes": human["confirmed"],
                "deleted_boxes": human["deleted"],
                "moved_boxes": human["moved"],
                "weighted_cost": human["weighted_cost"],
                "human_saved_fraction": human["saved_fraction"],
                "pseudo_label_precision": run.asm.cost.precision,
            }
        )
    else:
        summary["human_drawn_boxes"] = sum(len(r) for r in run.train_records)
    summary.update(
        {
            "epochs": run.epochs_done,
            "weights_sha256": weights_digest(run.model),
            "wall_s": round(time.perf_counter() - start_wall, 1),
        }
    )
    logger.info("finished: %s", stopped)
    print(closing_story(run, summary["ap50"]))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
