"""--eval-from-labels: an evaluation set held out of the human's labels, growing round by round."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.records import Record, RecordSet
from tests.helpers import voc_xml
from tools.engine.early_stop import APShiftStopper
from tools.loop import held_out
from tools.loop.config import parse_with_config
from tools.loop.options import OPTION_PRESETS, check_options
from train_asm_one import get_args_parser, main


def _flat_voc(root, n=24):
    """A flat LabelImg folder (no split files): one bright square per image."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        x, y = (int(v) for v in rng.integers(2, 30, 2))
        pixels = np.full((64, 64, 3), 30, np.uint8)
        pixels[y : y + 25, x : x + 25] = 220
        Image.fromarray(pixels).save(root / f"im{i}.jpg")
        (root / f"im{i}.xml").write_text(voc_xml(f"im{i}.jpg", (64, 64), (("sq", (x, y, x + 25, y + 25)),)))
    return root


def _argv(root, out, *more):
    return [
        "--dataset", "voc", "--voc-roots", str(root), "--discover-classes", "--initial", "8", "--K", "8",
        "--epochs", "1", "--round-epochs", "1", "--max-rounds", "2", "--min-size", "64", "--batch-size", "4",
        "--output-dir", str(out), "--cache-dir", str(out) + "_cache", *more,
    ]  # fmt: skip


@pytest.mark.slow  # trains: left out of the mutation runs
def test_a_flat_folder_evaluates_on_a_growing_held_out_share_that_never_trains(tmp_path, monkeypatch):
    import tools.engine.fit as fit

    trained = set()
    real = fit.phase_loader
    monkeypatch.setattr(
        fit,
        "phase_loader",
        lambda t, phase, records: trained.update(r.image_id for r in records) or real(t, phase, records),
    )
    root = _flat_voc(tmp_path / "data")
    out = tmp_path / "run"
    assert main(_argv(root, out, "--eval-from-labels", "0.25")) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    rounds = [r for r in records if r["type"] == "round"]
    # 8 initial images: 2 held out; each round's 8 new ones bring the labelled to 16 and 24: 4, then 6
    assert [r["eval_images"] for r in rounds] == [2, 4, 6]
    assert all(
        len(r["ap50_ci95"]) == 2 and r["ap50_ci95"][0] <= r["AP50"] <= r["ap50_ci95"][1] for r in rounds
    )
    assert [r["held_out"] for r in rounds[1:]] == [2, 2]
    assert rounds[2]["ap_previous_on_set"] is not None  # round 1's model on round 2's set
    state = torch.load(out / "last.pth", weights_only=False)
    from asm.pools import ASMState

    asm = ASMState.from_state(state["asm"])
    assert len(asm.held_out) == 6 and not set(asm.held_out) & trained  # never in a training loader
    assert not set(asm.held_out) & set(asm.labelled)  # nor in the label pool
    assert rounds[-1]["human"]["drawn"] == 24  # the held-out images' boxes were drawn by the human too


def _args(*argv):
    return parse_with_config(get_args_parser(), list(argv), OPTION_PRESETS)


@pytest.mark.parametrize("value", ["0", "0.6", "-0.1"])
def test_a_fraction_outside_its_range_is_one_line(value):
    with pytest.raises(ValueError, match=r"--eval-from-labels must be"):
        check_options(_args("--eval-from-labels", value))


def _sets(tmp_path, n=10):
    records = [Record(f"i{k}", f"i{k}.jpg", 20, 20, [[1, 1, 9, 9]], [1]) for k in range(n)]
    train = RecordSet(records[: n - 2], ("a",), str(tmp_path))
    return train, RecordSet(records[n - 2 :], ("a",), str(tmp_path))


def test_the_pool_too_small_to_hold_out_one_image_is_one_line(tmp_path):
    args = _args(
        "--dataset", "voc", "--eval-from-labels", "0.25", "--initial", "3", "--output-dir", str(tmp_path)
    )
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "val.txt").write_text("i8\ni9\n")  # the split was drawn by seed
    with pytest.raises(
        ValueError, match=r"of an initial pool of 3 images holds out none: give --initial of at least 4"
    ):
        held_out.settle(args, *_sets(tmp_path))


def test_a_split_of_the_datas_own_wins_and_the_option_says_so(tmp_path):
    args = _args(
        "--dataset", "voc", "--eval-from-labels", "0.25", "--initial", "4", "--output-dir", str(tmp_path)
    )
    with pytest.raises(ValueError, match=r"the data has an evaluation split of its own .* which wins"):
        held_out.settle(args, *_sets(tmp_path))
    # the labelling-tool loop takes it by default only where the data has no split
    args = _args("--dataset", "voc", "--oracle", "none", "--initial", "4", "--output-dir", str(tmp_path))
    train, val = held_out.settle(args, *_sets(tmp_path))
    assert args.eval_from_labels is None and len(val) == 2
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "val.txt").write_text("i8\ni9\n")
    pool, first = held_out.settle(args, *_sets(tmp_path))
    assert args.eval_from_labels == 0.25 and len(pool) == 10 and len(first) == 1  # 0.25 of 4 initial images


def test_resuming_with_another_fraction_is_refused_in_one_line():
    from tools.loop.resume import ResumeError, reconcile

    with pytest.raises(ResumeError, match=r"--eval-from-labels 0.3 \(the run's: 0.25\)"):
        reconcile({"eval_from_labels": 0.3}, {"eval_from_labels": 0.25})


