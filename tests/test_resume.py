"""Resume follows the run's folder and keeps the run's options: one rule, every change listed."""

import logging
import os
import sys

import pytest

from tools.engine.checkpoint import RunState, last_path, load_checkpoint, save_checkpoint
from tools.loop.options import NO_VALIDATE_INTERVAL
from tools.loop.resume import (
    DEFAULT_OUTPUT,
    ResumeError,
    explicit_options,
    reconcile,
    resolve_resume,
    run_folder,
)
from train_asm_one import get_args_parser, main

TINY = [
    "--demo-train",
    "12",
    "--demo-val",
    "4",
    "--min-size",
    "64",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--warmup-iters",
    "1",
    "--epochs",
    "2",
    "--strategy",
    "none",
    "--deterministic",
    "--eval-interval",  # the general default (the demo's own is 2)
    "1",
]


def test_reconcile_keeps_the_runs_options_applies_adjustable_ones_and_refuses_the_rest():
    saved = {
        "K": 100,
        "certain_thre": 0.8,
        "max_rounds": None,
        "lr_steps": [0.7, 0.9],
        "device": "cpu",
        "seed": 1,
    }
    values, applied = reconcile({"max_rounds": 3, "lr_steps": (0.7, 0.9), "device": "cuda"}, saved)
    assert values == {"K": 100, "certain_thre": 0.8, "max_rounds": 3, "lr_steps": [0.7, 0.9], "seed": 1}
    assert applied == ["--max-rounds None -> 3"]  # the device is this process's: not compared
    with pytest.raises(
        ResumeError, match=r"these differ: --K 200 \(the run's: 100\); --certain-thre 0.9 \(the"
    ):
        reconcile({"K": 200, "certain_thre": 0.9, "max_rounds": 3}, saved)


def test_run_folder_follows_the_checkpoint_or_refuses_another_folder(tmp_path):
    ckpt = str(tmp_path / "demo" / "last.pth")
    assert run_folder(ckpt, None) == str(tmp_path / "demo")
    assert run_folder(ckpt, str(tmp_path / "demo")) == str(tmp_path / "demo")
    with pytest.raises(ResumeError, match="is not in --output-dir .*drop --output-dir"):
        run_folder(ckpt, str(tmp_path / "run"))


@pytest.mark.slow
def test_resume_without_a_path_continues_the_output_folder_and_lists_changes(tmp_path, caplog):
    out = str(tmp_path / "run")
    argv = [*TINY, "--cache-dir", str(tmp_path / "c"), "--output-dir", out]
    assert main([*argv, "--exit-after-epochs", "1"]) == 3  # stopped after epoch 1 of 2, as if killed
    with caplog.at_level(logging.ERROR):
        assert main([*argv, "--resume", "--seed", "7"]) == 2
    assert "these differ: --seed 7 (the run's: 0)" in caplog.text
    with caplog.at_level(logging.ERROR):  # a checkpoint of another folder
        assert main([*argv, "--resume", str(tmp_path / "elsewhere" / "last.pth")]) == 2
    assert "is not in --output-dir" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert (
            main(
                [
                    *TINY,
                    "--cache-dir",
                    str(tmp_path / "c"),
                    "--resume",
                    os.path.join(out, "last.pth"),
                    "--eval-interval",
                    "2",
                ]
            )
            == 0
        )  # the folder follows the checkpoint
    assert "applied the new value of --eval-interval 1 -> 2" in caplog.text
    assert load_checkpoint(os.path.join(out, "last.pth"))["epochs_done"] == 2
    assert main([*argv, "--resume", str(tmp_path / "run" / "nope.pth")]) == 2  # no such checkpoint


def test_max_rounds_none_removes_the_limit_on_resume():
    from train_asm_one import get_args_parser

    assert get_args_parser().parse_args(["--max-rounds", "none"]).max_rounds is None
    values, applied = reconcile({"max_rounds": None}, {"max_rounds": 2, "K": 4})
    assert values == {"max_rounds": None, "K": 4} and applied == ["--max-rounds 2 -> None"]


