"""What decides a round, gathered once: which images (strategy, K, candidates), which model boxes count
as certain (the certainty rules), and whether the model may offer any (the mining gate).

The run loop builds one :class:`RoundPolicy` from the options (``tools.loop.options.round_policy``);
rounds, resume, the round cache and the report read it. A certainty rule is one frozen class here
and its option: :class:`FixedThreshold` always applies (``--certain-thre``);
:class:`CalibratedPrecision` replaces it per class with the score whose precision on the validation
set is certified (``--certain-precision``, :func:`asm.select.class_thresholds`);
:class:`MirrorAgreement` demotes a certain box that the mirrored image does not draw again
(``--certain-agreement``, :func:`asm.select.require_agreement`).
"""

from __future__ import annotations

from dataclasses import dataclass

from asm.merge import ASMConfig


@dataclass(frozen=True)
class FixedThreshold:
    """Certain: a score at or above ``threshold``, the same for every class (ASM_core's rule)."""

    threshold: float


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


@dataclass(frozen=True)
class MirrorAgreement:
    """Certain only if the horizontally mirrored image gives a box of the same class at IoU >= ``iou``."""

    iou: float


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
