"""tools/engine/mining.py: pre-annotations and their AL estimate, and imported rounds as merge results."""

import numpy as np
import pytest
import torch
from torch import nn

from asm.merge import ASMConfig
from datasets.records import Record, record_to_dict
from tests.helpers import detection
from tools.engine.mining import Mirrored, preannotate
from tools.loop.labelling import results_from_imported


def test_preannotations_are_the_certain_boxes_and_the_estimate_their_uncertain_share():
    records = [Record("a", "a.jpg", 100, 100), Record("b", "b.jpg", 100, 100), Record("c", "c.jpg", 100, 100)]
    dets = [
        detection(
            [0.95, 0.9, 0.5, 0.1],
            [1, 2, 1, 1],
            [[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30], [70, 0, 80, 9]],
        ),
        detection([0.4], [1], [[0, 0, 10, 10]]),
        detection([], [], []),
    ]
    pre, scores, estimates = preannotate(dets, records, ASMConfig(certain_thre=0.8, uncertain_thre=0.3))
    assert [len(p) for p in pre] == [2, 0, 0] and pre[0].labels.tolist() == [1, 2]
    assert np.allclose(scores[0], [0.95, 0.9])
    # a: 2 certain, 1 uncertain (0.1 is below uncertain_thre: not counted) -> 1/3; b: all uncertain;
    # c: nothing found, the human draws everything
    assert np.allclose(estimates, [1 / 3, 1.0, 1.0])