@pytest.mark.slow
def test_no_validate_is_turned_on_and_off_across_resumes(tmp_path, caplog):
    """Round 1 with --no-validate evaluates only its last epoch; resumed with --no-validate false,
    round 2 evaluates every epoch again (the run's --eval-interval 1), and the log says so."""
    from tests.test_asm_run import TINY as ROUNDS
    from tools.runtime.logs import read_jsonl

    out = tmp_path / "nv"
    argv = [*ROUNDS, "--round-epochs", "2", "--cache-dir", str(tmp_path / "c"), "--output-dir", str(out)]
    assert main([*argv, "--max-rounds", "1", "--no-validate"]) == 0
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--resume", "--max-rounds", "2", "--no-validate", "false"]) == 0
    assert "--no-validate True -> False" in caplog.text
    evaluated = [
        (e["phase"], e["epoch"])
        for e in read_jsonl(out / "log.jsonl")
        if e["type"] == "epoch" and e["AP50"] is not None
    ]
    assert [x for x in evaluated if x[0] != "pretrain"] == [("round1", 1), ("round2", 0), ("round2", 1)]


# -- resolve_resume on a checkpoint written here (no training: seconds, and in the mutation runs) --
def _checkpoint(folder, state_fields=None, **config) -> str:
    """A last.pth holding every training key and the options of a run started with no flags, with
    ``config``'s values instead (and ``state_fields``' RunState fields)."""
    saved = vars(get_args_parser().parse_args([])) | {"output_dir": str(folder)} | config
    state = RunState(model={}, epochs_done=3, rng={}, config=saved, **(state_fields or {}))
    path = last_path(str(folder))
    os.makedirs(folder, exist_ok=True)
    save_checkpoint(path, state.to_dict())
    return path


def _resolve(argv):
    args = get_args_parser().parse_args(argv)
    return args, resolve_resume(args, argv, get_args_parser)


def test_without_resume_the_folder_is_settled_and_nothing_is_read(tmp_path):
    args, state = _resolve([])
    assert state is None and args.output_dir == DEFAULT_OUTPUT == "outputs/run"
    args, state = _resolve(["--output-dir", str(tmp_path / "new"), "--auto-resume"])  # nothing to resume yet
    assert state is None and args.resume is None and args.output_dir == str(tmp_path / "new")


def test_resume_paths_auto_resume_and_weights(tmp_path, caplog):
    run = tmp_path / "run"
    path = _checkpoint(run, K=7)
    with caplog.at_level(logging.INFO):
        args, state = _resolve(["--output-dir", str(run), "--auto-resume", "--weights", "w.pth"])
    assert args.resume == path and args.weights is None and state.epochs_done == 3 and args.K == 7
    assert f"--auto-resume: continuing {path} (its model, not --weights)" in caplog.text
    args, _ = _resolve(["--output-dir", str(run), "--resume"])  # no value: the folder's last.pth
    assert args.resume == path and args.output_dir == str(run)
    args, _ = _resolve(["--resume", path])  # the folder follows the checkpoint
    assert args.output_dir == str(run)
    with pytest.raises(ValueError, match="--resume restores the model; do not combine it with --weights"):
        _resolve(["--resume", path, "--weights", "w.pth"])
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nowhere.last.pth \(--resume\)"):
        _resolve(["--resume", str(tmp_path / "nowhere" / "last.pth")])


def test_a_resume_keeps_the_runs_options_and_applies_only_the_adjustable_ones(tmp_path, caplog):
    path = _checkpoint(tmp_path / "run", K=7, max_rounds=2)
    with caplog.at_level(logging.INFO):
        args, _ = _resolve(["--resume", path, "--max-rounds", "5"])
    assert (args.K, args.max_rounds) == (7, 5)
    assert "--resume: applied the new value of --max-rounds 2 -> 5" in caplog.text
    with pytest.raises(ResumeError, match=r"--K 9 \(the run's: 7\)"):
        _resolve(["--resume", path, "--K", "9"])
    args, _ = _resolve(["--resume", path, "--K=7"])  # the same value, written with '=': accepted
    assert args.K == 7


