"""The oracle of :mod:`asm.merge`: the ASM rules as a plain per-box loop, one image at a time.

The obviously-correct statement of the rules (walk the certain boxes in score order, let each
consume the uncertain boxes it overlaps, then match greedily to GT). The tests and
``bench/bench_asm.py`` check that :func:`asm.merge.merge_batch` gives identical results.
"""

from __future__ import annotations

import numpy as np

from asm.merge import ASMConfig
from datasets.records import Record


def iou(a, b) -> float:
    lt_x, lt_y = max(a[0], b[0]), max(a[1], b[1])
    rb_x, rb_y = min(a[2], b[2]), min(a[3], b[3])
    inter = max(rb_x - lt_x, 0.0) * max(rb_y - lt_y, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def merge_by_loop(det: dict, gt: Record, cfg: ASMConfig) -> dict:
    """Counts and SA boxes of one image, by loops. Keys as :class:`asm.merge.MergeResult`."""
    boxes = [list(map(float, b)) for b in det["boxes"]]
    labels, scores = [int(v) for v in det["labels"]], [float(v) for v in det["scores"]]
    certain = [i for i, s in enumerate(scores) if s >= cfg.certain_thre]
    uncertain = [i for i, s in enumerate(scores) if cfg.uncertain_thre <= s < cfg.certain_thre]
    consumed, kept, demoted = set(), [], 0
    for c in certain:  # in score order
        owned = [u for u in uncertain if u not in consumed and iou(boxes[c], boxes[u]) >= cfg.judge_iou]
        consumed.update(owned)
        if owned and all(labels[u] != labels[c] for u in owned):
            demoted += 1
        else:
            kept.append(c)
    gt_boxes = [list(map(float, b)) for b in gt.boxes]
    match, free = {}, [True] * len(gt_boxes)
    for c in kept:
        best, best_j = -1.0, -1
        for j, g in enumerate(gt_boxes):
            o = iou(boxes[c], g)
            if free[j] and int(gt.labels[j]) == labels[c] and o >= cfg.gt_iou and o > best:
                best, best_j = o, j
        if best_j >= 0:
            match[c] = best_j
            free[best_j] = False
    sa_boxes = [list(g) for g in gt_boxes]
    sl = [False] * len(gt_boxes)
    for c, j in match.items():
        sa_boxes[j] = boxes[c]
        sl[j] = True
    drawn, confirmed, deleted = len(gt_boxes) - len(match), len(match), len(kept) - len(match)
    ratio = drawn / len(gt_boxes) if gt_boxes else (1.0 if deleted else 0.0)
    return {
        "boxes": sa_boxes,
        "sl": sl,
        "drawn": drawn,
        "confirmed": confirmed,
        "deleted": deleted,
        "certain": len(kept),
        "uncertain": len(uncertain) + demoted,
        "demoted": demoted,
        "matched": len(match),
        "ratio": ratio,
    }


def random_batch(rng, n_images: int, max_gt: int, n_dets: int | None = None, classes: int = 3):
    """Random GT records and detections around them (some jittered, some relabelled, ties in scores).

    Args:
        rng: a ``numpy.random.Generator``.
        n_images: images in the batch.
        max_gt: GT boxes per image are drawn from ``0..max_gt-1``.
        n_dets: detections per image (default: random ``0..2*max_gt``).

    Returns:
        ``(dets, gts)`` as :func:`asm.merge.merge_batch` takes them.
    """
    dets, gts = [], []
    for i in range(n_images):
        n = int(rng.integers(0, max_gt))
        xy = rng.uniform(0, 100, (n, 2))
        gt_boxes = np.concatenate([xy, xy + rng.uniform(10, 50, (n, 2))], 1)
        gt_labels = rng.integers(1, classes + 1, n)
        gts.append(Record(str(i), f"{i}.jpg", 200, 200, gt_boxes, gt_labels))
        m = int(rng.integers(0, 2 * max_gt)) if n_dets is None else n_dets
        src = rng.integers(0, max(n, 1), m)
        base = gt_boxes[src] if n else np.tile([50.0, 50, 80, 80], (m, 1))
        boxes = base + rng.normal(0, 1, (m, 1)) * rng.choice([0.5, 3.0], (m, 1)) * rng.normal(0, 1, (m, 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.where(rng.random(m) < 0.8, gt_labels[src] if n else 1, rng.integers(1, classes + 1, m))
        scores = np.sort(rng.choice([0.2, 0.35, 0.5, 0.79, 0.8, 0.9, 0.99], m))[::-1]
        dets.append({"boxes": boxes.astype(np.float32), "labels": labels, "scores": scores})
    return dets, gts


def same_result(result, ref: dict) -> bool:
    """Whether a :class:`asm.merge.MergeResult` equals the loop's result exactly."""
    keys = ("drawn", "confirmed", "deleted", "certain", "uncertain", "demoted", "matched", "ratio")
    return (
        result.sa.boxes.tolist() == np.asarray(ref["boxes"], np.float32).reshape(-1, 4).tolist()
        and result.sl.tolist() == ref["sl"]
        and all(getattr(result, k) == ref[k] for k in keys)
    )
