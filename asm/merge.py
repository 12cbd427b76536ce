"""The ASM decision rules for a batch of images: split, rejudge, merge with ground truth, score.

Pure functions over arrays and records (no model, no disk, no globals). For each image, given the
detections sorted by score and the oracle's ground truth:

1. **Split** by score: certain = ``score >= certain_thre``; uncertain =
   ``uncertain_thre <= score < certain_thre``; lower scores are ignored.
2. **Rejudge** (ASM_core): each uncertain box is *consumed* by the highest-scoring certain box it
   overlaps at IoU >= ``judge_iou``. A certain box that consumed uncertain boxes, none of them with
   its label, is demoted (another class competes for the object). Because consumption does not
   depend on demotion, the rule needs no sequential loop and is computed for all images at once
   (the IoU of the certain x uncertain blocks only: detections come sorted by score).
3. **Merge with GT** (the simulated human): certain boxes are matched one-to-one to GT boxes of
   their class at IoU >= ``gt_iou``, greedily by score (each takes its best free GT box). A matched
   GT box is replaced by the model's box and counts as **SL** (confirmed); an unmatched GT box stays
   and counts as **AL** (drawn); an unmatched certain box is a false positive the human **deletes**.
4. **AL ann_ratio** = AL / (AL + SL). An image without GT boxes has ratio 0.0 when the model also
   found nothing certain (nothing to draw, nothing wrong) and 1.0 when the human had to delete
   false positives (the model is wrong there).

Ablations: with ``enable_sl=False`` no model box is used (the human draws every GT box: all AL);
with ``enable_al=False`` no GT is used for the labels: the certain boxes *are* the SA annotation
(pseudo-labels), AL = 0, and the ratio becomes the model-only share of uncertain boxes
``U / (U + C)``. Precision against GT is still measured and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datasets.records import Record


@dataclass(frozen=True)
class ASMConfig:
    certain_thre: float = 0.8
    uncertain_thre: float = 0.3
    judge_iou: float = 0.5
    gt_iou: float = 0.8
    enable_al: bool = True
    enable_sl: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.uncertain_thre <= self.certain_thre <= 1:
            raise ValueError(f"need 0 <= uncertain_thre <= certain_thre <= 1, got {self.uncertain_thre}, "
                             f"{self.certain_thre}")  # fmt: skip
        for name in ("judge_iou", "gt_iou"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")


@dataclass
class MergeResult:
    """What the human did on one image and the SA annotation that came out of it.

    ``sa.masks`` is not touched: SL boxes keep the GT mask. ``sl`` flags the SA boxes that came
    from the model (confirmed by the human); the others were drawn (AL).
    """

    sa: Record
    sl: np.ndarray  # bool [len(sa)]
    drawn: int  # AL boxes
    confirmed: int  # SL boxes
    deleted: int  # certain boxes shown to the human that matched no GT
    certain: int  # certain boxes after rejudge
    uncertain: int  # uncertain boxes after rejudge (demoted ones included)
    demoted: int  # certain boxes demoted by rejudge
    matched: int  # certain boxes that match GT: the pseudo-label precision is matched / certain
    ratio: float  # AL ann_ratio
    sl_score: float = 0.0  # sum of the detection scores of the matched certain boxes
    deleted_boxes: np.ndarray | None = None  # [deleted, 4] the false positives the human removed


def _pad(arrays: Sequence[np.ndarray], width: int, fill: float, shape: tuple = ()) -> np.ndarray:
    out = np.full((len(arrays), max(width, 1), *shape), fill, dtype=np.float64)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def batched_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of padded box sets ``[B, N, 4]`` x ``[B, M, 4]`` -> ``[B, N, M]`` (float64, as ``box_iou``).

    Written with in-place operations: on 1,000 images x 100 detections this is most of the work.
    """
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    w = np.minimum(a[:, :, None, 2], b[:, None, :, 2])
    w -= np.maximum(a[:, :, None, 0], b[:, None, :, 0])
    np.maximum(w, 0.0, out=w)
    h = np.minimum(a[:, :, None, 3], b[:, None, :, 3])
    h -= np.maximum(a[:, :, None, 1], b[:, None, :, 1])
    np.maximum(h, 0.0, out=h)
    w *= h  # intersection
    union = area_a[:, :, None] + area_b[:, None, :]
    union -= w
    ok = union > 0
    np.divide(w, union, out=w, where=ok)
    w[~ok] = 0.0
    return w


