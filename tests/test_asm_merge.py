import numpy as np
import pytest

from asm.merge import ASMConfig, merge_batch, split_and_rejudge
from datasets.records import Record
from tests.asm_oracle import iou, merge_by_loop, random_batch, same_result

CFG = ASMConfig()


def _det(*rows):
    """rows: (x1, y1, x2, y2, label, score), given in descending score order."""
    a = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return {"boxes": a[:, :4].astype(np.float32), "labels": a[:, 4].astype(np.int64), "scores": a[:, 5]}


def _gt(*rows):
    a = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return Record("img", "img.jpg", 200, 200, a[:, :4], a[:, 4])


def _one(det, gt, cfg=CFG):
    return merge_batch([det], [gt], cfg)[0]


def test_split_thresholds():
    det = _det(
        (0, 0, 10, 10, 1, 0.8), (50, 50, 60, 60, 1, 0.79), (90, 90, 99, 99, 1, 0.3), (0, 90, 9, 99, 1, 0.29)
    )
    certain, uncertain, demoted = split_and_rejudge([det], CFG)
    assert certain[0].tolist() == [True, False, False, False]
    assert uncertain[0].tolist() == [False, True, True, False] and demoted == [0]


@pytest.mark.parametrize(
    "rows, kept",
    [
        # an overlapping uncertain box of the same class confirms the certain box
        ([(0, 0, 10, 10, 1, 0.9), (0, 0, 10, 11, 1, 0.5)], [True, False]),
        # only other-class uncertain boxes overlap: demoted
        ([(0, 0, 10, 10, 1, 0.9), (0, 0, 10, 11, 2, 0.5)], [False, False]),
        # one of several overlapping uncertain boxes shares the class: kept
        ([(0, 0, 10, 10, 1, 0.9), (0, 0, 10, 11, 2, 0.6), (0, 0, 11, 10, 1, 0.5)], [True, False, False]),
        # overlap below judge_iou does not count
        ([(0, 0, 10, 10, 1, 0.9), (5, 0, 15, 10, 2, 0.5)], [True, False]),
        # the uncertain box is consumed by the first certain box (same class: kept) and is not
        # compared again for the second certain box (other class, would be demoted otherwise)
        ([(0, 0, 10, 10, 1, 0.95), (0, 0, 10, 10.5, 2, 0.9), (0, 0, 10, 11, 1, 0.5)], [True, True, False]),
        # consumed by a certain box that gets demoted: still not compared again
        ([(0, 0, 10, 10, 3, 0.95), (0, 0, 10, 10.5, 1, 0.9), (0, 0, 10, 11, 1, 0.5)], [False, True, False]),
    ],
)
def test_rejudge_rule(rows, kept):
    certain, _, demoted = split_and_rejudge([_det(*rows)], CFG)
    assert certain[0].tolist() == kept
    assert demoted[0] == sum(1 for r, k in zip(rows, kept) if r[5] >= 0.8 and not k)


def test_merge_replaces_matched_gt_and_counts_work():
    gt = _gt((0, 0, 100, 100, 1), (120, 120, 160, 160, 2), (10, 150, 40, 190, 1))
    det = _det(
        (1, 1, 100, 99, 1, 0.99),  # SL for GT 0
        (120, 120, 150, 160, 2, 0.95),  # IoU 0.75 < 0.8: not SL -> deleted, GT 1 drawn
        (10, 150, 40, 190, 2, 0.9),  # right place, wrong class -> deleted, GT 2 drawn
        (170, 0, 199, 30, 1, 0.85),
    )  # nothing there -> deleted
    r = _one(det, gt)
    assert (r.drawn, r.confirmed, r.deleted, r.certain, r.matched) == (2, 1, 3, 4, 1)
    assert r.sl.tolist() == [True, False, False]
    np.testing.assert_array_equal(r.sa.boxes, [[1, 1, 100, 99], [120, 120, 160, 160], [10, 150, 40, 190]])
    assert r.sa.labels.tolist() == [1, 2, 1] and r.ratio == pytest.approx(2 / 3)
    np.testing.assert_array_equal(gt.boxes[0], [0, 0, 100, 100])  # the oracle's record is untouched


