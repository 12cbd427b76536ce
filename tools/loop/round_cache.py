"""A round's training, reused when another run trained the same one (``--round-cache DIR``).

Runs that start from one initial model (README, "One initial model, several strategies") often train
a round on the same labels: ``v1+`` picks the same images as ``random`` while it confirms no box, and a
``--deterministic`` round is then the same computation bit for bit. A round's *key* is a digest of
everything its training and evaluation read: the weights it starts from, the records it trains on,
the evaluation records, each image's size and modification time, the last epoch's losses (the spike
bounds), the options (less those that only choose and label images, :data:`SELECTION_ONLY`) and the
environment (a digest of the project's sources that training reads, committed or not; the versions of
torch, torchvision, numpy and Pillow; processor, threads). A round that trained to its end in one go is
stored under its key: its end state (model, phase, optimizer, schedule, stopper, AMP scaler, RNG, last
losses), its ``log.jsonl`` records and, when an
earlier epoch than the last was its best, that epoch's weights. A run that starts a round with a
stored key loads it instead of training, and every figure after it is what training would have given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from typing import Any

from datasets.records import record_to_dict
from tools.engine.checkpoint import (
    CheckpointError,
    best_path,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    unwrap,
    weights_digest,
)
from tools.engine.evaluator import AP_KEYS
from tools.loop.options import options_where
from tools.runtime.process import library_versions, source_digest

logger = logging.getLogger(__name__)

# Options that choose or label the next images, or manage the run's folder and process: the records a
# round trains on already say all they decide. Every other option is part of the key (an option added
# later stays in the key until its declaration says it cannot change a round's training).
SELECTION_ONLY = options_where(trains=False)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _images(image_root: str, records) -> str:
    """A digest of each image's size and modification time: a file replaced under its name changes it."""
    stats = []
    for r in records:
        try:
            st = os.stat(os.path.join(image_root, r.file_name))
            stats.append((r.file_name, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((r.file_name, None, None))
    return _digest(stats)


def round_key(run) -> str:
    """The digest of what the current phase's training and evaluation read (see the module's doc)."""
    t = run.trainer
    val = t.val_loader.dataset
    return _digest(
        {
            "weights": weights_digest(run.model),
            "records": _digest([record_to_dict(r) for r in run.train_records]),
            "images": _images(t.image_root, run.train_records),
            "evaluation": [
                val.image_root,
                _digest([record_to_dict(r) for r in val.records]),
                _images(val.image_root, val.records),
            ],
            "phase": [run.phase.name, run.phase.index, run.phase.max_epochs],
            "fit": dataclasses.asdict(t.config),
            "last_losses": t.last_losses,
            "options": {k: v for k, v in sorted(vars(run.args).items()) if k not in SELECTION_ONLY},
            "environment": {**run.environment, "device": str(t.device)},
            "sources": source_digest(),
            "libraries": library_versions(),
        }
    )


def _earlier_best(run, history: list[dict], best_before: float) -> tuple[int, float] | None:
    """The epoch whose weights ``best.pth`` keeps at the phase's end when it is not the last one: the
    first evaluated epoch with the phase's highest AP, if that AP beats ``best_before`` (the best AP
    before the phase). Its position in ``history`` and its AP; None when ``best.pth`` ends with the last
    epoch's weights or the phase did not change it."""
    key = AP_KEYS[run.args.ap]
    scored = [(i, h["metrics"][key]) for i, h in enumerate(history) if h.get("evaluated", True)]
    if not scored:
        return None
    best = max(scored, key=lambda s: (s[1], -s[0]))
    return best if best[1] > best_before and best[0] != len(history) - 1 else None


# What a stored round holds (RoundCache.store); a file without one of them is trained again.
STORED = ("model", "training", "phase", "last_losses", "scaler", "rng", "log", "best_model", "source")


class RoundCache:
    """The rounds stored in one folder, shared by the runs that name it (files written atomically)."""

    def __init__(self, folder: str):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def path(self, key: str) -> str:
        return os.path.join(self.folder, f"round_{key}.pth")

    def begin(self, run) -> tuple[str, int, float] | None:
        """Before a phase trains: its key, the log's length and the best AP so far, when the phase is a
        round at its first epoch (a round resumed part-way is neither reused nor stored)."""
        if run.phase.index == 0 or run.phase.epoch != 0 or run.phase.history:
            return None
        return round_key(run), run.trainer.log.lines, run.best_ap

    def store(self, run, started: tuple[str, int, float]) -> None:
        """After the phase trained: its end state under its key."""
        key, first_line, best_before = started
        best_weights = None
        if _earlier_best(run, run.phase.history, best_before):  # best.pth holds that epoch's weights
            best_weights = load_checkpoint(best_path(run.args.output_dir))["model"]
        save_checkpoint(
            self.path(key),
            {
                "model": unwrap(run.model).state_dict(),
                "training": run.training.state_dict(),
                "phase": run.phase.state_dict(),
                "last_losses": run.trainer.last_losses,
                "scaler": run.trainer.scaler.state_dict() if run.trainer.scaler else None,
                "rng": rng_state(),
                "log": run.trainer.log.records_since(first_line),
                "best_model": best_weights,
                "source": os.path.abspath(run.args.output_dir),
            },
        )

    def load(self, run, started: tuple[str, int, float]) -> bool:
        """The phase's stored end state, restored in ``run`` as if it had trained (log records, epochs,
        ``last.pth`` and ``best.pth`` included); False when none is stored, or when this run's best
        epoch would be one whose weights were not kept."""
        path = self.path(started[0])
        if not os.path.isfile(path):
            return False
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:  # a torn or foreign file: train instead, and store again
            logger.warning("round cache: %s; training the round", e)
            return False
        missing = [k for k in STORED if k not in state]
        if missing:  # written by an older version: train instead, and store again
            logger.warning("round cache: %s lacks %s; training the round", path, ", ".join(missing))
            return False
        best = _earlier_best(run, state["phase"]["history"], run.best_ap)
        if best is not None and state["best_model"] is None:
            return False
        run.restore_round(state, best)
        logger.info(
            "%s: trained before with the same weights, labels and options (%s); its result is reused",
            run.phase.name,
            state["source"],
        )
        return True
