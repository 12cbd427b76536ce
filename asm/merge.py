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

Each image is a few small NumPy arrays: merging takes ~0.4 ms per image of 100 detections, a
small fraction of detecting it (``bench/bench_asm.py``: ``merge_fraction_of_detect``). The IoU is
computed in float64 in the order of a per-box loop, so every decision equals the loop's bit for bit
(``tests/asm_oracle.py``).

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
    move_iou: float = (
        0.5  # a certain box this close to a GT box of its class is moved, not redrawn (asm.edits)
    )

    def __post_init__(self) -> None:
        if not 0 <= self.uncertain_thre <= self.certain_thre <= 1:
            raise ValueError(
                f"need 0 <= uncertain_thre <= certain_thre <= 1, got {self.uncertain_thre}, "
                f"{self.certain_thre}"
            )
        for name in ("judge_iou", "gt_iou", "move_iou"):
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
    loose: int = 0  # unmatched certain boxes on an object of their class at IoU in [0.5, gt_iou)
    wrong_class: int = 0  # other unmatched certain boxes on an object of another class at IoU >= 0.5
    deleted_boxes: np.ndarray | None = None  # [deleted, 4] the false positives the human removed
    deleted_labels: np.ndarray | None = None  # [deleted] their classes
    moved: np.ndarray | None = (
        None  # bool [len(sa)]: AL boxes made by moving a model box (asm.edits.count_moves)
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` of ``[N, 4]`` x ``[M, 4]`` xyxy boxes in float64 (``torchvision.ops.box_iou``'s
    formula; 0 where the union is not positive, e.g. two empty boxes)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0.0)
    h = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0.0)
    inter = w * h
    union = (
        ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
        + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        - inter
    )
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def rejudge(det: dict, cfg: ASMConfig) -> tuple[np.ndarray, int, int]:
    """Split one image's detections (sorted by descending score) and rejudge the certain ones.

    Returns:
        ``(kept, n_certain, n_uncertain)``: bool ``[n_certain]`` flags of the certain boxes (the
        first ``n_certain`` rows) that survive rejudge, and how many rows are certain and uncertain
        before it (the uncertain ones follow the certain ones).
    """
    scores = np.asarray(det["scores"], np.float64).reshape(-1)
    if (np.diff(scores) > 0).any():
        raise ValueError("detections must be sorted by descending score")
    nc = int((scores >= cfg.certain_thre).sum())
    nu = int((scores >= cfg.uncertain_thre).sum()) - nc
    boxes, labels = np.asarray(det["boxes"]).reshape(-1, 4), np.asarray(det["labels"])
    kept = np.ones(nc, bool)
    if not (nc and nu):
        return kept, nc, nu
    overlap = box_iou(boxes[:nc], boxes[nc : nc + nu]) >= cfg.judge_iou  # [certain, uncertain]
    owned = overlap.any(0)  # each uncertain box goes to the first certain box overlapping it
    owner, unc = overlap.argmax(0)[owned], np.flatnonzero(owned) + nc
    same = labels[unc] == labels[owner]
    kept[owner] = False  # demoted unless one of the boxes it owns has its class
    kept[owner[same]] = True
    return kept, nc, nu


def split_and_rejudge(
    dets: Sequence[dict], cfg: ASMConfig
) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Per image: certain flags (after rejudge), uncertain flags (before it), and the number demoted."""
    certain, uncertain, demoted = [], [], []
    for det in dets:
        kept, nc, nu = rejudge(det, cfg)
        flags = np.zeros((2, len(det["scores"])), bool)
        flags[0, :nc], flags[1, nc : nc + nu] = kept, True
        certain.append(flags[0])
        uncertain.append(flags[1])
        demoted.append(int(nc - kept.sum()))
    return certain, uncertain, demoted


def match_gt(
    boxes: np.ndarray, labels: np.ndarray, gt: Record, gt_iou: float, free: np.ndarray | None = None
) -> np.ndarray:
    """GT index matched by each box (-1: none): in score order, each box takes its best free GT box
    of its class at IoU >= ``gt_iou`` (ties: the lower GT index). ``free``: the GT boxes that may be
    taken (default: all)."""
    match = np.full(len(boxes), -1)
    iou = box_iou(boxes, gt.boxes)
    iou[(iou < gt_iou) | (labels[:, None] != gt.labels[None, :])] = -1.0
    free = np.ones(len(gt), bool) if free is None else free.copy()
    for r in np.flatnonzero((iou >= 0).any(1)):
        row = np.where(free, iou[r], -1.0)
        j = int(row.argmax())
        if row[j] >= 0:
            match[r], free[j] = j, False
    return match


ERROR_IOU = 0.5  # a certain box on an object at this IoU is loose or of the wrong class, not on nothing


def certain_errors(boxes: np.ndarray, labels: np.ndarray, match: np.ndarray, gt: Record) -> tuple[int, int]:
    """Of the certain boxes that matched no GT box (``match`` -1): ``loose``, matched one-to-one to a
    free GT box of their class at IoU >= 0.5; ``wrong_class``, the others on a GT box of another
    class at IoU >= 0.5. The rest lie on no object."""
    miss = match < 0
    if not miss.any() or len(gt) == 0:
        return 0, 0
    free = np.ones(len(gt), bool)
    free[match[~miss]] = False
    loose = match_gt(boxes[miss], labels[miss], gt, ERROR_IOU, free) >= 0
    iou = box_iou(boxes[miss][~loose], gt.boxes)
    other = (iou >= ERROR_IOU) & (labels[miss][~loose][:, None] != gt.labels[None, :])
    return int(loose.sum()), int(other.any(1).sum())


def merge_one(det: dict, gt: Record, cfg: ASMConfig) -> MergeResult:
    """Split, rejudge and merge one image with its ground truth; see the module docstring."""
    kept, nc, nu = rejudge(det, cfg)
    demoted = nc - int(kept.sum())
    boxes = np.asarray(det["boxes"], np.float32)[:nc][kept]
    labels = np.asarray(det["labels"], np.int64)[:nc][kept]
    scores = np.asarray(det["scores"], np.float64)[:nc][kept]
    match = match_gt(boxes, labels, gt, cfg.gt_iou)
    hit = match >= 0
    n_cert, n_unc, n_hit = len(boxes), nu + demoted, int(hit.sum())
    loose, wrong_class = certain_errors(boxes, labels, match, gt)
    counts = {
        "certain": n_cert,
        "uncertain": n_unc,
        "demoted": demoted,
        "matched": n_hit,
        "sl_score": float(scores[hit].sum()),
        "loose": loose,
        "wrong_class": wrong_class,
    }
    if not cfg.enable_al:  # pseudo-labels only: the certain boxes are the annotation, no human
        sa = Record(gt.image_id, gt.file_name, gt.width, gt.height, boxes, labels)
        ratio = n_unc / (n_unc + n_cert) if n_unc + n_cert else 0.0
        return MergeResult(sa, np.ones(n_cert, bool), 0, 0, 0, ratio=ratio, **counts)
    sa_boxes, sl = gt.boxes.copy(), np.zeros(len(gt), bool)
    masks = None if gt.masks is None else list(gt.masks)
    sa = Record.trusted(
        gt.image_id,
        gt.file_name,
        gt.width,
        gt.height,
        sa_boxes,
        gt.labels.copy(),
        gt.difficult.copy(),
        gt.iscrowd.copy(),
        masks,
    )
    if not cfg.enable_sl:  # the human draws every box; model boxes are never shown
        return MergeResult(sa, sl, len(gt), 0, 0, ratio=float(len(gt) > 0), **counts)
    sa_boxes[match[hit]] = boxes[hit]  # a matched GT box takes the model's coordinates: SL
    sl[match[hit]] = True
    deleted = n_cert - n_hit
    ratio = (len(gt) - n_hit) / len(gt) if len(gt) else float(deleted > 0)
    return MergeResult(
        sa,
        sl,
        len(gt) - n_hit,
        n_hit,
        deleted,
        ratio=ratio,
        deleted_boxes=boxes[~hit],
        deleted_labels=labels[~hit],
        **counts,
    )


def merge_batch(dets: Sequence[dict], gts: Sequence[Record], cfg: ASMConfig) -> list[MergeResult]:
    """:func:`merge_one` for each image of a batch.

    Raises:
        ValueError: a detection list not sorted by descending score, or mismatched lengths.
    """
    if len(dets) != len(gts):
        raise ValueError(f"{len(dets)} detections but {len(gts)} ground-truth records")
    return [merge_one(d, g, cfg) for d, g in zip(dets, gts)]
