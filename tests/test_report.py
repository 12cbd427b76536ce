"""What the user reads at the end of a run: the per-round lines of the closing story."""

import logging
from types import SimpleNamespace

import pytest

from asm.merge import ASMConfig
from tools.loop import report
from tools.loop.report import initial_record, round_lines


def test_each_round_says_what_the_model_confirmed_what_the_human_drew_and_the_ap50():
    """Round 1: 30 confirmed, 60 drawn, 10 moved: 30 of 100 boxes (30%) not drawn. Round 2: 45, 5, 0:
    90%. A round repeated in the log (a resumed run) counts once, with its last record; round 0 (the
    initial pool) has no line."""
    records = [
        initial_record(100, 400, {"voc/AP50": 0.5, "voc/AP75": 0.25}),
        {"type": "round", "round": 1, "confirmed": 30, "drawn": 70, "moved": 10, "AP50": 0.1},
        {"type": "round", "round": 1, "confirmed": 30, "drawn": 60, "moved": 10, "AP50": 0.7},
        {"type": "round", "round": 2, "confirmed": 45, "drawn": 5, "moved": 0, "AP50": 0.8125},
    ]
    lines = round_lines(records)
    assert lines == [
        "  round 1: the model confirmed 30 boxes, the human drew 60 and moved 10: 30% of the round's 100 "
        "boxes not drawn by hand; AP50 0.700",
        "  round 2: the model confirmed 45 boxes, the human drew 5 and moved 0: 90% of the round's 50 "
        "boxes not drawn by hand; AP50 0.812",
    ]


def test_a_round_without_boxes_says_so():
    assert round_lines([{"type": "round", "round": 1, "confirmed": 0, "drawn": 0, "AP50": None}]) == [
        "  round 1: the model confirmed 0 boxes, the human drew 0 and moved 0: - of the round's 0 boxes "
        "not drawn by hand; AP50 -"
    ]


def test_the_next_commands_follow_the_data_of_the_run():
    from tools.loop.report import next_commands
    from train_asm_one import get_args_parser

    demo = next_commands(get_args_parser().parse_args([]))
    assert "on your own data" in demo[0] and demo[1].startswith("  python train_asm_one.py --dataset voc")
    args = get_args_parser().parse_args(
        ["--dataset", "voc", "--voc-roots", "data/my voc", "--discover-classes"]
    )
    own = next_commands(args)
    flags = "--dataset voc --voc-roots 'data/my voc' --discover-classes"
    assert own[1] == f"  python bench/asm_efficiency.py {flags}"
    assert own[3] == f"  python train_asm_one.py {flags} --oracle none --output-dir runs/labelling"
    assert not any("on your own data" in line for line in own)


CALIBRATED = {"RBC": 1.0, "WBC": 0.97}  # --certain-precision's thresholds: WBC certified, RBC not


@pytest.mark.parametrize(
    "max_score, thresholds, disagreed, says",
    [
        (0.62, None, 0, "best score was 0.620, below --certain-thre 0.8)"),
        (
            0.93,
            None,
            0,
            "best score was 0.930, but every box at or above --certain-thre was contested by an "
            "overlapping box of another class)",
        ),
        (0.93, None, 3, "of another class or not drawn again by the mirrored view (3 boxes))"),
        # --certain-precision: max_score is on the calibrated scale (a class's threshold lands on 0.8)
        (0.62, {"RBC": 1.0, "WBC": 1.0}, 0, "(no certain boxes: --certain-precision certified no class"),
        (
            0.75,
            CALIBRATED,
            0,
            "(no certain boxes: no box reached its class's calibrated threshold (RBC 1.000, WBC 0.970))",
        ),
        (
            0.9,
            CALIBRATED,
            2,
            "(no certain boxes: every box at or above its class's calibrated threshold was contested by an "
            "overlapping box of another class or not drawn again by the mirrored view (2 boxes))",
        ),
    ],
)
def test_a_round_without_certain_boxes_says_why(monkeypatch, caplog, max_score, thresholds, disagreed, says):
    info = {"images": 4, "drawn": 9, "confirmed": 0, "moved": 0, "deleted": 0, "precision": None}
    info |= {"max_score": max_score, "disagreed": disagreed}
    if thresholds is not None:
        info["thresholds"] = thresholds
    run = SimpleNamespace(
        asm=SimpleNamespace(rounds=[info], round=1, labelled={}), rules=ASMConfig(), train_records=[]
    )
    monkeypatch.setattr(report, "human_work", lambda run: {"saved_fraction": 0.0})
    with caplog.at_level(logging.INFO):
        report.log_round(run)
    assert says in caplog.text