def test_a_round_holds_out_the_share_of_its_new_images_that_keeps_the_fraction(tmp_path):
    from asm.pools import ASMState

    records = [Record(f"i{k}", f"i{k}.jpg", 20, 20, [[1, 1, 9, 9]], [1]) for k in range(20)]
    asm = ASMState.start("v1+", 4, records, list(range(8)), seed=0)
    asm.hold_out(["i0", "i1"])  # 0.25 of the initial 8
    for k in range(8, 12):  # the round's four images join the pool
        asm.unlabelled.remove(f"i{k}")
        asm.labelled[f"i{k}"] = records[k]
    results = [SimpleNamespace(sa=records[k]) for k in range(8, 12)]
    run = SimpleNamespace(
        args=SimpleNamespace(eval_from_labels=0.25, seed=0),
        asm=asm,
        train_records=list(asm.labelled.values()),
    )
    ids = held_out.hold_out_round(run, results)
    assert len(ids) == 1 and ids[0] in {"i8", "i9", "i10", "i11"}  # 12 labelled: 3 held out in all
    assert set(asm.held_out) == {"i0", "i1", *ids} and not set(ids) & {r.image_id for r in run.train_records}
    assert asm.fates[ids[0]].startswith("held out for evaluation")
    asm.check()


class _Fixed(torch.nn.Module):
    """A detector whose one box per image is right on the images whose name ends in an even digit."""

    def forward(self, images):
        return [
            {
                "boxes": torch.tensor([[1.0, 1, 9, 9]]),
                "labels": torch.tensor([1]),
                "scores": torch.tensor([0.9]),
            }
            for _ in images
        ]


def test_the_previous_model_is_evaluated_again_on_the_grown_set_for_the_round_stop(tmp_path):
    """Round 1 ended at AP 0.2 on the old set; on the grown set the same model scores 1.0 (its box is
    right on every image): the stop's last figure is that one, measured on the set the next round is."""
    from datasets.loaders import eval_loader

    records = [Record(f"i{k}", f"i{k}.png", 12, 12, [[1, 1, 9, 9]], [1]) for k in range(3)]
    for r in records:
        Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / r.file_name)
    stopper = APShiftStopper(ap_range=2)
    stopper.update(1, 0.2)
    run = SimpleNamespace(
        args=SimpleNamespace(ap="ap_50"),
        classes=["a"],
        round_stopper=stopper,
        trainer=SimpleNamespace(
            model=_Fixed(), val_loader=eval_loader(records, str(tmp_path), 2, 0), device=torch.device("cpu")
        ),
    )
    assert held_out.compare_on_grown_set(run) == pytest.approx(1.0)
    assert stopper.history == [(1, pytest.approx(1.0))]
    assert (
        stopper.update(2, 1.0) is False or stopper.ap_shift == 0.0
    )  # the same model, the same set: no shift
    assert stopper.ap_shift == 0.0
    run.round_stopper = APShiftStopper(ap_range=2)  # before the first round has finished: nothing to compare
    assert held_out.compare_on_grown_set(run) is None


def test_the_interval_reaches_tensorboard_the_round_table_and_the_closing_lines(tmp_path):
    from tools.engine.fit import ap50_bounds, log_record
    from tools.loop.report import round_lines

    metrics = {
        "voc/AP50": 0.5,
        "voc/AP50_ci95_lo": 0.31234,
        "voc/AP50_ci95_hi": 0.70001,
        "voc/eval_images": 12.0,
    }
    assert ap50_bounds(metrics) == {"ap50_ci95": [0.3123, 0.7], "eval_images": 12}
    assert (
        ap50_bounds({"voc/AP50_ci95_lo": float("nan"), "voc/AP50_ci95_hi": float("nan")})["ap50_ci95"] is None
    )

    class Log:
        def __init__(self):
            self.scalars_seen, self.records = {}, []

        def scalars(self, values, step):
            self.scalars_seen.update(values)

        def jsonl(self, record):
            self.records.append(record)

    log = Log()
    record = {
        "type": "epoch",
        "losses": {"loss": 1.0},
        "rollbacks": 0,
        "AP50": 0.5,
        "AP75": 0.1,
        "ap_shift": None,
    }
    log_record(log, {**record, **ap50_bounds(metrics)}, 3)
    assert (
        log.scalars_seen["Accuracy/AP_50_ci95_lo"] == 0.3123
        and log.scalars_seen["Accuracy/AP_50_ci95_hi"] == 0.7
    )
    (line,) = round_lines(
        [{"round": 1, "confirmed": 3, "drawn": 5, "AP50": 0.5, "ap50_ci95": [0.3123, 0.7], "eval_images": 12}]
    )
    assert "AP50 0.500 (95% CI [0.312, 0.700] on 12 images)" in line


@pytest.mark.slow  # trains: left out of the mutation runs
def test_the_labelling_tool_loop_holds_out_a_share_of_the_imported_labels_by_default(tmp_path):
    """--oracle none on a folder with no split: 0.25 of the labels by default; the round paused for a
    human holds out a share of what was imported when it resumes."""
    from import_labels import main as import_main
    from tools.engine.checkpoint import load_checkpoint

    root = _flat_voc(tmp_path / "data")
    out = tmp_path / "run"
    argv = _argv(root, out, "--oracle", "none", "--max-rounds", "1")
    assert main(argv) == 4  # paused at round 1
    folder = out / "labelling" / "round1"
    assert import_main(["--run", str(out), "--labels", str(folder / "cvat_annotations.xml")]) == 0
    assert main([*argv, "--resume", str(out / "last.pth")]) == 0
    ckpt = load_checkpoint(str(out / "last.pth"))
    assert ckpt["config"]["eval_from_labels"] == 0.25
    rounds = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"type": "round"' in x]
    assert [r["eval_images"] for r in rounds] == [2, 4] and rounds[-1]["held_out"] == 2
