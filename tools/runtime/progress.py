"""A progress line at least every 30 s where no progress bar is seen (a piped or tee'd job log,
``nohup``, CI): phase, round r/R, epoch, images/s, and the ETA of the phase and of the run.

On a terminal the tqdm bars show progress instead and this stays quiet. The loops call
:meth:`Heartbeat.tick`; the epoch loops tell it where the run stands (:meth:`Heartbeat.start_phase`,
:meth:`Heartbeat.set`).
"""

from __future__ import annotations

import logging
import math
import sys
import time

from tools.runtime import dist

logger = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Heartbeat:
    """Rate-limited progress lines; ``enabled`` by default when stderr is not a terminal (rank 0)."""

    def __init__(self, interval: float = 30.0, enabled: bool | None = None) -> None:
        self.interval = interval
        self.enabled = enabled
        self.context: dict = {}
        self.phase_seconds: list[float] = []  # durations of finished phases, for the run's ETA
        self.last = time.monotonic()

    def set(self, **context) -> None:
        """Where the run stands: ``round``/``rounds``, ``phase``, ``epoch``/``epochs``, and the phase's
        ``phase_start`` (``time.monotonic()``) and ``first_epoch`` (after a resume, the epoch it began at)."""
        self.context.update(context)

    def start_phase(self, name: str, epochs: int, first_epoch: int) -> None:
        """A phase of ``epochs`` epochs begins (or resumes) at ``first_epoch``."""
        self.set(phase=name, epochs=epochs, phase_start=time.monotonic(), first_epoch=first_epoch)

    def end_phase(self) -> None:
        """The phase begun by :meth:`start_phase` ended: its duration feeds the run's ETA."""
        self.phase_seconds.append(time.monotonic() - self.context["phase_start"])

    def active(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        return dist.is_main() and not sys.stderr.isatty()

    def tick(self, what: str, step: int, steps: int, images: int, started: float) -> None:
        """Called per batch by a loop that started at ``started`` (``time.monotonic()``) and has done
        ``step`` of ``steps`` batches, ``images`` images so far; logs at most once per interval."""
        now = time.monotonic()
        if now - self.last < self.interval or not self.active():
            return
        self.last = now
        elapsed = max(now - started, 1e-9)
        c = self.context
        parts = []
        if c.get("rounds"):
            parts.append(f"round {c['round']}/{c['rounds']}")
        if c.get("phase"):
            parts.append(f"{c['phase']} epoch {c.get('epoch', 0) + 1}/{c.get('epochs', '?')}")
        parts.append(f"{what} {step}/{steps}")
        parts.append(f"{images / elapsed:.1f} images/s")
        loop_left = elapsed / max(step, 1) * (steps - step)
        parts.append(f"{what} ETA {_duration(loop_left)}")
        if c.get("phase_start") is not None and c.get("epochs") and what == "train":
            # the phase's epochs (training + evaluation) cost about the same: extrapolate this phase so far
            position = c.get("epoch", 0) + step / max(steps, 1)
            done = position - c.get("first_epoch", 0)
            phase_left = (now - c["phase_start"]) / max(done, 1e-9) * (c["epochs"] - position)
            parts.append(f"phase ETA {_duration(phase_left)}")
            if c.get("rounds") and self.phase_seconds:
                per_phase = sum(self.phase_seconds) / len(self.phase_seconds)
                rounds_left = max(c["rounds"] - c["round"], 0)
                parts.append(f"run ETA ~{_duration(phase_left + rounds_left * per_phase)}")
        logger.info("progress: %s", " · ".join(parts))


HEARTBEAT = Heartbeat()


def rounds_planned(unlabelled: int, K: int, max_rounds: int | None) -> int:
    """Rounds an ASM run will take at most: the unlabelled pool in batches of ``K``, capped."""
    rounds = math.ceil(unlabelled / K) if K else 0
    return min(rounds, max_rounds) if max_rounds else rounds
