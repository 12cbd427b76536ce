"""AP-shift early stopping, as in ASM_core.

Keep the record of AP (``ap_50`` or ``ap_75``) after each epoch. Once ``ap_range`` values exist,
``ap_shift`` is the mean absolute deviation of the last ``ap_range`` values from their mean (or, with
``squared``, the mean squared deviation). Training stops when ``0 < ap_shift < threshold``, the
latest AP is above ``ap_thre``, and the phase has learned something: its AP has risen by at least
``min_rise`` above the phase's first evaluation, or reached ``floor``. (A model whose AP sits flat
near zero also has a small shift; ASM_core guards against it with ``ap_thre`` 0.5.) The best epoch
inside the window is reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class APShiftStopper:
    """Decide when AP has settled.

    Args:
        ap_range: window length.
        threshold: stop when ``0 < ap_shift < threshold``.
        ap_thre: and the latest AP is above this.
        squared: use the mean squared deviation instead of the mean absolute one.
        min_rise: and the latest AP is at least this much above the first one recorded ...
        floor: ... or at least this.
    """

    def __init__(
        self,
        ap_range: int = 5,
        threshold: float = 0.01,
        ap_thre: float = 0.0,
        squared: bool = False,
        min_rise: float = 0.0,
        floor: float = 0.0,
    ):
        if ap_range < 2:
            raise ValueError(f"ap_range must be at least 2, got {ap_range}")
        self.ap_range = ap_range
        self.threshold = threshold
        self.ap_thre = ap_thre
        self.squared = squared
        self.min_rise, self.floor = min_rise, floor
        self.history: list[tuple[int, float]] = []  # (epoch, ap)
        self.ap_shift: float | None = None

    def update(self, epoch: int, ap: float) -> bool:
        """Record the AP of ``epoch``; return True when training should stop."""
        self.history.append((int(epoch), float(ap)))
        if len(self.history) < self.ap_range:
            self.ap_shift = None
            return False
        window = np.array([a for _, a in self.history[-self.ap_range :]])
        dev = window - window.mean()
        self.ap_shift = float(np.mean(dev**2) if self.squared else np.mean(np.abs(dev)))
        learned = ap >= self.history[0][1] + self.min_rise or ap >= self.floor
        return 0.0 < self.ap_shift < self.threshold and ap > self.ap_thre and learned

    @property
    def best_epoch(self) -> int | None:
        """Epoch with the highest AP in the current window (the earliest on ties)."""
        window = self.history[-self.ap_range :]
        if not window:
            return None
        return max(window, key=lambda e: (e[1], -e[0]))[0]

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": [list(h) for h in self.history],
            "ap_shift": self.ap_shift,
            "ap_range": self.ap_range,
            "threshold": self.threshold,
            "ap_thre": self.ap_thre,
            "squared": self.squared,
            "min_rise": self.min_rise,
            "floor": self.floor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(e), float(a)) for e, a in state["history"]]
        self.ap_shift = state["ap_shift"]
        self.ap_range, self.threshold = int(state["ap_range"]), float(state["threshold"])
        self.ap_thre, self.squared = float(state["ap_thre"]), bool(state["squared"])
        # a checkpoint older than the rule: the values this stopper was built with
        self.min_rise = float(state.get("min_rise", self.min_rise))
        self.floor = float(state.get("floor", self.floor))