def _phase(epoch, max_epochs=3, index=0, done=False):
    return {"name": "pretrain", "index": index, "max_epochs": max_epochs, "epoch": epoch, "done": done}


FIRST_ROUND = {"phase": _phase(3), "asm": {"round": 0}}  # the first phase finished, no round mined


def test_round_options_change_only_where_the_first_round_begins(tmp_path, caplog):
    """One initial model mined several ways: strategy, certainty and the rounds' training seed may
    change once the first phase has finished and before round 1; the rest stays refused."""
    new = ["--strategy", "random", "--certain-precision", "none", "--train-seed", "1003", "--K", "9"]
    path = _checkpoint(tmp_path / "r0", FIRST_ROUND)
    with caplog.at_level(logging.WARNING):
        args, _ = _resolve(["--resume", path, *new])
    assert (args.strategy, args.certain_precision, args.train_seed, args.K) == ("random", None, 1003, 9)
    assert "applied the new value of --strategy 'v1+' -> 'random'" in caplog.text
    with pytest.raises(
        ResumeError, match=r"--lr 0.5 \(the run's: 0.02\)"
    ):  # the schedule is not a round option
        _resolve(["--resume", path, "--strategy", "random", "--lr", "0.5"])
    with pytest.raises(ResumeError, match=r"--strategy 'none' \(the run's: 'v1\+'\)"):
        _resolve(["--resume", path, "--strategy", "none"])  # no rounds at all: another run
    elsewhere = {
        "mid first phase": {"phase": _phase(2), "asm": {"round": 0}},
        "after round 1": {"phase": _phase(2, 2, index=1), "asm": {"round": 1}},
        "paused for labels": {**FIRST_ROUND, "awaiting": "labelling/round1"},
        "supervised": {"phase": _phase(3)},
    }
    for name, fields in elsewhere.items():
        path = _checkpoint(tmp_path / name.replace(" ", "_"), fields)
        with pytest.raises(ResumeError, match="the round options change only before the first round"):
            _resolve(["--resume", path, *new])
    after = _checkpoint(tmp_path / "after", elsewhere["after round 1"])
    with pytest.raises(ResumeError, match="the round options change only") as hint:  # a hyphenated one
        _resolve(["--resume", after, "--certain-thre", "0.9"])
    with pytest.raises(ResumeError) as no_hint:  # no round option given: no word about them
        _resolve(["--resume", after, "--lr", "0.5"])
    assert "--certain-thre 0.9 (the run's: 0.8)" in str(hint.value) and "round options" not in str(
        no_hint.value
    )
    stopped_early = _checkpoint(tmp_path / "done_early", {"phase": _phase(1, done=True), "asm": {"round": 0}})
    assert _resolve(["--resume", stopped_early, "--strategy", "topk_v2"])[0].strategy == "topk_v2"


def test_auto_scale_lr_is_applied_once_the_checkpoint_holds_the_scaled_rate(tmp_path):
    # started with --lr 0.02 --batch-size 2 --auto-scale-lr: 0.02 x 2 / 16 = 0.0025 saved
    path = _checkpoint(tmp_path / "run", lr=0.0025, batch_size=2, auto_scale_lr=True)
    for argv in (["--auto-scale-lr"], ["--auto-scale-lr", "--lr", "0.02", "--batch-size", "2"]):
        args, _ = _resolve(["--resume", path, *argv])
        assert args.lr == pytest.approx(0.0025) and args.auto_scale_lr is False
    with pytest.raises(ResumeError, match=r"--lr 0.005 \(the run's: 0.0025\)"):  # 0.04 x 2 / 16
        _resolve(["--resume", path, "--auto-scale-lr", "--lr", "0.04", "--batch-size", "2"])


