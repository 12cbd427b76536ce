"""What decides a round, gathered once: which images (strategy, K, candidates), which model boxes count
as certain (the certainty rules), and whether the model may offer any (the mining gate).

The run loop builds one :class:`RoundPolicy` from the options (``tools.loop.options.round_policy``);
rounds, resume, the round cache and the report read it. A certainty rule is one frozen class here
and its option. Each screens the round's detections (``screen``) and may ask the round what it
needs through a :class:`RoundView` (the run loop's answer to it: the model's outcomes on the
validation set, its detections on the mirrored images); the round calls every rule the same way
(:meth:`RoundPolicy.screen`), so a new rule needs no change to the loop.
:class:`FixedThreshold` always applies (``--certain-thre``);
:class:`CalibratedPrecision` replaces it per class with the score whose precision on the validation
set is certified (``--certain-precision``, :func:`asm.select.class_thresholds`);
:class:`MirrorAgreement` demotes a certain box that the mirrored image does not draw again
(``--certain-agreement``, :func:`asm.select.require_agreement`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from asm.merge import ASMConfig
from asm.select import calibrate_scores, class_thresholds, require_agreement

Screened = tuple[list[dict], dict]  # the detections after a rule, and what to log about it


class RoundView(Protocol):
    """What a certainty rule may ask of the round it screens (``tools.loop.rounds`` answers)."""

    classes: Sequence[str]  # the dataset's classes; label ``c`` is ``classes[c - 1]``

    def validation_outcomes(self, cfg: ASMConfig) -> dict[str, list]:
        """The current model's boxes on the validation set (``labels``, ``scores``, ``tp``)."""
        ...

    def mirrored(self) -> list[dict]:
        """The current model's detections on the round's images mirrored (in unmirrored coordinates)."""
        ...


@dataclass(frozen=True)
class FixedThreshold:
    """Certain: a score at or above ``threshold``, the same for every class (ASM_core's rule)."""

    threshold: float
    demotes: ClassVar[bool] = False  # it may move a score to another scale (True: only lowers some)

    def screen(self, dets: Sequence[dict], view: RoundView, cfg: ASMConfig) -> Screened:
        """Nothing to do: the merge compares each score with ``cfg.certain_thre``, this threshold."""
        return list(dets), {}


@dataclass(frozen=True)
class CalibratedPrecision:
    """Certain: a score at or above its class's calibrated threshold, whose precision's lower bound
    on the validation set reaches ``precision``."""

    precision: float

    def __post_init__(self) -> None:
        if not self.precision < 1:
            raise ValueError(
                "--certain-precision must be below 1.0 (a lower bound on a precision never reaches 1), "
                f"got {self.precision}"
            )

    demotes: ClassVar[bool] = False

    def screen(self, dets: Sequence[dict], view: RoundView, cfg: ASMConfig) -> Screened:
        """Scores rescaled so that each class's calibrated threshold lands on ``certain_thre``
        (:func:`asm.select.calibrate_scores`); nothing is calibrated while no box may be certain."""
        if not cfg.enable_sl:
            return list(dets), {}
        outcomes = view.validation_outcomes(cfg)
        found = class_thresholds(outcomes, len(view.classes), self.precision, cfg.uncertain_thre)
        info = {"thresholds": {view.classes[c - 1]: round(t, 4) for c, t in found.items()}}
        return (calibrate_scores(dets, found, cfg) if found else list(dets)), info


@dataclass(frozen=True)
class MirrorAgreement:
    """Certain only if the horizontally mirrored image gives a box of the same class at IoU >= ``iou``."""

    iou: float
    demotes: ClassVar[bool] = True

    def screen(self, dets: Sequence[dict], view: RoundView, cfg: ASMConfig) -> Screened:
        """Each certain box the mirrored view does not draw again made uncertain
        (:func:`asm.select.require_agreement`); ``disagreed`` counts them."""
        shown, demoted = require_agreement(dets, view.mirrored(), self.iou, cfg)
        return shown, {"disagreed": demoted}


CertaintyRule = FixedThreshold | CalibratedPrecision | MirrorAgreement


@dataclass(frozen=True)
class RoundPolicy:
    """Everything that decides a round besides the model (see the module's doc)."""

    strategy: str
    K: int
    rules: ASMConfig  # the merge rules (their certain_thre is FixedThreshold's)
    certainty: tuple[CertaintyRule, ...] = ()
    mining_gate: float = 0.0  # below this AP50 the model offers the human no box
    candidates: int = 1  # images detected per image taken (the most informative are taken)
    diversity: float = 0.5  # weight of the class-mix term among candidates

    def screen(
        self, dets: Sequence[dict], view: RoundView, cfg: ASMConfig
    ) -> tuple[list[dict], list[dict], dict]:
        """The round's detections through every certainty rule, in order: those that rescale
        first, then those that only demote. Returns the detections shown (merged, pre-annotated),
        those scored (on ``certain_thre``'s scale, before any demotion: the round's best score is
        read there) and what the rules log."""
        shown, info = list(dets), {}
        ordered = [r for r in self.certainty if not r.demotes] + [r for r in self.certainty if r.demotes]
        scored = shown
        for rule in ordered:
            shown, said = rule.screen(shown, view, cfg)
            info.update(said)
            if not rule.demotes:
                scored = shown
        return shown, scored, info

    def rule(self, kind: type) -> CertaintyRule | None:
        """The certainty rule of ``kind`` in force, or None."""
        return next((r for r in self.certainty if isinstance(r, kind)), None)

    @property
    def calibration(self) -> CalibratedPrecision | None:
        return self.rule(CalibratedPrecision)

    @property
    def agreement(self) -> MirrorAgreement | None:
        return self.rule(MirrorAgreement)

    @property
    def shows_model(self) -> bool:
        """Whether the human sees the model's boxes: random draws every box, supervised runs no round."""
        return self.strategy not in ("random", "none")
