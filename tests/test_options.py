"""tools/loop/options.py: one source of defaults, the option rules, and the values settled per device."""

import dataclasses
import re

import pytest
import torch

from al_curve import get_args_parser as curve_parser
from datasets.build import DataOptions
from net.pisa import PisaConfig
from tools.engine.fit import FitConfig
from tools.loop.options import AT_LEAST_ONE, RANGES, ap_stopper, check_options, fit_config, pick, pisa_config
from tools.loop.setup import settle
from train_asm_one import get_args_parser


def _args(*argv):
    return get_args_parser().parse_args(["--output-dir", "outputs/x", *argv])


def test_the_configs_defaults_are_the_flags_defaults():
    args = _args()
    assert fit_config(settle(args, torch.device("cpu"))) == FitConfig()  # CPU: 0 workers, batches of 1
    assert pisa_config(args) == PisaConfig()
    defaults = DataOptions()
    for f in dataclasses.fields(DataOptions):
        if f.name != "output_dir":
            value = getattr(args, f.name)
            assert (tuple(value) if isinstance(value, list) else value) == getattr(defaults, f.name), f.name


def test_a_config_takes_the_values_of_the_command_line():
    args = _args("--lr", "0.005", "--batch-size", "2", "--opt", "adamw", "--lr-steps", "0.5")
    cfg = fit_config(args)
    assert (cfg.lr, cfg.batch_size, cfg.opt, cfg.lr_steps) == (0.005, 2, "adamw", (0.5,))
    from visualize import get_args_parser as visualize_parser

    with pytest.raises(AttributeError):  # no silent default for an option the parser lacks
        pick(FitConfig, visualize_parser().parse_args([]))


def test_every_rule_names_a_real_option():
    names = set(vars(_args())) | set(vars(curve_parser().parse_args([])))
    assert set(AT_LEAST_ONE) <= names and set(RANGES) <= names


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--K", "0"), "--K must be at least 1, got 0"),
        (("--hlr-num", "0"), "--hlr-num must be at least 1, got 0"),
        (("--lr", "0"), "--lr must be > 0.0, got 0.0"),
        (("--lr", "nan"), "--lr must be a finite number, got nan"),
        (("--momentum", "1.5"), "--momentum must be <= 1.0, got 1.5"),
        (("--judge-iou", "0"), "--judge-iou must be > 0.0"),
        (("--certain-thre", "0.2", "--uncertain-thre", "0.5"), "--uncertain-thre (0.5) must not exceed"),
        (("--cer-ratio", "0.6", "--uncer-ratio", "0.5"), "--cer-ratio (0.6) must be below --uncer-ratio"),
        (("--min-size", "16"), "--min-size must be at least 32 pixels"),
        (("--strategy", "random", "--candidates", "3"), "--candidates needs the model's detections"),
        (("--max-rounds", "-1"), "--max-rounds must be >= 0"),
        (("--lr-steps", "1.5"), "--lr-steps are fractions of a phase in (0, 1]"),
        (("--smooth-l1-beta", "0"), "--smooth-l1-beta must be > 0.0, got 0.0"),
        (("--train-seed", "-3"), "--train-seed must be >= 0, got -3"),
        (("--seed", "-1"), "--seed must be >= 0, got -1"),
    ],
)
def test_bad_values_are_named_in_one_line(argv, message):
    with pytest.raises(ValueError) as e:
        check_options(_args(*argv))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_rules_apply_to_the_options_a_script_has():
    args = curve_parser().parse_args(["--output-dir", "outputs/c"])  # no --K, --strategy, --max-rounds
    assert not hasattr(args, "K")
    check_options(args)
    with pytest.raises(ValueError, match="--lr must be > 0.0"):
        check_options(curve_parser().parse_args(["--lr", "-1"]))
    with pytest.raises(ValueError, match=r"--uncertain-thre \(0.6\) must not exceed --certain-thre \(0.5\)"):
        check_options(curve_parser().parse_args(["--certain-thre", "0.5", "--uncertain-thre", "0.6"]))


def test_settle_returns_a_copy_with_the_device_values():
    args = _args("--no-validate", "--auto-scale-lr", "--lr", "0.02", "--batch-size", "4")
    settled = settle(args, torch.device("cpu"))
    assert (settled.workers, settled.eval_batch_size) == (0, 1)  # CPU: no workers, one image a batch
    assert settled.eval_interval == 1 and fit_config(settled).eval_interval > 10**6  # kept: resumable off
    assert settled.lr == pytest.approx(0.02 * 4 / 16) and settled.auto_scale_lr is False
    assert (args.workers, args.eval_batch_size, args.lr, args.auto_scale_lr) == (None, None, 0.02, True)
    kept = settle(_args("--workers", "2", "--eval-batch-size", "3"), torch.device("cpu"))
    assert (kept.workers, kept.eval_batch_size, kept.eval_interval) == (2, 3, 1)