def test_imported_edits_become_merge_results_with_moves_counted():
    sa = Record("a", "a.jpg", 100, 100, [[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [1, 1, 2])
    imported = {
        "records": [record_to_dict(sa)],
        "images": [
            {
                "added": 1,
                "moved": 1,
                "relabelled": 0,
                "confirmed": 1,
                "deleted": 2,
                "sl": [True, False, False],
                "moved_boxes": [False, True, False],
            }
        ],
        "preannotated": [4],
    }
    (result,) = results_from_imported(imported)
    assert result.drawn == 1 and result.confirmed == 1 and result.deleted == 2 and result.certain == 4
    assert result.ratio == 2 / 3 and result.moved.tolist() == [False, True, False]


class BrightSpot(nn.Module):
    """A stand-in detector: one box around the pixels brighter than 0.5."""

    def forward(self, images):
        outs = []
        for image in images:
            ys, xs = torch.where(image[0] > 0.5)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            outs.append({"boxes": box[None], "labels": torch.tensor([1]), "scores": torch.tensor([0.9])})
        return outs


def test_the_mirrored_view_maps_its_boxes_back_onto_the_image():
    image = torch.zeros(3, 20, 64)
    image[:, 5:9, 10:21] = 1.0  # columns 10-20: the mirrored image has it at columns 43-53
    mirrored = BrightSpot()([image.flip(-1)])[0]["boxes"]
    assert mirrored.tolist() == [[43.0, 5.0, 54.0, 9.0]]
    out = Mirrored(BrightSpot())([image, image[:, :, :40]])
    assert out[0]["boxes"].tolist() == [[10.0, 5.0, 21.0, 9.0]]  # back where the original has it
    assert out[1]["boxes"].tolist() == [[10.0, 5.0, 21.0, 9.0]]  # each image by its own width
    assert out[0]["labels"].tolist() == [1] and out[0]["scores"].tolist() == [pytest.approx(0.9)]


class _ByImage(nn.Module):
    """A detector that answers image ``i`` (every pixel = i) with ``answers[i]``; counts its calls."""

    def __init__(self, answers):
        super().__init__()
        self.answers, self.calls = answers, 0

    def forward(self, images):
        self.calls += 1
        return [{k: torch.as_tensor(v) for k, v in self.answers[int(im[0, 0, 0])].items()} for im in images]


def _calibration_run(strategy="v1+", ap50=0.5, gate=0.0):
    """A run whose validation set is 10 images of 3 GT boxes each (class 1, 1, 2) and whose model
    draws the class-1 boxes exactly (scores 0.99 down to 0.80: 20 right), adds one class-1 box on
    nothing at 0.65 on every image, and puts every class-2 box 30 px off (wrong at any IoU)."""
    from types import SimpleNamespace

    from tools.loop.report import AP50

    gt = np.array([[0, 0, 20, 20], [40, 0, 60, 20], [0, 40, 20, 60]], np.float32)
    records = [Record(str(i), f"{i}.jpg", 80, 80, gt, np.array([1, 1, 2])) for i in range(10)]
    answers = []
    for i in range(10):
        scores = [0.99 - 0.01 * (2 * i), 0.99 - 0.01 * (2 * i + 1), 0.65, 0.95]
        boxes = [gt[0], gt[1], [60, 60, 75, 75], gt[2] + [30, 0, 30, 0]]
        answers.append(detection(scores, [1, 1, 1, 2], boxes))
    loader = [([torch.full((3, 80, 80), float(i))], [{"index": i, "orig_size": (80, 80)}]) for i in range(10)]
    loader = type("Loader", (list,), {"dataset": SimpleNamespace(records=records)})(loader)
    model = _ByImage(answers)
    from asm.policy import CalibratedPrecision, FixedThreshold, RoundPolicy

    certainty = (FixedThreshold(0.8), CalibratedPrecision(0.85))
    run = SimpleNamespace(
        policy=RoundPolicy(strategy, K=10, rules=ASMConfig(), certainty=certainty, mining_gate=gate),
        rules=ASMConfig(),
        phase=SimpleNamespace(history=[{"metrics": {AP50: ap50}, "evaluated": True}]),
        classes=["a", "b"],
        trainer=SimpleNamespace(model=model, val_loader=loader, device=torch.device("cpu"), evaluators=[]),
    )
    return run, model


def _screen(run, dets=()):
    """The round's certainty rules over ``dets``, as start_round calls them: (cfg, info, shown)."""
    from tools.loop.rounds import RoundSight, round_rules

    cfg, info = round_rules(run)
    if run.policy.shows_model:
        shown, _, said = run.policy.screen(list(dets), RoundSight(run, [], None, torch.device("cpu")), cfg)
        info.update(said)
        return cfg, info, shown
    return cfg, info, list(dets)


def test_certain_thresholds_are_calibrated_on_the_validation_set_by_the_mining_model():
    from scipy.stats import binomtest

    run, model = _calibration_run()
    # a class-1 box at 0.81 and a class-2 box at 0.99, before the rules
    cfg, info, shown = _screen(run, [detection([0.99, 0.81], [2, 1], [[0, 0, 9, 9], [0, 0, 9, 9]])])
    assert model.calls == 10  # one pass over the validation set
    # class 1: the 20 right boxes score 0.99 .. 0.80; the 10 wrong ones 0.65. Above 0.65: right only
    scores = sorted((0.99 - 0.01 * k for k in range(20)), reverse=True)
    above = [s for s in scores if s > 0.65]
    low = binomtest(len(above), len(above)).proportion_ci(0.90, method="wilson").low
    assert low >= 0.85  # the oracle: the boxes above 0.65 show 0.85 ...
    with_wrong = binomtest(len(above) + 1, len(above) + 11).proportion_ci(0.90, method="wilson").low
    assert with_wrong < 0.85  # ... the ten wrong ones at 0.65 do not
    # class 2 is never right: no certain box of class 2
    assert info["thresholds"] == {"a": round(min(above), 4), "b": 1.0} and cfg.enable_sl
    (d,) = shown  # 0.81 is above class 1's threshold (0.66): certain; class 2's 0.99 is not
    by_label = dict(zip(np.asarray(d["labels"]).tolist(), np.asarray(d["scores"]).tolist()))
    assert by_label[1] >= cfg.certain_thre > by_label[2]


@pytest.mark.parametrize("strategy, ap50, gate", [("random", 0.5, 0.0), ("v1+", 0.4, 0.5)])
def test_no_calibration_pass_where_no_model_box_is_offered(strategy, ap50, gate):
    run, model = _calibration_run(strategy, ap50, gate)
    cfg, info, _ = _screen(run)
    assert model.calls == 0 and not cfg.enable_sl and "thresholds" not in info


@pytest.mark.parametrize("evaluated", [True, False])
def test_the_last_evaluation_calibrates_when_it_was_of_this_model(evaluated):
    """The phase's last epoch was evaluated: its outcomes (here: every class right) calibrate, with
    no pass of their own, and only once; otherwise (or after a resume: none kept) one pass."""
    from tools.engine.evaluator import OutcomeEvaluator

    run, model = _calibration_run()
    kept = OutcomeEvaluator(0.8, 0.05)
    kept.outcomes = {"labels": [1] * 30 + [2] * 30, "scores": [0.7] * 30 + [0.6] * 30, "tp": [True] * 60}
    run.trainer.evaluators.append(kept)
    run.phase.history[-1]["evaluated"] = evaluated
    _, info, _ = _screen(run)
    if evaluated:
        assert model.calls == 0 and info["thresholds"] == {"a": 0.7, "b": 0.6}
    else:
        assert model.calls == 10 and info["thresholds"]["b"] == 1.0  # the pass: class 2 is never right
    assert kept.outcomes is None  # taken: the next round's phase evaluates again
    _screen(run)
    assert model.calls == (10 if evaluated else 20)
