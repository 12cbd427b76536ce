"""The ASM rules written as a plain per-box loop, one image at a time.

This is the obviously-correct statement of :mod:`asm.merge` (walk the certain boxes in score
order, let each consume the uncertain boxes it overlaps, then match greedily to GT). The tests and
``bench/bench_asm.py`` check that the vectorised implementation gives identical results.
"""

from __future__ import annotations

from asm.merge import ASMConfig
from datasets.records import Record


def iou(a, b) -> float:
    lt_x, lt_y = max(a[0], b[0]), max(a[1], b[1])
    rb_x, rb_y = min(a[2], b[2]), min(a[3], b[3])
    inter = max(rb_x - lt_x, 0.0) * max(rb_y - lt_y, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def merge_one(det: dict, gt: Record, cfg: ASMConfig) -> dict:
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
    return {"boxes": sa_boxes, "sl": sl, "drawn": drawn, "confirmed": confirmed, "deleted": deleted,
            "certain": len(kept), "uncertain": len(uncertain) + demoted, "demoted": demoted,
            "matched": len(match), "ratio": ratio}  # fmt: skip
