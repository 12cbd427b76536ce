"""The selection, calibration and move rules on hand-made detections."""

import numpy as np
import pytest
from scipy.stats import binomtest

from asm.edits import count_moves
from asm.merge import ASMConfig, merge_batch
from asm.select import (
    calibrate_scores,
    choose_informative,
    class_thresholds,
    detection_outcomes,
    mirror_agreement,
    precision_lower_bound,
    predicted_uncertainty,
    require_agreement,
)
from datasets.records import Record

CFG = ASMConfig(certain_thre=0.8, uncertain_thre=0.3)


def _det(boxes, labels, scores):
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4)[order],
        "labels": np.asarray(labels, np.int64)[order],
        "scores": np.asarray(scores, np.float32)[order],
    }


def _boxes(n, x0=0):
    return [[x0 + 20 * k, 0, x0 + 20 * k + 10, 10] for k in range(n)]


def test_predicted_uncertainty_and_informative_choice():
    sure = _det(_boxes(4), [1] * 4, [0.9] * 4)  # all certain
    half = _det(_boxes(4), [1] * 4, [0.9, 0.9, 0.5, 0.5])
    blind = _det(np.zeros((0, 4)), [], [])  # nothing found: the human draws everything
    unsure2 = _det(_boxes(2), [2, 2], [0.5, 0.4])
    dets = [sure, half, blind, unsure2]
    assert predicted_uncertainty(dets, CFG).tolist() == [0.0, 0.5, 1.0, 1.0]
    # without diversity: the largest uncertain shares, ties in queue order
    assert choose_informative(dets, 3, CFG, num_classes=2, diversity=0.0) == [2, 3, 1]
    # class mix: after an image of class 2, one of class 1 beats another of class 2 of equal share
    unsure2b = _det(_boxes(2), [2, 2], [0.45, 0.4])
    unsure1 = _det(_boxes(2), [1, 1], [0.45, 0.4])
    assert choose_informative([unsure2, unsure2b, unsure1], 2, CFG, num_classes=2, diversity=0.5) == [0, 2]
    assert choose_informative([unsure2, unsure2b, unsure1], 2, CFG, num_classes=2, diversity=0.0) == [0, 1]
    assert choose_informative(dets, 10, CFG, 2) and len(choose_informative(dets, 10, CFG, 2)) == 4


def test_detection_outcomes_match_each_gt_box_once():
    gt = Record("a", "a.jpg", 100, 100, [[0, 0, 10, 10], [20, 0, 30, 10]], [1, 2])
    det = _det(
        [[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60]],
        [1, 1, 1, 2],
        [0.9, 0.8, 0.7, 0.6],
    )  # a duplicate, a wrong class, a box on nothing
    out = detection_outcomes([det], [gt], gt_iou=0.8, floor=0.3)
    assert out["labels"] == [1, 1, 1, 2] and out["tp"] == [True, False, False, False]
    assert detection_outcomes([det], [gt], gt_iou=0.8, floor=0.75)["tp"] == [True, False]


@pytest.mark.parametrize("right, n", [(81, 263), (15, 148), (1, 29), (10, 10), (0, 20), (29, 30)])
def test_the_precision_bound_is_the_wilson_lower_bound(right, n):
    """One-sided at 0.95 = the lower end of scipy's two-sided 90% Wilson interval (Newcombe 1998's
    examples among them: 81/263 -> 0.2553 two-sided 95%)."""
    hits = np.r_[np.ones(right), np.zeros(n - right)]
    low = binomtest(right, n).proportion_ci(0.90, method="wilson").low
    assert precision_lower_bound(hits)[-1] == pytest.approx(low, abs=1e-9)
    low95 = binomtest(right, n).proportion_ci(0.95, method="wilson").low
    assert precision_lower_bound(hits, confidence=0.975)[-1] == pytest.approx(low95, abs=1e-9)


