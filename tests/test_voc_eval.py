import numpy as np
import pytest

from datasets.records import Record
from tools.engine.voc_eval import VOCEvaluator


def _iou(a, b):
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reference_ap(records, outputs, cls, thr, use_11pt):
    """The devkit's voc_eval, written out with plain loops."""
    gts = {
        i: [(list(map(float, b)), bool(d)) for b, lab, d in zip(r.boxes, r.labels, r.difficult) if lab == cls]
        for i, r in enumerate(records)
    }
    npos = sum(1 for g in gts.values() for _, d in g if not d)
    if npos == 0:
        return None
    dets = [
        (i, float(s), list(map(float, b)))
        for i, o in enumerate(outputs)
        for b, lab, s in zip(o["boxes"], o["labels"], o["scores"])
        if lab == cls
    ]
    dets = sorted(dets, key=lambda d: -d[1])  # Python's sort is stable: ties keep input order
    used = {i: [False] * len(g) for i, g in gts.items()}
    tp, fp = [], []
    for i, _, box in dets:
        best, best_j = -1.0, -1
        for j, (g, _) in enumerate(gts[i]):
            o = _iou(box, g)
            if o > best:
                best, best_j = o, j
        if best >= thr:
            if gts[i][best_j][1]:
                continue
            if not used[i][best_j]:
                used[i][best_j] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    ctp, cfp, rec, prec = 0, 0, [], []
    for t, f in zip(tp, fp):
        ctp, cfp = ctp + t, cfp + f
        rec.append(ctp / npos)
        prec.append(ctp / max(ctp + cfp, np.finfo(np.float64).eps))
    if use_11pt:
        ap = 0.0
        for k in range(11):
            t = k / 10
            ps = [p for r, p in zip(rec, prec) if r >= t]
            ap += (max(ps) if ps else 0.0) / 11
        return ap
    mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    return sum((mrec[k + 1] - mrec[k]) * mpre[k + 1] for k in range(len(mrec) - 1) if mrec[k + 1] != mrec[k])


def _random_case(seed, n_images=30, n_classes=3):
    rng = np.random.default_rng(seed)
    records, outputs = [], []
    for i in range(n_images):
        n = int(rng.integers(0, 6)) if i % 7 else 0  # some empty images
        xy = rng.uniform(0, 80, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (n, 2))], 1)
        labels = rng.integers(1, n_classes + 1, n)
        records.append(Record(str(i), f"{i}.jpg", 128, 128, boxes, labels, difficult=rng.random(n) < 0.2))
        m = int(rng.integers(0, 8))
        src = rng.integers(0, max(n, 1), m)
        jitter = rng.normal(0, 4, (m, 4))
        det = (
            (boxes[src] + jitter) if n else np.concatenate([rng.uniform(0, 80, (m, 2))] * 2, 1) + [0, 0, 9, 9]
        )
        det = np.concatenate([det[:, :2], np.maximum(det[:, 2:], det[:, :2] + 1)], 1)
        dl = np.where(rng.random(m) < 0.8, labels[src] if n else 1, rng.integers(1, n_classes + 1, m))
        scores = rng.choice([0.3, 0.5, 0.7, 0.9], m)  # many ties
        outputs.append({"boxes": det.astype(np.float32), "labels": dl, "scores": scores.astype(np.float32)})
    return records, outputs


@pytest.mark.parametrize("seed", range(6))
def test_matches_plain_reference(seed):
    records, outputs = _random_case(seed)
    ev = VOCEvaluator(["a", "b", "c"])
    ev.process(records, outputs)
    for thr in (0.5, 0.75):
        for use_11pt in (False, True):
            ours = ev.per_class_ap(thr, use_11pt)
            for c in range(1, 4):
                ref = reference_ap(records, outputs, c, thr, use_11pt)
                if ref is None:
                    assert np.isnan(ours[c - 1])
                else:
                    assert abs(ours[c - 1] - ref) < 1e-9, (thr, use_11pt, c)
    summary = ev.summarize()
    assert summary["voc/AP50"] == pytest.approx(np.nanmean(ev.per_class_ap(0.5, False)), abs=1e-12)


