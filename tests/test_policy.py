"""asm.policy.RoundPolicy: built once from the options (tools.loop.options.round_policy)."""

import pytest

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
