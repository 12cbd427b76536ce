"""Builders around the engine: optimizer, schedule, loaders, and one epoch of a phase.

A *phase* is one training run on a fixed set of records (the initial pool, one ASM round, or the
whole set for the supervised baseline): epochs of training + evaluation (:func:`run_epoch`) until
AP-shift early stopping or its last epoch. The callers own the epoch loop and checkpoint after
every epoch, so that ``--resume`` continues at the next one.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from datasets.loaders import train_loader
from datasets.records import Record
from datasets.torch_data import (
    mix_seed,
)
from tools.engine.checkpoint import rng_state, set_rng_state, unwrap
from tools.engine.early_stop import APShiftStopper
from tools.engine.epoch import evaluate, train_one_epoch
from tools.engine.evaluator import AP50, AP_KEYS
from tools.runtime import dist
from tools.runtime.progress import HEARTBEAT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    """The training options a phase's epochs use: ``train_asm_one.py``'s flags of the same names,
    whose defaults are these."""

    lr: float = 0.02
    batch_size: int = 8  # training images per batch
    seed: int = 0
    opt: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_steps: tuple[float, ...] = (0.7, 0.9)  # decay points, fractions of a phase
    lr_gamma: float = 0.1
    warmup_iters: int = 100
    clip_grad: float | None = None
    eval_batch_size: int = 1
    workers: int = 0
    ap: str = "ap_50"  # the AP early stopping and best.pth follow (a key of AP_KEYS)
    eval_interval: int = 1  # evaluate every this many epochs (and at a phase's last)


def make_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """SGD or AdamW; on CUDA the fused kernels, whose step a ``GradScaler`` skips on the device (no
    host sync per iteration; :func:`tools.engine.epoch.train_one_epoch`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = bool(params) and all(p.is_cuda for p in params)
    if cfg.opt == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused or None
        )
    if cfg.opt == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    raise ValueError(f"unknown optimizer {cfg.opt!r}; choose 'sgd' or 'adamw'")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: FitConfig, epochs: int):
    """Step decay by ``cfg.lr_gamma`` at the given fractions of the phase's epochs."""
    milestones = sorted({max(1, round(f * epochs)) for f in cfg.lr_steps})
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.lr_gamma)


