"""Resume follows the run's folder and keeps the run's options: one rule, every change listed."""

import logging
import os

import pytest

from tools.checkpoint import load_checkpoint
from tools.resume import ResumeError, reconcile, run_folder
from train_asm_one import main

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


def test_no_validate_is_turned_on_and_off_across_resumes(tmp_path, caplog):
    """Round 1 with --no-validate evaluates only its last epoch; resumed with --no-validate false,
    round 2 evaluates every epoch again (the run's --eval-interval 1), and the log says so."""
    from tests.test_asm_run import TINY as ROUNDS
    from tools.logs import read_jsonl

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