def test_class_thresholds_reach_the_target_precision_with_confidence():
    # class 1: 40 right down to score 0.61, then 20 wrong; class 2: 8 right of 8; class 3: none
    s1 = np.round(np.linspace(1.0, 0.61, 40), 4).tolist()
    s1_low = np.round(np.linspace(0.6, 0.41, 20), 4).tolist()
    outcomes = {
        "labels": [1] * 60 + [2] * 8,
        "scores": s1 + s1_low + [0.9] * 8,
        "tp": [True] * 40 + [False] * 20 + [True] * 8,
    }
    t = class_thresholds(outcomes, 3, precision=0.92, floor=0.3)
    bound = [binomtest(40, n).proportion_ci(0.90, method="wilson").low for n in (40, 41)]
    assert bound[0] >= 0.92 > bound[1]  # the oracle: 40 of 40 shows 0.92, 40 of 41 does not
    assert t[1] == pytest.approx(0.61)
    assert t[2] == 1.0  # 8 of 8 right: the bound (0.76) does not show 0.9
    assert t[3] == 1.0  # no detections: nothing certain
    assert class_thresholds(outcomes, 2, precision=0.7, floor=0.3)[2] == pytest.approx(0.9)
    assert class_thresholds(outcomes, 1, precision=0.5, floor=0.7)[1] == pytest.approx(0.7)  # the floor
    never = {"labels": [1] * 10, "scores": [0.9] * 10, "tp": [False] * 10}
    assert class_thresholds(never, 1, 0.5, 0.3)[1] == 1.0  # no score is precise enough
    ties = {
        "labels": [1] * 60,
        "scores": [0.9] * 50 + [0.5] * 10,
        "tp": [True] * 50 + [True, False] * 5,
    }
    assert class_thresholds(ties, 1, 0.9, 0.3)[1] == pytest.approx(0.9)  # equal scores stay together


def test_calibrated_scores_move_each_class_threshold_onto_certain_thre():
    det = _det(_boxes(6), [1, 1, 1, 2, 2, 2], [0.75, 0.65, 0.2, 0.95, 0.85, 0.5])
    out = calibrate_scores([det], {1: 0.7, 2: 0.9}, CFG)[0]
    mapped = dict(
        zip(zip(out["labels"].tolist(), np.round(out["boxes"][:, 0]).tolist()), out["scores"].tolist())
    )
    assert mapped[(1, 0)] >= 0.8 and mapped[(1, 20)] < 0.8  # class 1: 0.75 is certain now, 0.65 not
    assert mapped[(2, 60)] >= 0.8 and mapped[(2, 80)] < 0.8  # class 2: 0.95 certain, 0.85 no longer
    assert mapped[(1, 40)] == pytest.approx(0.2)  # below uncertain_thre: unchanged
    assert (np.diff(out["scores"]) <= 0).all()  # still sorted for the merge
    merged = merge_batch([out], [Record("a", "a.jpg", 200, 20, _boxes(6), [1, 1, 1, 2, 2, 2])], CFG)[0]
    assert merged.confirmed == 2  # exactly the boxes above their class's threshold