def test_no_validate_off_restores_evaluation_and_an_ignored_interval_is_said(tmp_path, caplog):
    path = _checkpoint(tmp_path / "run", eval_interval=NO_VALIDATE_INTERVAL, no_validate=True)
    args, _ = _resolve(["--resume", path, "--no-validate", "false"])
    assert args.no_validate is False and args.eval_interval == 1  # the default, evaluation back on
    with caplog.at_level(logging.WARNING):
        args, _ = _resolve(["--resume", path, "--eval-interval", "3"])
    assert args.no_validate is True
    assert "--eval-interval has no effect while --no-validate is on (--no-validate false)" in caplog.text


def test_options_a_checkpoint_predates_are_named_with_the_values_taken(tmp_path, caplog):
    path = _checkpoint(tmp_path / "run")
    state = load_checkpoint(path)
    for old in ("smooth_l1_beta", "train_seed"):
        del state["config"][old]
    save_checkpoint(path, state)
    with caplog.at_level(logging.INFO):
        _resolve(["--resume", path])
    line = next(r.getMessage() for r in caplog.records if "predates" in r.getMessage())
    assert line == (
        "--resume: the checkpoint predates --smooth-l1-beta, --train-seed; taking smooth_l1_beta=1.0, "
        "train_seed=None"
    )


def test_explicit_options_reads_both_spellings_and_ignores_values():
    parser = get_args_parser()
    assert explicit_options(parser, ["--K", "5", "--lr=0.1", "5", "--no-validate"]) == [
        "K",
        "lr",
        "no_validate",
    ]


def test_resume_reads_this_process_command_line_and_refuses_another_folder(tmp_path, monkeypatch, caplog):
    path = _checkpoint(tmp_path / "run", K=7)
    monkeypatch.setattr(sys, "argv", ["train_asm_one.py", "--resume", path, "--K", "9"])
    args = get_args_parser().parse_args(sys.argv[1:])
    with pytest.raises(ResumeError, match=r"--K 9 \(the run's: 7\)"):
        resolve_resume(args, None, get_args_parser)  # argv None: sys.argv[1:]
    with pytest.raises(ResumeError, match="is not in --output-dir"):
        _resolve(["--resume", path, "--output-dir", str(tmp_path / "elsewhere")])


def test_an_interval_given_with_validation_back_on_is_kept_and_nothing_is_said(tmp_path, caplog):
    path = _checkpoint(tmp_path / "run", eval_interval=NO_VALIDATE_INTERVAL, no_validate=True)
    with caplog.at_level(logging.WARNING):
        args, _ = _resolve(["--resume", path, "--no-validate", "false", "--eval-interval", "3"])
    assert args.eval_interval == 3 and "has no effect" not in caplog.text
    plain = _checkpoint(tmp_path / "plain", eval_interval=2)  # a run that never had --no-validate
    args, _ = _resolve(["--resume", plain])
    assert args.eval_interval == 2


@pytest.mark.parametrize(
    "a, b, same",
    [
        ([0.5, 0.75], (0.5, 0.75), True),  # a list saved as JSON against the tuple the parser gives
        ([0.5], [0.5, 0.75], False),
        ([0.5, 0.75], [0.5, 0.7], False),
        ("a", ["a"], False),
        (0.1 + 0.2, 0.3, True),  # a float read back from the checkpoint, to 1e-12
        (1.0, 1.0 + 1e-11, False),
        (2e6, 2e6 + 1e-6, True),  # relative to the value's size above 1
        (True, 1, True),  # bools compare as themselves
        (False, 0.0, True),
        (True, 1.5, False),
        (None, 0, False),
    ],
)
def test_an_option_counts_as_unchanged_within_float_rounding_only(a, b, same):
    from tools.loop.resume import _same

    assert _same(a, b) is same