def test_two_certain_boxes_on_one_gt_box_count_once():
    gt = _gt((0, 0, 100, 100, 1))
    det = _det((0, 0, 100, 98, 1, 0.95), (0, 0, 98, 100, 1, 0.9))
    r = _one(det, gt)
    assert (r.confirmed, r.deleted, r.drawn) == (1, 1, 0)
    np.testing.assert_array_equal(r.sa.boxes, [[0, 0, 100, 98]])  # the higher-scoring box wins


def test_greedy_falls_back_to_the_next_best_free_gt():
    gt = _gt((0, 0, 100, 100, 1), (0, 0, 100, 90, 1))
    det = _det((0, 0, 100, 99, 1, 0.95), (0, 0, 100, 97, 1, 0.9))  # both prefer GT 0
    r = _one(det, gt)
    assert r.confirmed == 2 and r.deleted == 0
    np.testing.assert_array_equal(r.sa.boxes, [[0, 0, 100, 99], [0, 0, 100, 97]])


def test_images_without_gt_do_not_crash():
    empty = Record("e", "e.jpg", 50, 50)
    r = _one(_det(), empty)
    assert (r.ratio, r.drawn, r.confirmed, len(r.sa)) == (0.0, 0, 0, 0)
    r = _one(_det((0, 0, 10, 10, 1, 0.9), (0, 0, 5, 5, 1, 0.4)), empty)
    assert (r.ratio, r.deleted, r.certain, r.matched) == (1.0, 1, 1, 0)


def test_ablations():
    gt = _gt((0, 0, 100, 100, 1), (120, 120, 160, 160, 2))
    det = _det((1, 1, 100, 99, 1, 0.99), (170, 0, 199, 30, 1, 0.85), (120, 120, 160, 160, 2, 0.5))
    no_sl = _one(det, gt, ASMConfig(enable_sl=False))
    assert (no_sl.drawn, no_sl.confirmed, no_sl.deleted, no_sl.ratio) == (2, 0, 0, 1.0)
    np.testing.assert_array_equal(no_sl.sa.boxes, gt.boxes)
    no_al = _one(det, gt, ASMConfig(enable_al=False))
    assert (no_al.drawn, no_al.confirmed, no_al.deleted) == (0, 0, 0)
    np.testing.assert_array_equal(no_al.sa.boxes, [[1, 1, 100, 99], [170, 0, 199, 30]])
    assert no_al.matched == 1 and no_al.certain == 2  # precision 0.5, measured against GT
    assert no_al.ratio == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(3))
def test_vectorised_equals_per_box_loop(seed):
    dets, gts = random_batch(np.random.default_rng(seed), 60, max_gt=8)
    results = merge_batch(dets, gts, CFG)
    assert sum(r.demoted for r in results) > 0 and sum(r.confirmed for r in results) > 0
    for det, gt, r in zip(dets, gts, results):
        assert same_result(r, merge_by_loop(det, gt, CFG))


def test_box_iou_equals_the_loops_iou_bit_for_bit():
    from asm.merge import box_iou

    dets, gts = random_batch(np.random.default_rng(3), 30, max_gt=8)
    for d, g in zip(dets, gts):
        got = box_iou(d["boxes"], g.boxes)
        want = [[iou(list(map(float, a)), list(map(float, b))) for b in g.boxes] for a in d["boxes"]]
        assert got.shape == (len(d["boxes"]), len(g)) and got.tolist() == np.reshape(want, got.shape).tolist()


def test_huge_coordinates_decide_like_the_loop():
    dets, gts = random_batch(np.random.default_rng(5), 20, max_gt=6)
    scale = np.float32(1e16)
    for d, g in zip(dets, gts):
        d["boxes"] = d["boxes"] * scale
        g.boxes = g.boxes * scale
    for det, gt, r in zip(dets, gts, merge_batch(dets, gts, CFG)):
        assert same_result(r, merge_by_loop(det, gt, CFG))


def test_empty_batch_and_masks_are_kept():
    assert merge_batch([], [], CFG) == []
    gt = Record(
        "m",
        "m.jpg",
        50,
        50,
        [[0, 0, 10, 10], [20, 20, 30, 30]],
        [1, 2],
        masks=[[[0, 0, 10, 0, 10, 10]], [[20, 20, 30, 20, 30, 30]]],
    )
    r = _one(_det((0, 0, 10, 10.5, 1, 0.9)), gt)
    assert r.confirmed == 1 and r.sa.masks == gt.masks and r.sa.masks is not gt.masks
    r.sa.boxes[0, 0] = 99
    assert gt.boxes[0, 0] == 0  # the oracle's record is never edited