def test_a_box_at_iou_between_move_and_gt_iou_is_one_move():
    gt = Record("a", "a.jpg", 100, 100, [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [1, 1, 2])
    det = _det([[0, 0, 10, 10], [20, 0, 28, 10], [40, 0, 47, 10]], [1, 1, 1], [0.9, 0.9, 0.9])
    r = merge_batch([det], [gt], CFG)[0]  # box 2 at IoU 0.8 -> SL? 8/10 = 0.8: confirmed; box 3 wrong class
    assert (r.confirmed, r.drawn, r.deleted) == (2, 1, 1)
    det = _det([[0, 0, 10, 10], [20, 0, 26, 10], [40, 0, 47, 10]], [1, 1, 1], [0.9, 0.9, 0.9])
    r = merge_batch([det], [gt], CFG)[0]  # box 2 at IoU 0.6: deleted + drawn before moves are counted
    assert (r.confirmed, r.drawn, r.deleted) == (1, 2, 2)
    moved = count_moves([r], move_iou=0.5)[0]
    assert (moved.confirmed, moved.drawn, moved.deleted) == (1, 1, 1)  # the class-2 box is still drawn
    assert moved.moved.tolist() == [False, True, False] and len(moved.deleted_boxes) == 1
    assert moved.deleted_boxes.tolist() == [[40, 0, 47, 10]] and moved.deleted_labels.tolist() == [1]  # left
    assert r.drawn == 2  # the input is untouched
    assert count_moves([r], move_iou=0.7)[0].moved.sum() == 0


def test_calibrated_scores_by_hand_at_every_piece_of_the_map():
    # u 0.3, c 0.8; class 1 at t 0.7, class 2 at t 0.9, class 3 without a threshold (t = c: unchanged)
    scores = [0.75, 0.65, 0.2, 0.3, 1.0, 0.95, 0.85, 0.5, 0.6, 0.6, 0.7 - 1e-9]
    labels = [1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 1]
    det = {
        "boxes": np.arange(44, dtype=np.float32).reshape(11, 4),
        "labels": np.array(labels),
        "scores": np.array(scores),
    }
    out = calibrate_scores([det], {1: 0.7, 2: 0.9}, CFG)[0]
    by_box = dict(zip(out["boxes"][:, 0].astype(int).tolist(), out["scores"].tolist()))
    expected = {
        0: 0.8 + 0.05 * 0.2 / 0.3,  # above t: [t, 1] -> [c, 1]
        4: 0.3 + 0.35 * 0.5 / 0.4,  # between u and t: [u, t] -> [u, c]
        8: 0.2,  # below u: unchanged
        12: 0.3,  # at u: the low piece starts at u
        16: 1.0,  # 1 stays 1
        20: 0.8 + 0.05 * 0.2 / 0.1,
        24: 0.3 + 0.55 * 0.5 / 0.6,
        28: 0.3 + 0.2 * 0.5 / 0.6,
        32: 0.6,
        36: 0.6,
    }
    for box, value in expected.items():
        assert by_box[box] == pytest.approx(value, abs=1e-9), box
    assert 0.8 - 1e-6 < by_box[40] < 0.8  # just under t: just under c, never certain
    assert out["boxes"][:, 0].astype(int).tolist() == [
        16,
        20,
        0,
        40,
        24,
        4,
        32,
        36,
        28,
        12,
        8,
    ]  # sorted, ties in order
    assert out["labels"].tolist() == [1, 2, 1, 1, 2, 1, 3, 3, 2, 1, 1]  # every field follows the order


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(uncertain_thre=-0.01), "need 0 <= uncertain_thre <= certain_thre <= 1, got -0.01, 0.8"),
        (dict(uncertain_thre=0.81), "got 0.81, 0.8"),
        (dict(certain_thre=1.01), "got 0.3, 1.01"),
        (dict(judge_iou=0.0), "judge_iou must be in \\(0, 1\\], got 0.0"),
        (dict(gt_iou=1.5), "gt_iou must be in \\(0, 1\\], got 1.5"),
        (dict(move_iou=-1), "move_iou must be in \\(0, 1\\], got -1"),
    ],
)
def test_asm_config_refuses_values_outside_their_range(kw, message):
    with pytest.raises(ValueError, match=message):
        ASMConfig(**{"certain_thre": 0.8, "uncertain_thre": 0.3} | kw)


def test_asm_config_accepts_the_edges_of_each_range():
    ASMConfig(uncertain_thre=0.0, certain_thre=0.0)
    ASMConfig(uncertain_thre=1.0, certain_thre=1.0, judge_iou=1.0, gt_iou=1.0, move_iou=1.0)
    ASMConfig(uncertain_thre=0.5, certain_thre=0.5, judge_iou=1e-6)