@dataclass
class Phase:
    """Where one training phase stands; saved in the checkpoint as plain data."""

    name: str  # "pretrain", "round3", "supervised"
    index: int  # 0 for pretrain/supervised, the round number otherwise
    max_epochs: int
    epoch: int = 0  # next epoch to run
    done: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    rollbacks: int = 0  # epochs restarted after a non-finite loss or a loss spike
    # (epoch, state) at the end of the epoch with the phase's lowest mean loss: where a slow climb
    # rolls back to. In memory only: after a resume a climb rolls back one epoch.
    low: tuple[int, tuple] | None = field(default=None, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.done or self.epoch >= self.max_epochs

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.index,
            "max_epochs": self.max_epochs,
            "epoch": self.epoch,
            "done": self.done,
            "history": self.history,
            "rollbacks": self.rollbacks,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Phase:
        return cls(**state)


@dataclass
class FitContext:
    """What every epoch of a run's phases needs besides the phase: the model, the training values,
    the evaluation loader and evaluators, the log, the AMP scaler, and the last epoch's mean losses."""

    model: nn.Module
    config: FitConfig
    device: torch.device
    image_root: str
    val_loader: DataLoader
    evaluators: list
    log: Any
    with_masks: bool = False
    scaler: torch.amp.GradScaler | None = None
    last_losses: dict[str, float] | None = None  # the last epoch's mean losses, across phases (spike bounds)


class Diverged(FloatingPointError):
    """Training stayed non-finite (or spiking) after every allowed rollback."""


class Climbed(FloatingPointError):
    """An epoch's mean loss climbed slowly (:func:`climbing`): the weights went bad epochs ago."""


MAX_ROLLBACKS = 3  # per phase
SPIKE = 20.0  # a loss (or one loss term) above this many times its last epoch's mean counts as divergence


SPIKE_FLOOR = 0.1  # a term's bound is taken from at least this share of the total loss


def spike_bounds(last: dict[str, float] | None) -> dict[str, float]:
    """Per loss term (and ``loss``, the total): :data:`SPIKE` times its mean over the last epoch, or
    times :data:`SPIKE_FLOOR` of the total's mean when the term was smaller (a term near zero, such
    as the box loss of a model that finds few positives yet, may grow many times over and be fine)."""
    last = {k: v for k, v in (last or {}).items() if k != "lr" and math.isfinite(v) and v > 0}
    floor = SPIKE_FLOOR * last.get("loss", 0.0)
    return {k: SPIKE * max(v, floor) for k, v in last.items()}


WARMUP_SHARE = 0.1  # the warm-up takes at most this share of a phase's iterations


def warmup_length(warmup_iters: int, phase_iters: int) -> int:
    """Iterations of a phase's warm-up: ``--warmup-iters``, across epochs, but at most
    :data:`WARMUP_SHARE` of the phase (a 5-iteration epoch no longer cuts it to 4 iterations, and a
    short phase still trains most of its steps at the full rate)."""
    return min(warmup_iters, int(WARMUP_SHARE * phase_iters))


CLIMB_EPOCHS = 2  # a loss that rose over this many consecutive epochs of a phase ...
CLIMB = 1.2  # ... to this many times the phase's lowest epoch loss, and above its first, is diverging slowly


def climbing(history: Sequence[float], loss: float) -> str | None:
    """Why an epoch's mean ``loss``, after the phase's earlier epoch means ``history``, is a slow
    climb (no single step spiking), or None: it rose in each of the last :data:`CLIMB_EPOCHS`
    epochs, stands at :data:`CLIMB` times the phase's lowest or more, and above the phase's first epoch
    (training left the model worse than it started). A detector's loss may rise for a few epochs
    while its RPN starts sending positives to the box head; it stays below where the phase began."""
    if len(history) < CLIMB_EPOCHS or not math.isfinite(loss):
        return None
    recent = [*history[-CLIMB_EPOCHS:], loss]
    if all(b > a for a, b in zip(recent, recent[1:])) and loss >= CLIMB * min(history) and loss > history[0]:
        rise = " -> ".join(f"{v:.3f}" for v in recent)
        return f"the loss climbed over {CLIMB_EPOCHS} epochs ({rise}; the phase's lowest {min(history):.3f})"
    return None


def train_epoch_safely(
    t: FitContext, phase: Phase, loader: DataLoader, optimizer: torch.optim.Optimizer
) -> dict:
    """One epoch of ``phase``; on a non-finite loss, a loss spike or a slow climb (:func:`climbing`),
    roll back and retry at half the LR.

    The model, optimizer and RNG states are copied in memory at the start of the epoch. A bad step
    never reaches the weights (the loss is checked before ``backward``); a bad gradient shows as a
    bad loss on a later step and the epoch restarts from the copy, at half the learning rate for the
    rest of the phase, on the same batches. A slow climb began epochs ago, so its retry starts from
    the weights (and momenta) at the end of the phase's lowest-loss epoch (``phase.low``: one more
    copy while that epoch is not the last). After :data:`MAX_ROLLBACKS` rollbacks in a phase,
    :class:`Diverged` is raised (the last checkpoint on disk stays the last good state).
    """
    epoch = phase.epoch
    # The sampling inside the model (RPN and RoI fg/bg draws) uses the global generator: seeded from
    # the epoch's keys, it cannot depend on what ran before (a detection pass, an evaluation's loader),
    # so the same labels give the same model whatever the strategy that chose them.
    torch.manual_seed(mix_seed(t.config.seed, phase.index, epoch, dist.rank()))
    snapshot = (
        copy.deepcopy(unwrap(t.model).state_dict()),
        copy.deepcopy(optimizer.state_dict()),
        rng_state(),
    )
    losses_so_far = [h["losses"]["loss"] for h in phase.history]
    if losses_so_far and losses_so_far[-1] <= min(losses_so_far):  # the last epoch set a new low
        phase.low = (epoch - 1, snapshot)
    # the last epoch's means: this phase's, or the previous phase's for a round's first epoch
    bounds = spike_bounds(phase.history[-1]["losses"] if phase.history else t.last_losses)
    tries = 0
    while True:
        loader.batch_sampler.set_epoch(epoch)  # the same batches on every try
        try:
            losses = train_one_epoch(
                t.model,
                optimizer,
                loader,
                t.device,
                epoch,
                warmup_iters=warmup_length(t.config.warmup_iters, phase.max_epochs * len(loader)),
                warmup_done=epoch * len(loader),
                scaler=t.scaler,
                clip_grad=t.config.clip_grad,
                desc=phase.name,
                loss_bound=bounds or None,
            )
            climb = climbing(losses_so_far, losses["loss"])
            if climb is None:
                return losses
            raise Climbed(climb)
        except FloatingPointError as e:
            tries += 1
            low = phase.low if isinstance(e, Climbed) else None
            roll_back(t, phase, optimizer, snapshot, tries, e, low)


def roll_back(
    t: FitContext,
    phase: Phase,
    optimizer,
    snapshot: tuple,
    tries: int,
    error: Exception,
    low: tuple[int, tuple] | None = None,
) -> None:
    """Restore the epoch start's ``snapshot`` (model, optimizer, RNG) at ``0.5 ** tries`` of its LR,
    or, given ``low`` (an earlier epoch and its end state), that epoch's model and optimizer states
    at the same LR; raises :class:`Diverged` past :data:`MAX_ROLLBACKS` in the phase."""
    if phase.rollbacks >= MAX_ROLLBACKS:
        raise Diverged(
            f"{phase.name}: training diverged {phase.rollbacks + 1} times ({error}); the last good "
            f"state is the last checkpoint; try a lower --lr or --clip-grad 10"
        ) from error
    phase.rollbacks += 1
    _, start_optim, rng = snapshot
    model_state, optim_state, _ = snapshot if low is None else low[1]
    unwrap(t.model).load_state_dict(model_state)
    optimizer.load_state_dict(copy.deepcopy(optim_state))
    for group, start in zip(optimizer.param_groups, start_optim["param_groups"]):
        group["lr"] = start["lr"] * 0.5**tries  # the epoch start's LR, halved per try (kept for the phase)
    set_rng_state(rng)
    if t.scaler is not None:
        t.scaler.update(t.scaler.get_scale() / 2)
    logger.warning(
        "%s epoch %d: %s; rolled back to %s, learning rate x%.3g (rollback %d of %d)",
        phase.name,
        phase.epoch,
        error,
        "the start of the epoch" if low is None else f"the end of epoch {low[0]} (the phase's lowest loss)",
        0.5**tries,
        phase.rollbacks,
        MAX_ROLLBACKS,
    )


def phase_loader(t: FitContext, phase: Phase, records: Sequence[Record]) -> DataLoader:
    """The training batches of ``phase`` (one loader, and its workers, for all its epochs)."""
    return train_loader(
        records,
        t.image_root,
        t.config.batch_size,
        (t.config.seed, phase.index),
        workers=t.config.workers,
        with_masks=t.with_masks,
        pin_memory=t.device.type == "cuda",
        shard=(dist.world_size(), dist.rank()) if dist.is_distributed() else None,
    )


def run_epoch(
    t: FitContext,
    phase: Phase,
    loader: DataLoader,
    stopper: APShiftStopper,
    optimizer: torch.optim.Optimizer,
    scheduler,
    step: int,
) -> dict[str, float]:
    """Train ``phase``'s next epoch, evaluate when due, and move ``phase`` on.

    Evaluates every ``--eval-interval`` epochs and at the phase's last epoch; the AP-shift
    ``stopper`` sees evaluated epochs only (its window counts evaluations). Updates ``phase``
    (``epoch``, ``done``, ``history``) and logs the epoch (TensorBoard step ``step``, log.jsonl, a line).

    Returns:
        The last evaluation's metrics (this epoch's when it was evaluated).
    """
    metrics: dict[str, float] = phase.history[-1]["metrics"] if phase.history else {}
    epoch = phase.epoch
    HEARTBEAT.set(epoch=epoch)
    start = time.perf_counter()
    losses = train_epoch_safely(t, phase, loader, optimizer)
    t.last_losses = losses
    scheduler.step()
    evaluated = (epoch + 1) % t.config.eval_interval == 0 or epoch + 1 >= phase.max_epochs
    stop = False
    if evaluated:
        metrics = evaluate(t.model, t.val_loader, t.evaluators, t.device)
        stop = stopper.update(epoch, metrics[AP_KEYS[t.config.ap]])
    phase.epoch = epoch + 1
    phase.done = stop or phase.epoch >= phase.max_epochs
    phase.history.append({"epoch": epoch, "metrics": metrics, "losses": losses, "evaluated": evaluated})
    log_epoch(t, phase, stopper, step, len(loader.dataset), round(time.perf_counter() - start, 2), stop)
    return metrics


def log_epoch(
    t: FitContext, phase: Phase, stopper: APShiftStopper, step: int, images: int, seconds: float, stop: bool
) -> None:
    """The epoch just added to ``phase.history``: TensorBoard (step ``step``), log.jsonl and a line."""
    last = phase.history[-1]
    epoch, losses, metrics, evaluated = last["epoch"], last["losses"], last["metrics"], last["evaluated"]
    log_record(
        t.log,
        {
            "type": "epoch",
            "phase": phase.name,
            "epoch": epoch,
            "images": images,
            "losses": losses,
            "AP50": metrics[AP50] if evaluated else None,
            "AP75": metrics["voc/AP75"] if evaluated else None,
            **(ap50_bounds(metrics) if evaluated else {}),
            "ap_shift": stopper.ap_shift,
            "rollbacks": phase.rollbacks,
            "seconds": seconds,
            "stop": stop,
        },
        step,
    )
    shift = "-" if stopper.ap_shift is None else f"{stopper.ap_shift:.4f}"
    accuracy = (
        f"AP50 {metrics[AP50]:.3f} AP75 {metrics['voc/AP75']:.3f} ap_shift {shift}"
        if evaluated
        else "(not evaluated)"
    )
    logger.info(
        "%s epoch %d: loss %.3f %s (%.0fs)%s",
        phase.name,
        epoch,
        losses["loss"],
        accuracy,
        seconds,
        f"; AP settled, best epoch {stopper.best_epoch}" if stop else "",
    )


def ap50_bounds(metrics: dict[str, float]) -> dict[str, Any]:
    """An evaluated epoch's AP50 interval and evaluation images, as log.jsonl writes them
    (``ap50_ci95``: ``[lo, hi]`` or None; ``eval_images``)."""
    bounds = [metrics.get(f"voc/AP50_ci95_{end}") for end in ("lo", "hi")]
    images = metrics.get("voc/eval_images")
    return {
        "ap50_ci95": None
        if any(b is None or math.isnan(b) for b in bounds)
        else [round(b, 4) for b in bounds],
        "eval_images": None if images is None else int(images),
    }


def log_record(log, record: dict[str, Any], step: int) -> None:
    """A record to log.jsonl; an epoch's also to TensorBoard (step ``step``): its losses, and its AP
    when it was evaluated."""
    if record.get("type") == "epoch":
        log.scalars(
            {
                **{f"Train/{k}": v for k, v in record["losses"].items()},
                "Train/rollbacks": record["rollbacks"],
            },
            step,
        )
        if record["AP50"] is not None:
            log.scalars(
                {
                    "Accuracy/AP_50": record["AP50"],
                    "Accuracy/AP_75": record["AP75"],
                    "Accuracy/AP_shift": record["ap_shift"],
                    **{
                        f"Accuracy/AP_50_ci95_{end}": v
                        for end, v in zip(("lo", "hi"), record.get("ap50_ci95") or ())
                    },
                },
                step,
            )
    log.jsonl(record)


class PhaseTraining:
    """One phase's training, the one place an optimizer and schedule are made: they are new for every
    phase (a round restarts the LR schedule, as ASM_core does) or restored from a checkpoint
    (:meth:`load_state_dict`). :meth:`train` runs the epoch loop to the phase's end."""

    def __init__(self, t: FitContext, phase: Phase, stopper: APShiftStopper):
        self.t, self.phase, self.stopper = t, phase, stopper
        self.optimizer = make_optimizer(t.model, t.config)
        self.scheduler = make_scheduler(self.optimizer, t.config, phase.max_epochs)

    def train(
        self,
        records: Sequence[Record],
        step: Callable[[], int],
        after_epoch: Callable[[], None] = lambda: None,
    ) -> dict[str, float]:
        """Train on ``records`` from the phase's next epoch to its end (last epoch, or AP settled);
        ``step()``: the TensorBoard step of the coming epoch; ``after_epoch()``: e.g. a checkpoint.
        Returns the last evaluation's metrics."""
        phase = self.phase
        metrics = phase.history[-1]["metrics"] if phase.history else {}
        loader = phase_loader(self.t, phase, records)
        HEARTBEAT.start_phase(phase.name, phase.max_epochs, phase.epoch)
        while not phase.finished:
            metrics = run_epoch(self.t, phase, loader, self.stopper, self.optimizer, self.scheduler, step())
            after_epoch()
        HEARTBEAT.end_phase()
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "stopper": self.stopper.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises ValueError or KeyError when the optimizer state does not fit the trainable layers."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["stopper"])