@pytest.mark.parametrize("kind", ["zero_area", "inverted"])
def test_degenerate_boxes_decide_like_the_loop(kind):
    dets, gts = random_batch(np.random.default_rng(7), 40, max_gt=6)
    for d in dets[::3]:
        if len(d["boxes"]):
            if kind == "zero_area":  # a box collapsed to a point, as BCCD has two
                d["boxes"][0, 2:] = d["boxes"][0, :2]
            else:
                d["boxes"][0, [0, 2]] = d["boxes"][0, [2, 0]]
    for det, gt, r in zip(dets, gts, merge_batch(dets, gts, CFG)):
        assert same_result(r, merge_by_loop(det, gt, CFG))


def test_unmatched_certain_boxes_are_sorted_into_loose_wrong_class_and_no_object():
    # GT: class 1 at (0,0,100,100), class 2 at (200,0,300,100), class 1 at (0,200,100,300)
    gt = _gt((0, 0, 100, 100, 1), (200, 0, 300, 100, 2), (0, 200, 100, 300, 1))
    det = _det(
        (0, 0, 100, 100, 1, 0.99),  # exact: confirmed (IoU 1)
        (200, 0, 300, 100, 1, 0.98),  # on the class-2 object, called class 1: wrong class (IoU 1)
        (0, 200, 100, 160 + 200, 1, 0.97),  # on the third object at IoU 100/160 = 0.625: loose
        (0, 0, 160, 100, 1, 0.96),  # IoU 0.625 with a class-1 box already taken, none free: no object
        (500, 500, 540, 540, 2, 0.95),  # on nothing
    )
    r = _one(det, gt)
    assert (r.certain, r.matched, r.loose, r.wrong_class) == (5, 1, 1, 1)
    no_object = r.certain - r.matched - r.loose - r.wrong_class
    assert no_object == 2


def test_a_round_sums_the_error_counts():
    from asm.pools import RoundCost

    gt = _gt((0, 0, 100, 100, 1), (200, 0, 300, 100, 2))
    det = _det((0, 0, 100, 140, 1, 0.99), (200, 0, 300, 100, 1, 0.98))  # loose (IoU 0.714), wrong class
    cost = RoundCost()
    cost.add([_one(det, gt), _one(det, gt)])
    assert cost.as_dict()["loose"] == 2 and cost.as_dict()["wrong_class"] == 2


def test_certain_errors_at_exactly_half_overlap_and_each_gt_box_taken_once():
    """GT: class 1 at 0..10 and class 2 at 20..30 (x), 0..10 (y). Unmatched certain boxes: one of
    class 1 at IoU exactly 0.5 with the class-1 box (loose), one of class 1 at IoU exactly 0.5 with
    the class-2 box (wrong class), one on nothing."""
    from asm.merge import certain_errors

    gt = Record("g", "g.jpg", 50, 50, [[0, 0, 10, 10], [20, 0, 30, 10]], [1, 2])
    boxes = np.array([[0, 0, 10, 5], [20, 0, 30, 5], [40, 40, 45, 45]], np.float32)
    labels = np.array([1, 1, 1])
    assert certain_errors(boxes, labels, np.array([-1, -1, -1]), gt) == (1, 1)
    # the class-1 GT box already taken by a matched certain box: the half box is not loose, and it
    # lies on no box of another class
    assert certain_errors(boxes, labels, np.array([-1, -1, 0]), gt) == (0, 1)
    assert certain_errors(boxes[:0], labels[:0], np.array([], int), gt) == (0, 0)
    empty = Record("e", "e.jpg", 50, 50)
    assert certain_errors(boxes, labels, np.array([-1, -1, -1]), empty) == (0, 0)


def test_an_uncertain_box_at_exactly_judge_iou_contradicts_a_certain_one():
    from asm.merge import rejudge

    cfg = ASMConfig(certain_thre=0.8, uncertain_thre=0.3, judge_iou=0.5)
    det = {
        "scores": np.array([0.9, 0.5], np.float32),
        "labels": np.array([1, 2]),
        "boxes": np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32),  # IoU 0.5, another class
    }
    kept, nc, nu = rejudge(det, cfg)
    assert (kept.tolist(), nc, nu) == ([False], 1, 1)
    kept, _, _ = rejudge(det, ASMConfig(certain_thre=0.8, uncertain_thre=0.3, judge_iou=0.51))
    assert kept.tolist() == [True]