def test_the_ablations_merge_by_hand():
    gt = Record(
        "g7", "dir/g7.jpg", 120, 30, [[0, 0, 10, 10], [20, 0, 30, 10]], [1, 1], difficult=[False, True]
    )
    det = _det(
        [[0, 0, 10, 10], [60, 0, 70, 10], [90, 0, 99, 10]], [1, 1, 2], [0.9, 0.85, 0.5]
    )  # 2 certain, 1 uncertain
    no_human = merge_batch([det], [gt], ASMConfig(enable_al=False))[0]  # the certain boxes are the labels
    assert (no_human.sa.image_id, no_human.sa.file_name, no_human.sa.width, no_human.sa.height) == (
        "g7",
        "dir/g7.jpg",
        120,
        30,
    )
    np.testing.assert_array_equal(no_human.sa.boxes, [[0, 0, 10, 10], [60, 0, 70, 10]])
    assert no_human.sl.tolist() == [True, True] and (
        no_human.drawn,
        no_human.confirmed,
        no_human.deleted,
    ) == (0, 0, 0)
    assert (
        no_human.ratio == pytest.approx(1 / 3)
        and no_human.matched == 1
        and no_human.sl_score == pytest.approx(0.9)
    )
    empty = merge_batch([_det([], [], [])], [gt], ASMConfig(enable_al=False))[0]
    assert empty.ratio == 0.0 and len(empty.sa) == 0
    no_model = merge_batch([det], [gt], ASMConfig(enable_sl=False))[0]  # the human draws every GT box
    np.testing.assert_array_equal(no_model.sa.boxes, gt.boxes)
    assert (
        no_model.sa.difficult.tolist() == [False, True]
        and no_model.sa.image_id == "g7"
        and no_model.sa.width == 120
    )
    assert no_model.sl.tolist() == [False, False] and (
        no_model.drawn,
        no_model.confirmed,
        no_model.ratio,
    ) == (2, 0, 1.0)
    nothing = merge_batch([det], [Record("n", "n.jpg", 120, 30)], ASMConfig(enable_sl=False))[0]
    assert nothing.ratio == 0.0 and nothing.drawn == 0


def test_a_certain_box_the_mirrored_view_misplaces_becomes_uncertain():
    # A (class 1, 0.95): the mirrored view draws it again shifted by 1 px: IoU 90/110 = 0.818
    # B (class 2, 0.90): the mirrored view's class-2 box is shifted by 4 px: IoU 60/140 = 0.4286;
    #   a class-1 box exactly on B and a class-2 box exactly on B scoring 0.2 (< uncertain_thre) do not count
    # C (class 1, 0.50): uncertain already; D (class 3, 0.85): nothing of class 3 in the mirrored view
    det = _det(
        [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]],
        [1, 2, 1, 3],
        [0.95, 0.9, 0.5, 0.85],
    )
    mirrored = _det(
        [[1, 0, 11, 10], [24, 0, 34, 10], [20, 0, 30, 10], [20, 0, 30, 10]],
        [1, 2, 1, 2],
        [0.9, 0.6, 0.9, 0.2],
    )
    agree = mirror_agreement([det], [mirrored], CFG.uncertain_thre)[0]
    np.testing.assert_allclose(agree, [90 / 110, 60 / 140, 0.0, 0.0])  # det order: A B D C
    out, demoted = require_agreement([det], [mirrored], 0.8, CFG)
    assert demoted == 2  # B and D
    assert out[0]["labels"].tolist() == [1, 2, 3, 1]  # A, then B and D just below certain_thre, then C
    assert out[0]["scores"][0] == np.float32(0.95) and out[0]["scores"][3] == np.float32(0.5)
    assert np.all(out[0]["scores"][1:3] == np.nextafter(0.8, 0)) and out[0]["boxes"][1].tolist() == [
        20,
        0,
        30,
        10,
    ]
    gt = Record("g", "g.jpg", 100, 20, np.asarray(det["boxes"]), np.asarray(det["labels"]))
    merged = merge_batch(out, [gt], CFG)[0]
    assert merged.confirmed == 1 and merged.drawn == 3  # only A is confirmed; B and D are drawn again
    # at 0.4 B agrees (0.4286) and stays certain; D, with no class-3 box, never does
    assert require_agreement([det], [mirrored], 0.4, CFG)[1] == 1
    assert require_agreement([det], [mirrored], 0.4, CFG)[0][0]["labels"].tolist() == [1, 2, 3, 1]