def split_and_rejudge(dets: Sequence[dict], cfg: ASMConfig) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Certain (after rejudge) and uncertain flags per image, and the number demoted.

    Args:
        dets: per image ``boxes`` ``[D, 4]`` xyxy, ``labels`` ``[D]``, ``scores`` ``[D]`` sorted by
            descending score, so that certain boxes come first and uncertain ones next.
    """
    sizes = np.array([len(d["scores"]) for d in dets])
    n = max(int(sizes.max(initial=0)), 1)
    scores = np.full((len(dets), n), -1.0)  # below any threshold; scores are probabilities
    boxes = np.zeros((len(dets), n, 4))
    labels = np.full((len(dets), n), -1, dtype=np.int64)
    for i, d in enumerate(dets):
        k = sizes[i]
        scores[i, :k] = d["scores"]
        boxes[i, :k] = np.asarray(d["boxes"]).reshape(-1, 4)
        labels[i, :k] = d["labels"]
    if (np.diff(scores, axis=1) > 0).any():
        raise ValueError("detections must be sorted by descending score")
    n_cert = (scores >= cfg.certain_thre).sum(1)
    n_unc = (scores >= cfg.uncertain_thre).sum(1) - n_cert
    nc, nu = max(int(n_cert.max(initial=0)), 1), max(int(n_unc.max(initial=0)), 1)
    c_valid = np.arange(nc)[None, :] < n_cert[:, None]
    u_valid = np.arange(nu)[None, :] < n_unc[:, None]
    u_idx = np.minimum(n_cert[:, None] + np.arange(nu)[None, :], n - 1)
    cb = np.where(c_valid[..., None], boxes[:, :nc] if nc <= n else 0.0, 0.0)
    ub = np.where(u_valid[..., None], np.take_along_axis(boxes, u_idx[..., None], 1), 0.0)
    cl = labels[:, :nc]
    ul = np.take_along_axis(labels, u_idx, 1)
    overlap = batched_iou(cb, ub) >= cfg.judge_iou  # padding boxes are empty: IoU 0 < judge_iou
    # each uncertain box belongs to the first (highest-scoring) certain box overlapping it
    first = np.where(overlap.any(1), overlap.argmax(1), -1)  # [B, nu]
    bi, ui = np.nonzero(first >= 0)
    ci = first[bi, ui]
    owns = np.zeros((len(dets), nc), bool)
    owns[bi, ci] = True
    same = ul[bi, ui] == cl[bi, ci]
    owns_same = np.zeros((len(dets), nc), bool)
    owns_same[bi[same], ci[same]] = True
    demote = owns & ~owns_same & c_valid
    certain, uncertain = [], []
    for i in range(len(dets)):
        c, u = n_cert[i], n_unc[i]
        flags = np.zeros(sizes[i], bool)
        flags[:c] = ~demote[i, :c]
        certain.append(flags)
        unc = np.zeros(sizes[i], bool)
        unc[c : c + u] = True
        uncertain.append(unc)
    return certain, uncertain, demote.sum(1).tolist()


def match_to_gt(det_boxes: Sequence[np.ndarray], det_labels: Sequence[np.ndarray], gts: Sequence[Record],
                gt_iou: float) -> list[np.ndarray]:  # fmt: skip
    """For each image, the GT index matched by each certain box (-1 = none), greedy by score.

    Box ``r`` takes its best free same-class GT box at IoU >= ``gt_iou``; the greedy walk goes
    over the box rank, for all images of the batch at once.
    """
    n = max([len(b) for b in det_boxes] + [1])
    m = max([len(g) for g in gts] + [1])
    iou = batched_iou(_pad(det_boxes, n, 0.0, (4,)), _pad([g.boxes for g in gts], m, 0.0, (4,)))
    same = _pad(det_labels, n, -1)[:, :, None] == _pad([g.labels for g in gts], m, -2)[:, None, :]
    iou = np.where(same & (iou >= gt_iou), iou, -1.0)
    free = np.ones((len(gts), m), bool)
    match = np.full((len(gts), n), -1)
    rows = np.arange(len(gts))
    for r in range(n):
        cand = np.where(free, iou[:, r, :], -1.0)
        best = cand.argmax(1)
        ok = cand[rows, best] >= 0
        match[ok, r] = best[ok]
        free[rows[ok], best[ok]] = False
    return [match[i, : len(b)] for i, b in enumerate(det_boxes)]


def merge_batch(dets: Sequence[dict], gts: Sequence[Record], cfg: ASMConfig, chunk: int = 256) -> list[MergeResult]:
    """Apply split, rejudge and merge to a batch of images; see the module docstring.

    Raises:
        ValueError: a detection list not sorted by descending score, or mismatched lengths.
    """
    if len(dets) != len(gts):
        raise ValueError(f"{len(dets)} detections but {len(gts)} ground-truth records")
    if len(dets) > chunk:  # bound the padded [B, N, M] arrays; similar sizes share a chunk
        order = sorted(range(len(dets)), key=lambda i: len(dets[i]["scores"]))
        out: list[MergeResult | None] = [None] * len(dets)
        for start in range(0, len(order), chunk):
            idx = order[start : start + chunk]
            for i, r in zip(idx, merge_batch([dets[i] for i in idx], [gts[i] for i in idx], cfg)):
                out[i] = r
        return out
    certain, uncertain, demoted = split_and_rejudge(dets, cfg)
    c_boxes = [np.asarray(d["boxes"], np.float32).reshape(-1, 4)[c] for d, c in zip(dets, certain)]
    c_labels = [np.asarray(d["labels"], np.int64)[c] for d, c in zip(dets, certain)]
    matches = match_to_gt(c_boxes, c_labels, gts, cfg.gt_iou)
    results = [_result(gt, cb, cl, mt, int(u.sum()) + dm, dm, cfg)
               for gt, cb, cl, mt, u, dm in zip(gts, c_boxes, c_labels, matches, uncertain, demoted)]  # fmt: skip
    for r, d, c, mt in zip(results, dets, certain, matches):
        r.sl_score = float(np.asarray(d["scores"], np.float64)[c][mt >= 0].sum())
    return results


def _result(gt: Record, c_boxes, c_labels, match, n_uncertain: int, demoted: int, cfg: ASMConfig) -> MergeResult:
    n_certain = len(c_boxes)
    matched = match >= 0
    n_matched = int(matched.sum())
    if not cfg.enable_al:  # pseudo-labels only: the certain boxes are the annotation, no human
        sa = Record(gt.image_id, gt.file_name, gt.width, gt.height, c_boxes, c_labels)
        total = n_uncertain + n_certain
        return MergeResult(sa, np.ones(n_certain, bool), 0, 0, 0, n_certain, n_uncertain, demoted, n_matched,
                           n_uncertain / total if total else 0.0)  # fmt: skip
    if not cfg.enable_sl:  # the human draws every box; model boxes are never shown
        return MergeResult(gt.select(np.ones(len(gt), bool)), np.zeros(len(gt), bool), len(gt), 0, 0, n_certain,
                           n_uncertain, demoted, n_matched, 1.0 if len(gt) else 0.0)  # fmt: skip
    sa = gt.select(np.ones(len(gt), bool))  # a copy: the oracle's record is never edited
    sl = np.zeros(len(gt), bool)
    sa.boxes[match[matched]] = c_boxes[matched]
    sl[match[matched]] = True
    deleted = n_certain - n_matched
    drawn = len(gt) - n_matched
    ratio = drawn / len(gt) if len(gt) else (1.0 if deleted else 0.0)
    return MergeResult(sa, sl, drawn, n_matched, deleted, n_certain, n_uncertain, demoted, n_matched, ratio,
                       deleted_boxes=c_boxes[~matched])  # fmt: skip