def test_the_resume_rule_and_the_cache_key_are_derived_from_each_options_facts():
    """The sets each rule reads, as they were written by hand before the facts were declared once."""
    from al_curve import get_args_parser as curve_parser
    from tools.loop import resume, round_cache
    from tools.loop.options import OPTION_FACTS, OptionFacts, options_where
    from train_asm_one import get_args_parser

    dests = {a.dest for p in (get_args_parser(), curve_parser()) for a in p._actions}
    assert set(OPTION_FACTS) <= dests  # each declared name is an option of the entry or al_curve.py
    assert resume.ADJUSTABLE == {"max_rounds", "eval_interval", "no_validate", "review_cost", "move_cost"}
    assert resume.PROCESS == {
        *("device", "workers", "eval_batch_size", "log_level", "exit_after_epochs", "no_cache"),
        *("cache_dir", "round_cache"),
    }
    assert resume.ROUND_OPTIONS == {
        *("strategy", "K", "round_epochs", "round_train", "cer_ratio", "uncer_ratio", "max_passes"),
        *("certain_thre", "uncertain_thre", "judge_iou", "gt_iou", "enable_al", "enable_sl", "move_iou"),
        *("candidates", "diversity", "mining_gate", "certain_precision", "certain_agreement", "oracle"),
        "train_seed",
    }
    assert resume.NOT_COMPARED - resume.PROCESS == {
        *("resume", "auto_resume", "overwrite", "output_dir", "config", "config_file", "cfg_options"),
        *("weights", "asm_core_defaults", "auto_scale_lr", "help"),
    }
    # the round cache's key leaves out what only chooses and labels images, or runs the process
    assert round_cache.SELECTION_ONLY == options_where(trains=False)
    for kept in ("lr", "batch_size", "epochs", "round_epochs", "train_seed", "round_train", "device"):
        assert OPTION_FACTS.get(kept, OptionFacts()).trains
    for left_out in ("strategy", "K", "certain_thre", "review_cost", "output_dir", "round_cache"):
        assert left_out in round_cache.SELECTION_ONLY


def test_a_new_option_is_fixed_and_in_the_cache_key_until_declared_otherwise():
    from tools.loop.options import FIXED, OptionFacts

    facts = OptionFacts()
    assert facts.resume == FIXED and facts.trains and facts.range is None and not facts.at_least_one


def test_the_demo_refuses_the_seed_its_backbone_was_pretrained_on(tmp_path):
    import json as _json

    from net.models import DEMO_BACKBONE, pretraining_seed
    from tools.loop.config import parse_with_config
    from tools.loop.options import OPTION_PRESETS
    from train_asm_one import get_args_parser, main

    with open(DEMO_BACKBONE.replace(".pth", ".json")) as f:
        seed = _json.load(f)["image_seed"]  # 1000: the provenance written when it was trained
    assert pretraining_seed(DEMO_BACKBONE) == seed == 1000

    def parsed(*argv):
        return parse_with_config(
            get_args_parser(), [*argv, "--output-dir", str(tmp_path / "o")], OPTION_PRESETS
        )

    with pytest.raises(
        ValueError, match=r"--data-seed 1000: the demo backbone \(demo_mobilenet_v2.pth\) was pretrained"
    ):
        check_options(parsed("--data-seed", "1000"))
    check_options(parsed("--data-seed", "1001"))  # another seed: fine
    check_options(parsed("--data-seed", "1000", "--weights-backbone", "none"))  # no backbone: fine
    assert main(["--data-seed", "1000", "--output-dir", str(tmp_path / "run")]) == 2  # one line, exit 2
    # a backbone pretrained on seed 0, the demo's default: refused without --data-seed
    (tmp_path / "zero.pth").write_bytes(b"")
    (tmp_path / "zero.json").write_text(_json.dumps({"image_seed": 0}))
    with pytest.raises(ValueError, match=r"--data-seed 0: the demo backbone \(zero.pth\)"):
        check_options(parsed("--weights-backbone", str(tmp_path / "zero.pth")))
    check_options(parsed("--weights-backbone", str(tmp_path / "zero.pth"), "--data-seed", "1"))
    # another dataset: its images are not the demo's, whatever the seed
    check_options(parsed("--dataset", "voc", "--voc-roots", str(tmp_path), "--data-seed", "1000"))


@pytest.mark.parametrize("word", ["1", "true", "Yes", "y", "ON", "0", "False", "no", "N", "off"])
def test_every_spelling_of_a_boolean_option_is_read(word):
    from tools.loop.options import str2bool

    assert str2bool(word) is (word.lower() in ("1", "true", "yes", "y", "on"))


