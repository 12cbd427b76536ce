"""The ASM decision rules for a batch of images: split, rejudge, merge with ground truth, score.

Pure functions over arrays and records (no model, no disk, no globals). For each image, given the
detections sorted by score and the oracle's ground truth:

1. **Split** by score: certain = ``score >= certain_thre``; uncertain =
   ``uncertain_thre <= score < certain_thre``; lower scores are ignored.
2. **Rejudge** (ASM_core): each uncertain box is *consumed* by the highest-scoring certain box it
   overlaps at IoU >= ``judge_iou``. A certain box that consumed uncertain boxes, none of them with
   its label, is demoted (another class competes for the object). Because consumption does not
   depend on demotion, the rule needs no sequential loop and is computed for all images at once.
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
import torch

from datasets.records import Record


@dataclass(frozen=True)
class ASMConfig:
    certain_thre: float = 0.8
    uncertain_thre: float = 0.3
    judge_iou: float = 0.5
    gt_iou: float = 0.8
    enable_al: bool = True
    enable_sl: bool = True


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


def _pad(arrays: Sequence[np.ndarray], width: int, fill: float, shape: tuple = ()) -> torch.Tensor:
    out = np.full((len(arrays), width, *shape), fill, dtype=np.float64)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return torch.from_numpy(out)


def batched_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of padded box sets ``[B, N, 4]`` x ``[B, M, 4]`` -> ``[B, N, M]`` (as ``box_iou``)."""
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    lt = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, :, None] + area_b[:, None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def split_and_rejudge(dets: Sequence[dict], cfg: ASMConfig) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Certain (after rejudge) and uncertain flags per image, and the number demoted.

    Args:
        dets: per image ``boxes`` ``[D, 4]`` xyxy, ``labels`` ``[D]``, ``scores`` ``[D]`` sorted by
            descending score.
    """
    n = max([len(d["scores"]) for d in dets] + [1])
    boxes = _pad([np.asarray(d["boxes"]).reshape(-1, 4) for d in dets], n, 0.0, (4,))
    labels = _pad([d["labels"] for d in dets], n, -1).long()
    scores = _pad([d["scores"] for d in dets], n, -1.0)
    certain = scores >= cfg.certain_thre
    uncertain = (scores >= cfg.uncertain_thre) & ~certain
    overlap = (batched_iou(boxes, boxes) >= cfg.judge_iou) & certain[:, :, None] & uncertain[:, None, :]
    # each uncertain box belongs to the first (highest-scoring) certain box overlapping it
    first = torch.where(overlap.any(1), overlap.int().argmax(1), -1)  # [B, n]
    owned = first[:, None, :] == torch.arange(n)[None, :, None]  # [B, c, u]
    same = labels[:, :, None] == labels[:, None, :]
    demote = certain & owned.any(2) & ~(owned & same).any(2)
    kept = certain & ~demote
    sizes = [len(d["scores"]) for d in dets]
    return ([kept[i, :k].numpy() for i, k in enumerate(sizes)], [uncertain[i, :k].numpy() for i, k in enumerate(sizes)],
            demote.sum(1).tolist())  # fmt: skip


def match_to_gt(det_boxes: Sequence[np.ndarray], det_labels: Sequence[np.ndarray], gts: Sequence[Record],
                gt_iou: float) -> list[np.ndarray]:  # fmt: skip
    """For each image, the GT index matched by each certain box (-1 = none), greedy by score.

    Every box first takes its best same-class GT box at IoU >= ``gt_iou``; only in an image where
    two boxes pick the same GT box (rare at IoU 0.8) is the sequential greedy run.
    """
    n = max([len(b) for b in det_boxes] + [1])
    m = max([len(g) for g in gts] + [1])
    iou = batched_iou(_pad(det_boxes, n, 0.0, (4,)), _pad([g.boxes for g in gts], m, 0.0, (4,)))
    same = _pad(det_labels, n, -1)[:, :, None] == _pad([g.labels for g in gts], m, -2)[:, None, :]
    iou = torch.where(same & (iou >= gt_iou), iou, torch.full_like(iou, -1.0))
    best = torch.where(iou.max(2).values >= 0, iou.argmax(2), -1)
    out = []
    for i, (boxes, gt) in enumerate(zip(det_boxes, gts)):
        match = best[i, : len(boxes)].numpy()
        taken = match[match >= 0]
        if len(np.unique(taken)) != len(taken):
            match = _greedy(iou[i, : len(boxes), : len(gt)].numpy())
        out.append(match)
    return out


def _greedy(iou: np.ndarray) -> np.ndarray:
    """Sequential greedy matching on a masked IoU matrix (-1 = not allowed), rows in score order."""
    match = np.full(len(iou), -1)
    free = np.ones(iou.shape[1], bool)
    for r in range(len(iou)):
        row = np.where(free, iou[r], -1.0)
        if len(row) and row.max() >= 0:
            match[r] = int(row.argmax())
            free[match[r]] = False
    return match


def merge_batch(dets: Sequence[dict], gts: Sequence[Record], cfg: ASMConfig, chunk: int = 256) -> list[MergeResult]:
    """Apply split, rejudge and merge to a batch of images; see the module docstring."""
    if len(dets) != len(gts):
        raise ValueError(f"{len(dets)} detections but {len(gts)} ground-truth records")
    if len(dets) > chunk:  # bound the padded [B, D, D] tensors
        return [r for i in range(0, len(dets), chunk) for r in merge_batch(dets[i : i + chunk], gts[i : i + chunk], cfg)]
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
    return MergeResult(sa, sl, drawn, n_matched, deleted, n_certain, n_uncertain, demoted, n_matched, ratio)
