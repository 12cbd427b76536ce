"""asm.policy.RoundPolicy: built once from the options (tools.loop.options.round_policy)."""

from dataclasses import dataclass

import numpy as np
import pytest

from asm.merge import ASMConfig
from asm.policy import CalibratedPrecision, FixedThreshold, MirrorAgreement, RoundPolicy
from tools.loop.config import parse_with_config
from tools.loop.options import OPTION_PRESETS, round_policy
from train_asm_one import get_args_parser


def _policy(*argv):
    return round_policy(parse_with_config(get_args_parser(), list(argv), OPTION_PRESETS))


def test_the_defaults_are_one_fixed_threshold():
    p = _policy()
    assert p.certainty == (FixedThreshold(0.8),) and p.rules.certain_thre == 0.8
    assert p.calibration is None and p.agreement is None and p.shows_model
    assert (p.strategy, p.K, p.candidates) == ("v1+", 100, 1)


def test_each_certainty_option_adds_its_rule():
    p = _policy("--certain-thre", "0.9", "--certain-precision", "0.85", "--certain-agreement", "0.6")
    assert p.certainty == (FixedThreshold(0.9), CalibratedPrecision(0.85), MirrorAgreement(0.6))
    assert p.calibration.precision == 0.85 and p.agreement.iou == 0.6 and p.rules.certain_thre == 0.9


def test_random_and_supervised_show_the_human_no_model_box():
    assert not _policy("--strategy", "random").shows_model
    assert not _policy("--strategy", "none").shows_model


def test_a_rule_out_of_range_is_one_line_naming_its_option():
    with pytest.raises(ValueError, match=r"--certain-precision must be below 1.0"):
        CalibratedPrecision(1.0)
    with pytest.raises(ValueError, match=r"--uncertain-thre \(0.9\) must not exceed --certain-thre \(0.8\)"):
        _policy("--uncertain-thre", "0.9")


def test_the_policy_is_frozen():
    p = _policy()
    with pytest.raises(AttributeError):
        p.K = 5
    assert isinstance(p, RoundPolicy)


class _View:
    """A round as a rule sees it: outcomes where class 1 is right above 0.7, and a mirrored view
    that draws nothing."""

    classes = ("a", "b")

    def __init__(self):
        self.asked = []

    def validation_outcomes(self, cfg):
        self.asked.append("outcomes")
        return {"labels": [1] * 40, "scores": [0.7] * 40, "tp": [True] * 40}

    def mirrored(self):
        self.asked.append("mirrored")
        return [
            {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32), "labels": np.zeros(0)}
        ]


def _dets():
    box = [[0, 0, 10, 10]]
    return [
        {"boxes": np.array(box, np.float32), "scores": np.array([0.75], np.float32), "labels": np.array([1])}
    ]


@dataclass(frozen=True)
class _Halve:
    """A rule the loop has never heard of: every score halved."""

    demotes = False

    def screen(self, dets, view, cfg):
        return [{**d, "scores": d["scores"] / 2} for d in dets], {"halved": len(dets)}


def test_a_new_rule_is_called_by_the_round_with_no_change_to_the_loop():
    p = RoundPolicy("v1+", K=1, rules=ASMConfig(), certainty=(FixedThreshold(0.8), _Halve()))
    shown, scored, info = p.screen(_dets(), _View(), ASMConfig())
    assert shown[0]["scores"][0] == pytest.approx(0.375) and info == {"halved": 1}
    assert scored is shown


def test_rescaling_rules_run_before_demoting_ones_and_the_best_score_is_read_between():
    """Listed mirror first, calibration second: the calibration still comes first (0.75 on class
    1, certified from 0.7, is raised to certain), then the mirrored view, which draws nothing,
    demotes it to just below certain_thre."""
    cfg = ASMConfig(certain_thre=0.8)
    p = RoundPolicy("v1+", K=1, rules=cfg, certainty=(MirrorAgreement(0.5), CalibratedPrecision(0.85)))
    view = _View()
    shown, scored, info = p.screen(_dets(), view, cfg)
    assert view.asked == ["outcomes", "mirrored"]
    assert scored[0]["scores"][0] >= 0.8 > shown[0]["scores"][0] >= 0.79
    assert info["disagreed"] == 1 and info["thresholds"]["a"] == pytest.approx(0.7)