def test_the_boundaries_are_inclusive_as_the_docs_say():
    """A detection scoring exactly the floor counts; a certain box exactly at certain_thre is
    certain; a mirror box exactly at the floor counts; IoU exactly min_iou agrees."""
    from asm.select import class_mix, detection_outcomes, mirror_agreement, require_agreement

    one = _det([[0, 0, 10, 10], [20, 20, 30, 30]], [2, 1], [0.5, 0.25])
    np.testing.assert_allclose(class_mix([one], 3, 0.25), [[0.25, 0.5, 0.0]])
    np.testing.assert_allclose(class_mix([one], 3, 0.2500001), [[0.0, 0.5, 0.0]])
    gt = Record("g", "g.jpg", 40, 40, [[20, 20, 30, 30]], [1])
    assert detection_outcomes([one], [gt], 0.5, 0.25) == {
        "labels": [2, 1],
        "scores": [0.5, 0.25],
        "tp": [False, True],
    }
    mirrored = _det([[0, 0, 10, 5]], [2], [0.25])  # IoU 0.5 with the class-2 box
    (agree,) = mirror_agreement([one], [mirrored], 0.25)
    np.testing.assert_allclose(agree, [0.5, 0.0])
    (none,) = mirror_agreement([one], [mirrored], 0.26)
    np.testing.assert_allclose(none, [0.0, 0.0])
    cfg = ASMConfig(certain_thre=0.5, uncertain_thre=0.25)
    (kept,), demoted = require_agreement([one], [mirrored], 0.5, cfg)
    assert demoted == 0 and kept["scores"].tolist() == [0.5, 0.25]
    (doubted,), demoted = require_agreement([one], [mirrored], 0.51, cfg)
    assert (
        demoted == 1 and doubted["scores"][0] == np.nextafter(0.5, 0) and doubted["labels"].tolist() == [2, 1]
    )


def test_calibration_maps_each_score_by_its_classes_threshold():
    """uncertain 0.3, certain 0.8; class 1's threshold 0.6: 0.6 -> 0.8, 0.45 (half way from 0.3) ->
    0.55, 0.8 (half way to 1) -> 0.9, 0.3 -> 0.3 (the low end stays), 0.2 unchanged; class 2 without a
    threshold keeps certain_thre as its own (identity)."""
    from asm.select import calibrate_scores

    cfg = ASMConfig(certain_thre=0.8, uncertain_thre=0.3)
    d = _det(np.zeros((6, 4)), [1, 1, 1, 1, 1, 2], [0.2, 0.3, 0.45, 0.6, 0.8, 0.7])
    (out,) = calibrate_scores([d], {1: 0.6}, cfg)
    expected = sorted([0.2, 0.3, 0.55, 0.8, 0.9, 0.7], reverse=True)
    np.testing.assert_allclose(out["scores"], expected, atol=1e-6)
    (top,) = calibrate_scores([_det(np.zeros((2, 4)), [1, 1], [1.0, 0.99])], {1: 0.99}, cfg)
    np.testing.assert_allclose(top["scores"], [1.0, 0.8], atol=1e-6)  # never above 1
    (just,) = calibrate_scores([_det(np.zeros((1, 4)), [1], [0.5999])], {1: 0.6}, cfg)
    assert just["scores"][0] < 0.8  # below a class's threshold is below certain, however close
    (zero,) = calibrate_scores([_det(np.zeros((1, 4)), [1], [0.6])], {1: 0.3}, cfg)
    assert zero["scores"][0] == pytest.approx(0.8 + 0.3 * 0.2 / 0.7)  # a threshold at the low end


def test_a_threshold_needs_its_lower_bound_to_reach_the_precision_exactly_or_more():
    from asm.select import class_thresholds, precision_lower_bound

    hits = np.ones(10)
    bound = float(precision_lower_bound(hits)[-1])
    outcomes = {"labels": [1] * 10, "scores": [0.9 - 0.01 * k for k in range(10)], "tp": [True] * 10}
    assert class_thresholds(outcomes, 2, bound, 0.3) == {1: pytest.approx(0.81), 2: 1.0}
    assert class_thresholds(outcomes, 2, bound + 1e-9, 0.3) == {1: 1.0, 2: 1.0}
    assert class_thresholds(outcomes, 2, 0.0, 0.85) == {1: 0.85, 2: 1.0}  # never below the floor