def test_a_word_that_is_no_boolean_is_refused():
    import argparse

    from tools.loop.options import str2bool

    with pytest.raises(argparse.ArgumentTypeError, match="expected a boolean, got 'maybe'"):
        str2bool("maybe")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--min-size", "32"], None),  # each limit itself is allowed ...
        (["--min-size", "31"], "--min-size must be at least 32 pixels, got 31"),  # ... one step past is not
        (["--min-size", "64", "--max-size", "64"], None),
        (["--min-size", "64", "--max-size", "63"], "--max-size"),
        (["--workers", "0"], None),
        (["--workers", "-1"], "--workers must be >= 0, got -1"),
        (["--warmup-iters", "0"], None),
        (["--warmup-iters", "-1"], "--warmup-iters must be >= 0, got -1"),
        (["--lr-steps", "1.0"], None),
        (["--lr-steps", "0.0"], "--lr-steps are fractions of a phase in (0, 1], got [0.0]"),
        (["--lr-steps", "1.01"], "--lr-steps are fractions"),
        (["--ap-range", "2"], None),
        (["--ap-range", "1"], "--ap-range must be at least 2"),
        (["--max-rounds", "0"], None),
        (["--max-rounds", "-1"], "--max-rounds must be >= 0"),
        (
            ["--cer-ratio", "0.3", "--uncer-ratio", "0.3"],
            "--cer-ratio (0.3) must be below --uncer-ratio (0.3)",
        ),
        (["--certain-thre", "0.5", "--uncertain-thre", "0.5"], None),  # equal thresholds: no uncertain band
        (["--certain-thre", "0.5", "--uncertain-thre", "0.51"], "uncertain"),
        (["--strategy", "random", "--candidates", "1"], None),
        (["--strategy", "random", "--candidates", "2"], "--candidates needs the model's detections"),
    ],
)
def test_each_range_at_its_limit_and_one_step_past(argv, message):
    args = _args(*argv)
    if message is None:
        check_options(args)
    else:
        with pytest.raises(
            ValueError, match="^" + re.escape(message) if message.startswith("--") else re.escape(message)
        ):
            check_options(args)


def test_the_merge_rules_take_every_threshold_and_switch_from_the_options():
    from tools.loop.options import asm_config

    args = _args(
        "--certain-thre",
        "0.7",
        "--uncertain-thre",
        "0.2",
        "--enable-al",
        "false",
        "--enable-sl",
        "false",
        "--judge-iou",
        "0.45",
        "--gt-iou",
        "0.75",
        "--move-iou",
        "0.55",
    )
    cfg = asm_config(args)
    assert (cfg.certain_thre, cfg.uncertain_thre, cfg.enable_al, cfg.enable_sl) == (0.7, 0.2, False, False)
    assert (cfg.judge_iou, cfg.gt_iou, cfg.move_iou) == (0.45, 0.75, 0.55)


def test_the_round_policy_takes_the_gate_the_candidates_and_the_diversity():
    from tools.loop.options import round_policy

    policy = round_policy(_args("--mining-gate", "0.35", "--candidates", "3", "--diversity", "0.2"))
    assert (policy.mining_gate, policy.candidates, policy.diversity) == (0.35, 3, 0.2)


def test_the_training_seed_is_train_seed_when_given_else_seed():
    from tools.loop.options import training_seed

    assert training_seed(_args("--seed", "3")) == 3
    assert training_seed(_args("--seed", "3", "--train-seed", "8")) == 8
    assert training_seed(_args("--seed", "3", "--train-seed", "0")) == 0  # 0 is a seed, not "unset"


@pytest.mark.parametrize(
    "value, expected", [("0.5", 0.5), ("1", 1.0), ("1.0", 1.0), ("2", 2.0), ("40", 40.0)]
)
def test_initial_takes_a_fraction_up_to_one_or_a_whole_image_count(value, expected):
    assert _args("--initial", value).initial == expected


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "2.5"])
def test_initial_refuses_nothing_and_a_count_in_pieces(value, capsys):
    with pytest.raises(SystemExit):
        _args("--initial", value)
    assert f"expected a fraction in (0, 1] or an image count, got '{value}'" in capsys.readouterr().err


def test_the_ap_stopper_takes_each_ap_option_in_its_place():
    args = _args(
        "--ap-range",
        "4",
        "--ap-thre",
        "0.3",
        "--ap-shift-squared",
        "--ap-min-rise",
        "0.02",
        "--ap-floor",
        "0.6",
    )
    s = ap_stopper(args, 0.007)
    assert (s.ap_range, s.threshold, s.ap_thre, s.squared, s.min_rise, s.floor) == (
        4,
        0.007,
        0.3,
        True,
        0.02,
        0.6,
    )