def test_one_certain_and_one_uncertain_box_give_half_the_image_to_the_human():
    from asm.merge import merge_one

    cfg = ASMConfig(certain_thre=0.8, uncertain_thre=0.3)
    gt = Record("g", "g.jpg", 60, 50, [[0, 0, 10, 10], [30, 30, 40, 40]], [1, 2], iscrowd=[False, True])
    det = {
        "scores": np.array([0.9, 0.5], np.float32),
        "labels": np.array([1, 2]),
        "boxes": np.array([[0, 0, 10, 10], [30, 30, 40, 40]], np.float32),
    }
    out = merge_one(det, gt, cfg)
    assert (out.certain, out.uncertain, out.confirmed, out.drawn) == (1, 1, 1, 1)
    assert out.ratio == 0.5
    assert (out.sa.width, out.sa.height, out.sa.iscrowd.tolist()) == (60, 50, [False, True])
    nothing = merge_one({k: v[:0] for k, v in det.items()}, gt, cfg)  # no detection: all drawn
    assert nothing.ratio == 1.0 and (nothing.sa.width, nothing.sa.height) == (60, 50)
    assert nothing.sa.iscrowd.tolist() == [False, True]


def test_iou_of_boxes_without_area_is_zero_not_nan():
    from asm.merge import box_iou

    with np.errstate(all="raise"):  # no 0 / 0 is computed
        out = box_iou([[5, 5, 5, 5], [0, 0, 10, 10]], [[5, 5, 5, 5]])
    assert out.tolist() == [[0.0], [0.0]]


def test_box_iou_of_boxes_under_a_pixel_and_of_empty_boxes():
    """Two identical 0.5 x 0.5 boxes overlap fully (IoU 1, a union of 0.25); two empty boxes have no
    union and an IoU of 0, among 50 boxes whose other IoUs are computed alongside (the output is
    filled, not left as whatever memory the division got)."""
    from asm.merge import box_iou

    tiny = np.array([[1.0, 1.0, 1.5, 1.5]])
    assert box_iou(tiny, tiny).tolist() == [[1.0]]
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 50, (50, 4))
    boxes[:, 2:] += boxes[:, :2]
    boxes[::2] = 0.0  # every other box empty
    for _ in range(3):
        iou = box_iou(boxes, boxes)
        assert (iou[::2, ::2] == 0).all()
        assert np.allclose(np.diag(iou)[1::2], 1.0)


def test_certain_errors_by_hand_with_one_gt_box_or_none():
    """IoU 0.6 with the image's one GT box: loose when of its class, wrong_class otherwise; without
    GT boxes a certain box lies on no object; a matched box is no error; -1 marks no match."""
    from asm.merge import certain_errors

    gt = Record("a", "a.jpg", 50, 50, [[0, 0, 10, 10]], [1])
    box = np.array([[0, 0, 6, 10]], np.float32)  # IoU 0.6
    assert certain_errors(box, np.array([1]), np.array([-1]), gt) == (1, 0)
    assert certain_errors(box, np.array([2]), np.array([-1]), gt) == (0, 1)
    assert certain_errors(box, np.array([1]), np.array([0]), gt) == (0, 0)  # matched
    assert certain_errors(box, np.array([1]), np.array([-1]), Record("b", "b.jpg", 50, 50)) == (0, 0)
    # the GT box taken by a match is not free for a loose box: the second is on no free object
    two = np.array([[0, 0, 10, 10], [0, 0, 6, 10]], np.float32)
    assert certain_errors(two, np.array([1, 1]), np.array([0, -1]), gt) == (0, 0)
    gt2 = Record("c", "c.jpg", 50, 50, [[0, 0, 10, 10], [20, 0, 30, 10]], [1, 1])
    wrong = np.array([[0, 0, 6, 10], [20, 0, 26, 10]], np.float32)
    assert certain_errors(wrong, np.array([2, 2]), np.array([-1, -1]), gt2) == (0, 2)  # counted per box
