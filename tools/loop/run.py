"""The run's state in one object: model, phase training, ASM pools, what the current phase trains on.
It saves itself (``last.pth`` after every epoch, ``best.pth`` on a new best AP: :meth:`Run.save`, the
one place a training checkpoint is written) and loads itself (:meth:`Run.load_state`).
"""

from __future__ import annotations

import logging

import torch

from asm.policy import RoundPolicy
from asm.pools import ASMState
from datasets.records import record_from_dict, record_to_dict
from tools.engine.checkpoint import (
    CheckpointError,
    RunState,
    best_path,
    last_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
)
from tools.engine.evaluator import AP_KEYS
from tools.engine.fit import Phase, PhaseTraining, log_record
from tools.loop.options import ap_stopper, round_policy, training_seed
from tools.loop.round_cache import RoundCache
from tools.runtime import dist
from tools.runtime.stop import STOP, Interrupted

logger = logging.getLogger(__name__)


class Run:
    """The mutable state of a run that a checkpoint holds (:meth:`state`: a :class:`~tools.engine.checkpoint.RunState`)."""

    def __init__(self, args, model, trainer, train_set, environment: dict):
        self.args, self.model, self.trainer = args, model, trainer
        self.classes = list(train_set.classes)
        self.label_to_cat_id = {str(k): v for k, v in train_set.label_to_cat_id.items()}
        self.environment = environment  # git revision, CPU, threads: read once per process
        self.policy: RoundPolicy = round_policy(args)  # what decides a round, built once from the options
        self.rules = self.policy.rules  # the merge rules; a round may gate or calibrate them (round_rules)
        self.asm: ASMState | None = None
        self.train_records: list = []  # what the current phase trains on
        self.awaiting: str | None = None  # labelling folder of a round paused for a human (--oracle none)
        self.epochs_done = 0
        self.best_ap = -1.0
        self.initial_boxes = 0  # boxes of the initial label pool, all drawn by the human
        self.round_stopper = ap_stopper(args, args.ap_shift_asm)
        # rounds other runs trained
        self.round_cache = RoundCache(args.round_cache) if args.round_cache else None
        first = Phase("supervised" if self.policy.strategy == "none" else "pretrain", 0, args.epochs)
        self.new_phase(first, args.ap_shift_pretrain)

    @property
    def phase(self) -> Phase:
        return self.training.phase

    def new_phase(self, phase: Phase, threshold: float) -> None:
        """Start ``phase``: a new optimizer, LR schedule and AP-shift stopper (``threshold``)."""
        self.training = PhaseTraining(self.trainer, phase, ap_stopper(self.args, threshold))

    def state(self) -> RunState:
        scaler, training = self.trainer.scaler, self.training.state_dict()
        return RunState(
            model=unwrap(self.model).state_dict(),
            optimizer=training["optimizer"],
            lr_scheduler=training["scheduler"],
            early_stop=training["stopper"],
            scaler=scaler.state_dict() if scaler else None,
            phase=self.phase.state_dict(),
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
            log_lines=self.trainer.log.lines,
        )

    def load_state(self, state: RunState, path: str = "checkpoint") -> None:
        """Restore everything :meth:`state` saved.

        Raises:
            CheckpointError: the checkpoint is of another dataset (classes), model or optimizer setup.
        """
        self._check_compatible(state, path)
        self._load_model(state.model, path)
        self.new_phase(Phase.from_state(state.phase), 0.0)
        try:
            self.training.load_state_dict(
                {
                    "optimizer": state.optimizer,
                    "scheduler": state.lr_scheduler,
                    "stopper": state.early_stop,
                }
            )
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"{path}: its optimizer state does not fit --opt {self.args.opt} with these trainable layers ({e})"
            ) from e
        if self.trainer.scaler is not None and state.scaler:
            self.trainer.scaler.load_state_dict(state.scaler)
        self.round_stopper.load_state_dict(state.round_stop)
        self.epochs_done, self.best_ap = state.epochs_done, state.best_ap
        self.asm = ASMState.from_state(state.asm) if state.asm else None
        if (
            self.asm is not None
        ):  # the options' values: new ones where the first round begins (tools.loop.resume)
            a = self.args
            self.asm.set_rules(a.strategy, a.K, a.cer_ratio, a.uncer_ratio, a.max_passes, a.round_train)
        self.train_records = [record_from_dict(r) for r in state.train_records]
        self.awaiting = state.awaiting
        if state.log_lines is not None and self.trainer.log.truncate(state.log_lines):
            logger.info(
                "log.jsonl: dropped the records written after %s was saved (they are written again)", path
            )
        set_rng_state(state.rng)  # rank 0's: a single process resumes exactly
        if dist.rank() > 0:  # the other ranks keep augmentations of their own
            torch.manual_seed(training_seed(self.args) + dist.rank() + 1000 * self.epochs_done)

    def _check_compatible(self, state: RunState, path: str) -> None:
        made_with = state.config.get("strategy", self.args.strategy)
        if (made_with == "none") != (self.args.strategy == "none"):  # a supervised checkpoint runs no round
            raise CheckpointError(
                f"{path}: made with --strategy {made_with}, this command says --strategy "
                f"{self.args.strategy}; resume with --strategy {made_with}, or start a new run from "
                f"its model with --weights {path}"
            )
        if state.classes is not None and list(state.classes) != self.classes:
            raise CheckpointError(
                f"{path}: made for the classes {state.classes}, this run has {self.classes}"
            )

    def _load_model(self, weights: dict, path: str) -> None:
        try:
            unwrap(self.model).load_state_dict(weights)
        except RuntimeError as e:
            lines = str(e).splitlines()
            detail = next((s.strip() for s in lines if "size mismatch" in s or "Missing" in s), lines[0])
            raise CheckpointError(
                f"{path}: made for another model or class count than --model {self.args.model} ({detail[:200]})"
            ) from e

    def save(self, earlier_best: tuple[dict, float] | None = None) -> None:
        """Checkpoint: ``last.pth`` (everything a resume needs), and on a new best AP of an evaluated
        epoch ``best.pth`` (the model alone: :meth:`RunState.model_dict`). ``earlier_best``: the
        weights and AP of an epoch before the last that beat the best so far (a round loaded from
        the cache, :meth:`restore_round`); they become ``best.pth``."""
        out = self.args.output_dir
        if earlier_best is not None:
            self.best_ap = earlier_best[1]
        state = self.state()
        with STOP.deferred():  # Ctrl-C or SIGTERM: after the write, not in the middle of it
            save_checkpoint(last_path(out), state.to_dict())
            if earlier_best is not None:
                state.model = earlier_best[0]
                save_checkpoint(best_path(out), state.model_dict())
            elif self.phase.history and self.phase.history[-1].get("evaluated", True):
                ap = self.phase.history[-1]["metrics"][AP_KEYS[self.args.ap]]
                if ap > self.best_ap:
                    self.best_ap = state.best_ap = ap
                    save_checkpoint(best_path(out), state.model_dict())

    def restore_round(self, stored: dict, best: tuple[int, float] | None) -> None:
        """A round another run trained (:mod:`tools.loop.round_cache`), as if this run had: its end
        state (model, phase, optimizer, schedule, stopper, AMP scaler, RNG, last losses), its
        ``log.jsonl`` records, and the checkpoints; ``best``: its best epoch when that came before
        its last (``stored["best_model"]`` holds its weights)."""
        unwrap(self.model).load_state_dict(stored["model"])
        self.training.load_state_dict(stored["training"])
        for name, value in stored["phase"].items():
            setattr(self.phase, name, value)
        self.trainer.last_losses = stored["last_losses"]
        if self.trainer.scaler is not None and stored["scaler"]:  # as a resume restores it (load_state)
            self.trainer.scaler.load_state_dict(stored["scaler"])
        for entry in stored["log"]:
            self.epochs_done += entry.get("type") == "epoch"
            log_record(self.trainer.log, entry, self.epochs_done)
        self.trainer.log.jsonl({"type": "reused", "phase": self.phase.name, "source": stored["source"]})
        set_rng_state(stored["rng"])
        self.save((stored["best_model"], best[1]) if best is not None else None)

    def train_phase(self) -> dict:
        """Train the current phase from its next epoch to its end (last epoch, or AP settled),
        with a checkpoint after every epoch, or, for a round that another run of ``--round-cache`` trained,
        its stored end. Returns the last evaluation's metrics."""
        started = self.round_cache.begin(self) if self.round_cache else None
        if started and self.round_cache.load(self, started):
            return self.phase.history[-1]["metrics"]
        metrics = self.training.train(self.train_records, lambda: self.epochs_done + 1, self._after_epoch)
        if started and self.phase.finished:
            self.round_cache.store(self, started)
        return metrics

    def _after_epoch(self) -> None:
        self.epochs_done += 1
        self.save()
        exit_after = self.args.exit_after_epochs
        if exit_after is not None and self.epochs_done >= exit_after:
            raise Interrupted(f"stopped after {self.epochs_done} epochs (--exit-after-epochs)")