def test_a_score_at_its_classes_threshold_is_certain_and_one_just_under_it_is_not():
    """The map sends t to c exactly; a score one float below t stays below c even where the low
    piece's arithmetic rounds up to c (at t = 0.99734..., found by search); a class whose threshold
    is the floor u sends u itself onto c."""
    ts = np.r_[np.linspace(0.31, 0.999, 200), 0.9973494389997505]
    scores = np.r_[ts, np.nextafter(ts, 0)]
    labels = np.r_[np.arange(1, len(ts) + 1), np.arange(1, len(ts) + 1)]
    det = {"boxes": np.zeros((len(scores), 4)), "labels": labels, "scores": scores}
    out = calibrate_scores([det], {k + 1: t for k, t in enumerate(ts)}, CFG)[0]
    at = out["scores"][out["scores"] >= 0.8]
    assert len(at) == len(ts) and (at == 0.8).all()  # each threshold onto c, nothing else reaches it
    u = {"boxes": np.zeros((1, 4)), "labels": np.array([1]), "scores": np.array([0.3])}
    assert calibrate_scores([u], {1: 0.3}, CFG)[0]["scores"].tolist() == [0.8]


def _one(label_scores):
    """A detection with one box per (label, score), side by side (no box overlaps another)."""
    labels, scores = zip(*label_scores) if label_scores else ((), ())
    return _det(_boxes(len(labels)), labels, scores)


def test_informative_choice_by_hand():
    """u 0.3, c 0.8. Gain: uncertain / (certain + uncertain) boxes, 1 without any. Score: gain +
    0.5 x (1 - cos(mix, chosen)); an image without boxes has no direction (cos 0)."""
    p = _one([(1, 0.5)])  # gain 1, along class 1
    x = _one([(1, 0.6)])  # gain 1, along class 1
    y = _one([(2, 0.9), (2, 0.5), (2, 0.5)])  # gain 2/3, along class 2
    # after p: x scores 1 + 0 and y 2/3 + 0.5; y comes first (scaling the cosine by |chosen|^2 = 0.25,
    # or the mixes by their overall norm, would put x first)
    assert choose_informative([p, x, y], 3, CFG, num_classes=2) == [0, 2, 1]
    y4 = _one([(2, 0.9), (2, 0.9), (2, 0.9), (2, 0.5)])  # gain 1/4: 0.75 < x's 1.0 (diversity 0.5, not 1.5)
    assert choose_informative([p, x, y4], 3, CFG, num_classes=2) == [0, 1, 2]
    # the cosine is with the sum of all chosen so far: after p then y (0.5, 1.0), z (gain 1, along
    # class 2) scores 1 + 0.5 x (1 - 0.894) = 1.053 and x6 (gain 0.6, class 1) 0.6 + 0.5 x (1 - 0.447)
    # = 0.876; measured against y alone, x6 would come first (1.1 against 1.0)
    x6 = _one([(1, 0.9), (1, 0.9), (1, 0.5), (1, 0.5), (1, 0.5)])
    y1 = _one([(2, 0.5), (2, 0.5)])
    z = _one([(2, 0.6)])
    assert choose_informative([p, x6, y1, z], 4, CFG, num_classes=2) == [0, 2, 3, 1]
    # images without boxes: no direction, so after p and x2 (class 2) they come in queue order
    empties = [_one([]) for _ in range(40)]
    x2 = _one([(2, 0.5)])
    c = _one([(1, 0.9), (2, 0.5)])  # gain 1/2, between both classes: last
    order = choose_informative([p, x2, c, *empties], 43, CFG, num_classes=2)
    assert order == [0, 1, *range(3, 43), 2]


def test_predicted_uncertainty_of_images_with_one_box_or_none():
    dets = [_one([(1, 0.9)]), _one([(1, 0.5)]), _one([]), _one([(1, 0.9), (2, 0.5), (2, 0.2)])]
    assert predicted_uncertainty(dets, CFG).tolist() == [0.0, 1.0, 1.0, 0.5]  # 0.2: below u, not counted
