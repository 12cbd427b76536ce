"""One ASM round (tools.loop.rounds) over a stand-in detector: no training, a second or less each.

The images are flat colours whose value names them (image ``i`` is all ``i / 255``), so the stand-in
answers each with the detections written for it. The expected counts come from the boxes written
here, not from the code under test."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from asm.merge import ASMConfig
from asm.policy import FixedThreshold, MirrorAgreement, RoundPolicy
from asm.pools import ASMState
from datasets.records import Record
from tests.helpers import detection
from tools.loop import rounds
from tools.loop.report import AP50
from tools.runtime.progress import HEARTBEAT

GT = np.array([[2, 2, 20, 20], [24, 24, 38, 38]], np.float32)  # every image: two boxes, classes 1 and 2


class _ByValue(nn.Module):
    """A detector that answers image ``i`` (every pixel ``i / 255``) with ``answers[i]``."""

    def __init__(self, answers):
        super().__init__()
        self.answers, self.calls, self.seen = answers, 0, []

    def forward(self, images):
        self.calls += 1
        out = []
        for im in images:
            i = round(float(im[0, 0, 0]) * 255)
            self.seen.append(i)
            out.append({k: torch.as_tensor(v) for k, v in self.answers[i].items()})
        return out


class _Log:
    enabled, writer, lines = False, None, 0

    def __init__(self):
        self.logged = []

    def scalars(self, values, step):
        self.logged.append((step, values))


class _Run:
    """What start_round and finish_round read of a tools.loop.run.Run, with a stand-in detector."""

    def __init__(
        self,
        root,
        answers,
        strategy="v1+",
        K=2,
        certainty=None,
        gate=0.0,
        ap50=0.5,
        oracle="simulated",
        candidates=1,
    ):
        self.args = SimpleNamespace(
            output_dir=str(root / "out"),
            oracle=oracle,
            eval_batch_size=2,
            workers=0,
            round_epochs=3,
            ap_shift_asm=0.02,
            max_rounds=None,
            review_cost=0.25,
            move_cost=0.5,
        )
        rules = ASMConfig(certain_thre=0.8, uncertain_thre=0.3)
        self.policy = RoundPolicy(
            strategy,
            K,
            rules=rules,
            certainty=certainty or (FixedThreshold(0.8),),
            mining_gate=gate,
            candidates=candidates,
        )
        self.rules = rules
        self.records = [Record(str(i), f"{i}.png", 40, 40, GT, np.array([1, 2])) for i in range(len(answers))]
        for i in range(len(answers)):
            Image.fromarray(np.full((40, 40, 3), i, np.uint8)).save(root / f"{i}.png")
        self.asm = ASMState.start(strategy, K, self.records, initial=[0], seed=0)
        self.phase = SimpleNamespace(history=[{"metrics": {AP50: ap50}, "evaluated": True}])
        self.trainer = SimpleNamespace(log=_Log(), evaluators=[])
        self.classes = ["a", "b"]
        self.model = _ByValue(answers)
        self.train_records, self.awaiting, self.initial_boxes = [], None, 2
        self.phases, self.saves = [], 0

    def new_phase(self, phase, threshold):
        self.phases.append((phase.name, phase.index, phase.max_epochs, threshold))

    def save(self):
        self.saves += 1


def _data(run, root):
    return SimpleNamespace(
        records=run.records,
        image_root=str(root),
        classes=("a", "b"),
        num_classes=2,
        label_to_cat_id={1: 1, 2: 2},
    )


def _exact(score=0.9):
    """Both GT boxes drawn exactly, at ``score``."""
    return detection([score, score], [1, 2], GT)


def test_a_round_confirms_the_certain_boxes_that_match_and_the_human_draws_the_rest(tmp_path):
    # image 1: both boxes certain and right (2 confirmed); image 2: one certain box on class 1's
    # place, class 2's box uncertain (1 confirmed, 1 drawn); image 3: nothing found (2 drawn)
    answers = [_exact(), _exact(0.95), detection([0.9, 0.5], [1, 2], GT), detection([], [], []), _exact()]
    run = _Run(tmp_path, answers, K=3)
    batch = run.asm.next_batch()
    rounds.start_round(run, _data(run, tmp_path), torch.device("cpu"))
    by_id = {i: answers[int(i)] for i in batch}
    confirmed = sum(int((by_id[i]["scores"] >= 0.8).sum()) for i in batch)
    info = run.asm.rounds[-1]
    assert info["confirmed"] == confirmed and info["drawn"] == 2 * len(batch) - confirmed
    assert info["ap50_before"] == 0.5 and info["gated"] is False
    assert info["max_score"] == pytest.approx(
        max(float(by_id[i]["scores"].max(initial=0)) for i in batch), abs=1e-4
    )
    assert sorted(run.model.seen) == sorted(int(i) for i in batch)  # each image of the batch detected once
    assert run.phases == [("round1", 1, 3, 0.02)] and run.saves == 1
    report = json.loads((tmp_path / "out" / "rounds" / "round1.json").read_text())
    assert [im["image_id"] for im in report["images"]] == batch
    assert os.path.isfile(tmp_path / "out" / "rounds" / "round1.png")
    step, scalars = run.trainer.log.logged[-1]
    assert step == 1 and scalars["ASM/round/confirmed"] == confirmed
    assert {r.image_id for r in run.train_records} >= {"0", *batch}  # the pool trains, new images in it


def test_random_detects_nothing_and_the_human_draws_every_box(tmp_path):
    run = _Run(tmp_path, [_exact()] * 4, strategy="random")
    rounds.start_round(run, _data(run, tmp_path), torch.device("cpu"))
    info = run.asm.rounds[-1]
    assert run.model.calls == 0 and info["confirmed"] == 0 and info["drawn"] == 4
    assert "gated" not in info


def test_below_the_mining_gate_no_model_box_is_confirmed(tmp_path):
    run = _Run(tmp_path, [_exact()] * 4, gate=0.6, ap50=0.5)
    rounds.start_round(run, _data(run, tmp_path), torch.device("cpu"))
    info = run.asm.rounds[-1]
    assert info["gated"] is True and info["confirmed"] == 0 and info["drawn"] == 4
    assert run.model.calls >= 1  # the model still detects (the human's sheet shows its boxes)


def test_a_mirrored_view_that_draws_nothing_demotes_every_certain_box(tmp_path):
    """The stand-in answers by colour, so the mirrored image gets the same boxes mirrored back onto
    the wrong place: no certain box is drawn again at IoU 0.9, and none is confirmed."""
    run = _Run(tmp_path, [_exact()] * 4, certainty=(FixedThreshold(0.8), MirrorAgreement(0.9)))
    rounds.start_round(run, _data(run, tmp_path), torch.device("cpu"))
    info = run.asm.rounds[-1]
    assert info["disagreed"] == 4 and info["confirmed"] == 0
    assert info["max_score"] == pytest.approx(0.9)  # read before the demotion


def test_with_candidates_the_most_uncertain_images_are_taken(tmp_path):
    """Four candidates for two places: the two images the model is least sure of are taken."""
    answers = [
        _exact(),
        _exact(0.99),
        detection([0.5, 0.4], [1, 2], GT),
        _exact(0.98),
        detection([0.45], [1], GT[:1]),
    ]
    run = _Run(tmp_path, answers, K=2, candidates=2)
    rounds.start_round(run, _data(run, tmp_path), torch.device("cpu"))
    info = run.asm.rounds[-1]
    assert info["candidates"] == 4
    assert sorted(r.image_id for r in run.train_records if r.image_id != "0") == ["2", "4"]


def test_a_round_for_a_human_pauses_with_its_sheets_written(tmp_path):
    run = _Run(tmp_path, [_exact()] * 4, oracle="none")
    with pytest.raises(rounds.Paused, match=r"round 1: 2 images with pre-annotations in .*labelling/round1"):
        rounds.start_round(run, _data(run, tmp_path), torch.device("cpu"))
    assert run.awaiting == os.path.join("labelling", "round1")  # relative: the folder can move
    assert os.listdir(tmp_path / "out" / "labelling" / "round1") and run.saves == 1
    sheets = tmp_path / "out" / "labelling" / "round1"
    assert json.loads((sheets / "manifest.json").read_text())["round"] == 1
    tasks = json.loads((sheets / "label_studio_tasks.json").read_text())
    assert [t["data"]["asm_round"] for t in tasks] == [1, 1]
    # the model's guess of each image's AL ratio: both boxes at 0.9 are certain, none left to draw
    assert [t["data"]["al_ratio_estimate"] for t in tasks] == [0.0, 0.0]
    assert run.asm.round == 0  # nothing moved until the labels come back
    with pytest.raises(rounds.LabelsMissing, match="run import_labels.py first"):
        rounds.resume_labelled(run, _data(run, tmp_path))


def test_the_progress_line_counts_the_rounds_left(tmp_path):
    run = _Run(tmp_path, [_exact()] * 7, K=2)  # 6 unlabelled images, 2 a round: 3 rounds
    rounds.plan_rounds(run)
    assert HEARTBEAT.context["round"] == 1 and HEARTBEAT.context["rounds"] == 3
    run.args.max_rounds = 2
    rounds.plan_rounds(run, current=1)
    assert HEARTBEAT.context["round"] == 1 and HEARTBEAT.context["rounds"] == 2


def test_one_process_agrees_with_itself_and_random_shows_no_box():
    state = ASMState.start("v1+", 2, [Record(str(i), f"{i}.png", 9, 9) for i in range(4)], [0], 0)
    assert rounds.check_ranks_agree(state) == [state.digest()]
    empty = rounds.no_detections()
    assert empty["boxes"].shape == (0, 4) and len(empty["scores"]) == len(empty["labels"]) == 0


def test_a_paused_round_continues_with_the_imported_labels(tmp_path):
    """The human confirmed one model box and drew one box on each image: the round moves the pools
    with those counts, and the run no longer waits."""
    from datasets.records import record_to_dict

    run = _Run(tmp_path, [_exact()] * 5, oracle="none")
    with pytest.raises(rounds.Paused):
        rounds.start_round(run, _data(run, tmp_path), torch.device("cpu"))
    batch = run.asm.next_batch()
    imported = {
        "records": [record_to_dict(run.records[int(i)]) for i in batch],
        "images": [
            {"added": 1, "moved": 0, "relabelled": 0, "confirmed": 1, "deleted": 0, "sl": [True, False]}
            for _ in batch
        ],
        "preannotated": [2 for _ in batch],
    }
    folder = tmp_path / "out" / run.awaiting
    (folder / "imported.json").write_text(json.dumps(imported))
    rounds.resume_labelled(run, _data(run, tmp_path))
    info = run.asm.rounds[-1]
    assert run.awaiting is None and run.asm.round == 1
    assert (info["confirmed"], info["drawn"], info["images"]) == (len(batch), len(batch), len(batch))
    assert run.phases == [("round1", 1, 3, 0.02)] and run.saves == 2  # the pause's, then the round's
    assert set(batch) <= set(run.asm.labelled)


def test_eval_from_labels_holds_out_a_share_and_evaluates_the_last_model_on_the_grown_set(
    tmp_path, monkeypatch
):
    from tools.loop import held_out

    run = _Run(tmp_path, [_exact()] * 9, K=4)
    run.args.eval_from_labels, run.args.seed, run.args.ap, run.args.model = (
        0.5,
        0,
        "ap_50",
        "fasterrcnn_mobilenet_v2_fpn",
    )
    run.trainer.device, run.trainer.val_loader, run.trainer.model = torch.device("cpu"), None, run.model
    run.round_stopper = SimpleNamespace(
        history=[(0, 0.3)]
    )  # the model before the round: AP 0.3 on the old set
    seen = []

    def evaluate(model, loader, evaluators, device):
        assert model is run.model and device.type == "cpu"
        seen.append(sorted(r.image_id for r in loader.dataset.records))
        return {"voc/AP50": 0.25}

    monkeypatch.setattr(held_out, "evaluate", evaluate)
    batch = run.asm.next_batch()
    rounds.start_round(run, _data(run, tmp_path), torch.device("cpu"))
    info, held = run.asm.rounds[-1], sorted(run.asm.held_out)
    # 1 image labelled at the start and 4 this round: half of the 5, rounded down, is held out
    assert info["held_out"] == len(held) == 2 and info["labelled_images"] == 3 == len(run.asm.labelled)
    assert set(held) <= set(batch) and not {r.image_id for r in run.train_records} & set(held)
    assert seen == [held]  # evaluated on the held-out images
    assert info["ap_previous_on_set"] == 0.25 and run.round_stopper.history == [(0, 0.25)]
    assert sorted(r.image_id for r in run.trainer.val_loader.dataset.records) == held


def test_the_rounds_sheet_goes_to_tensorboard_when_the_log_is_on(tmp_path):
    run = _Run(tmp_path, [_exact()] * 4)
    images = []
    run.trainer.log.enabled = True
    run.trainer.log.writer = SimpleNamespace(add_image=lambda *a, **k: images.append((a, k)))
    rounds.start_round(run, _data(run, tmp_path), torch.device("cpu"))
    (((tag, image, step), options),) = images
    assert tag == "ASM/most_uncertain" and step == 1 and options == {"dataformats": "HWC"}
    sheet = np.asarray(Image.open(tmp_path / "out" / "rounds" / "round1.png").convert("RGB"))
    assert np.array_equal(image, sheet)


def test_ranks_whose_pools_differ_are_refused(monkeypatch):
    from tools.runtime import dist

    asm = SimpleNamespace(digest=lambda: "d0", round=3)
    monkeypatch.setattr(dist, "all_gather", lambda value: [value, value])
    assert rounds.check_ranks_agree(asm) == ["d0", "d0"]
    monkeypatch.setattr(dist, "all_gather", lambda value: [value, "d1"])
    with pytest.raises(RuntimeError, match=r"round 3: the processes hold different pools \['d0', 'd1'\]"):
        rounds.check_ranks_agree(asm)


def test_two_rounds_in_a_row_each_leave_their_sheet(tmp_path):
    run = _Run(tmp_path, [_exact()] * 5, K=2)
    for _ in range(2):
        rounds.start_round(run, _data(run, tmp_path), torch.device("cpu"))
    assert {"round1.png", "round2.png"} <= set(os.listdir(tmp_path / "out" / "rounds"))
    assert [name for name, *_ in run.phases] == ["round1", "round2"]


def test_a_round_where_the_model_finds_nothing_has_a_best_score_of_zero(tmp_path):
    run = _Run(tmp_path, [detection([], [], [])] * 4, K=2)
    rounds.start_round(run, _data(run, tmp_path), torch.device("cpu"))
    info = run.asm.rounds[-1]
    assert info["max_score"] == 0.0 and info["confirmed"] == 0 and info["drawn"] == 4