def test_hand_computed_case():
    gt = Record(
        "0",
        "0.jpg",
        100,
        100,
        [[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]],
        [1, 1, 1],
        difficult=[False, False, True],
    )
    out = {
        "boxes": np.array(
            [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30], [80, 80, 90, 90]], np.float32
        ),
        "labels": np.array([1, 1, 1, 1, 1]),
        "scores": np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32),
    }
    ev = VOCEvaluator(["x"])
    ev.process([gt], [out])
    s = ev.summarize()
    # TP, FP (duplicate), TP, ignored (difficult), FP -> recall .5 .5 1 1; precision 1 .5 .667 .5
    assert s["voc/AP50"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert s["voc/AP50_11pt"] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert s["voc/AP50/x"] == s["voc/AP50"]


def test_no_detections_and_absent_classes():
    gt = Record("0", "0.jpg", 100, 100, [[0, 0, 10, 10]], [1])
    empty = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64), "scores": np.zeros(0)}
    ev = VOCEvaluator(["x", "y"])
    ev.process([gt, Record("1", "1.jpg", 10, 10)], [empty, empty])
    s = ev.summarize()
    assert s["voc/AP50/x"] == 0.0 and np.isnan(s["voc/AP50/y"]) and s["voc/AP50"] == 0.0
    with pytest.raises(ValueError, match="1 records but 2 outputs"):
        ev.process([gt], [empty, empty])


def test_the_bootstrap_is_the_ap_of_each_resampled_list_of_images():
    """Each resample's AP50 equals the evaluator's AP50 on the resampled list of images (copies of an
    image are other images with the same boxes), matched again from scratch."""
    from tools.engine.voc_eval import bootstrap_ap

    records, outputs = _random_case(3)
    scores = iter(np.random.default_rng(3).permutation(1000) / 1000)  # no ties across images
    outputs = [{**o, "scores": np.array([next(scores) for _ in o["scores"]], np.float32)} for o in outputs]
    ev = VOCEvaluator(["a", "b", "c"])
    ev.process(records, outputs)
    matched = [m for m in ev.matched(0.5) if m is not None]
    ours = bootstrap_ap(matched, len(records), resamples=20, seed=7)
    draws = np.random.default_rng(7).integers(0, len(records), size=(20, len(records)))
    for value, drawn in zip(ours, draws):
        again = VOCEvaluator(["a", "b", "c"])
        again.process([records[i] for i in drawn], [outputs[i] for i in drawn])
        assert value == pytest.approx(again.summarize()["voc/AP50"], abs=1e-12)


def test_the_interval_of_two_images_by_hand():
    """Image A: one box, found; image B: one box, missed. A resample of AA has AP 1, BB has 0, AB or
    BA 0.5 (recall 1/2 at precision 1): the 1,000 resamples hold these three values in about the
    shares 1/4, 1/4, 1/2, and the 95% interval is [0, 1]."""
    box = np.array([[0, 0, 10, 10]], np.float32)
    records = [Record(k, f"{k}.jpg", 20, 20, box, np.array([1])) for k in "AB"]
    found = {"boxes": box, "scores": np.array([0.9], np.float32), "labels": np.array([1])}
    none = {
        "boxes": np.zeros((0, 4), np.float32),
        "scores": np.zeros(0, np.float32),
        "labels": np.zeros(0, int),
    }
    ev = VOCEvaluator(["a"])
    ev.process(records, [found, none])
    summary = ev.summarize()
    assert summary["voc/AP50"] == pytest.approx(0.5)
    assert (summary["voc/AP50_ci95_lo"], summary["voc/AP50_ci95_hi"]) == (0.0, 1.0)
    assert summary["voc/eval_images"] == 2
    from tools.engine.voc_eval import bootstrap_ap

    aps = bootstrap_ap([m for m in ev.matched(0.5) if m is not None], 2, resamples=1000, seed=0)
    values, counts = np.unique(aps, return_counts=True)
    assert values.tolist() == [0.0, 0.5, 1.0]
    assert abs(counts[1] / 1000 - 0.5) < 0.05 and abs(counts[0] / 1000 - 0.25) < 0.05


def test_one_image_has_an_interval_of_its_own_ap():
    box = np.array([[0, 0, 10, 10]], np.float32)
    ev = VOCEvaluator(["a"])
    ev.process(
        [Record("A", "A.jpg", 20, 20, box, np.array([1]))],
        [{"boxes": box, "scores": np.array([0.9]), "labels": np.array([1])}],
    )
    s = ev.summarize()
    assert s["voc/AP50_ci95_lo"] == s["voc/AP50_ci95_hi"] == s["voc/AP50"] == 1.0
