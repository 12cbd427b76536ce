"""Pascal VOC detection AP, as the devkit computes it.

Per class, detections of all images are ranked by score (ties keep image order, then the order
within the image: a stable sort). Each is matched to the unmatched ground-truth box of its class in
its image with the highest IoU; IoU >= threshold makes a true positive unless that box is
``difficult`` (then the detection is ignored: neither TP nor FP); otherwise a false positive.
Recall counts non-difficult boxes only; COCO crowd boxes are treated as difficult. Boxes are continuous pixel coordinates (no VOC "+1").

Two AP definitions: ``11pt`` (VOC2007: mean of the best precision at recall >= 0, 0.1, ..., 1) and
the area under the monotone precision envelope (VOC2010+). A class with no non-difficult box in
the split has no AP (NaN) and does not count in the mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from tools.engine.evaluator import Evaluator


def average_precision(recall: np.ndarray, precision: np.ndarray, use_11pt: bool) -> float:
    """AP from a precision/recall curve (recall increasing)."""
    if use_11pt:
        ap = 0.0
        for t in np.arange(11) / 10:  # exact tenths (the devkit's arange(0, 1.1, .1) drifts)
            ap += (precision[recall >= t].max() if (recall >= t).any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def match_class(dets: list[tuple], gts: list[tuple], iou_thr: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy devkit matching of one class over all images.

    Args:
        dets: per image ``(boxes [D, 4], scores [D])`` of this class.
        gts: per image ``(boxes [G, 4], difficult [G])`` of this class.
        iou_thr: IoU threshold for a true positive.

    Returns:
        ``(tp, fp, npos)``: flags in descending score order and the number of non-difficult boxes.
    """
    npos = int(sum((~d).sum() for _, d in gts))
    img = np.concatenate([np.full(len(s), i) for i, (_, s) in enumerate(dets)]) if dets else np.zeros(0, int)
    scores = np.concatenate([s for _, s in dets]) if dets else np.zeros(0)
    local = np.concatenate([np.arange(len(s)) for _, s in dets]) if dets else np.zeros(0, int)
    order = np.argsort(-scores, kind="stable")
    ious = [
        box_iou(torch.as_tensor(b, dtype=torch.float64), torch.as_tensor(g, dtype=torch.float64)).numpy()
        for (b, _), (g, _) in zip(dets, gts)
    ]
    used = [np.zeros(len(g), bool) for g, _ in gts]
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, k in enumerate(order):
        i, j = img[k], local[k]
        row = ious[i][j] if ious[i].shape[1] else np.zeros(0)
        if len(row) and row.max() >= iou_thr:
            best = int(row.argmax())
            if gts[i][1][best]:
                continue  # difficult: ignored
            if not used[i][best]:
                used[i][best] = True
                tp[rank] = 1
            else:
                fp[rank] = 1
        else:
            fp[rank] = 1
    return tp, fp, npos


class VOCEvaluator(Evaluator):
    """``reset / process / summarize`` VOC mAP at IoU 0.5 and 0.75, both AP definitions.

    Keys of :meth:`summarize`: ``voc/AP50``, ``voc/AP75`` (area), ``voc/AP50_11pt``,
    ``voc/AP75_11pt``, and per class ``voc/AP50/<name>``, ``voc/AP75/<name>``.
    """

    def __init__(self, classes: Sequence[str], iou_thresholds: Sequence[float] = (0.5, 0.75)) -> None:
        self.classes = tuple(classes)
        self.iou_thresholds = tuple(iou_thresholds)
        self.reset()

    def pr_curves(self, iou_thr: float, gathered=None) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per class ``(recall, precision)`` in score order, or None for a class without boxes."""
        records, outputs = gathered or self.gathered()
        curves = []
        for c in range(1, len(self.classes) + 1):
            dets, gts = [], []
            for rec, out in zip(records, outputs):
                d = np.asarray(out["labels"]) == c
                g = rec.labels == c
                dets.append((np.asarray(out["boxes"])[d].reshape(-1, 4), np.asarray(out["scores"])[d]))
                gts.append((rec.boxes[g], (rec.difficult | rec.iscrowd)[g]))
            tp, fp, npos = match_class(dets, gts, iou_thr)
            if npos == 0:
                curves.append(None)
                continue
            tp, fp = np.cumsum(tp), np.cumsum(fp)
            curves.append((tp / npos, tp / np.maximum(tp + fp, np.finfo(np.float64).eps)))
        return curves

    @staticmethod
    def _aps(curves, use_11pt: bool) -> np.ndarray:
        return np.array([np.nan if c is None else average_precision(*c, use_11pt) for c in curves])

    def per_class_ap(self, iou_thr: float, use_11pt: bool) -> np.ndarray:
        """AP per class (``[C]``, NaN for a class without non-difficult boxes)."""
        return self._aps(self.pr_curves(iou_thr), use_11pt)

    def summarize(self) -> dict[str, float]:
        out: dict[str, float] = {}
        gathered = self.gathered()
        for thr in self.iou_thresholds:
            tag = f"AP{round(thr * 100)}"
            curves = self.pr_curves(thr, gathered)  # matching once; both AP definitions read the same curves
            for use_11pt, suffix in ((False, ""), (True, "_11pt")):
                aps = self._aps(curves, use_11pt)
                valid = aps[~np.isnan(aps)]
                out[f"voc/{tag}{suffix}"] = float(valid.mean()) if len(valid) else float("nan")
                if not use_11pt:
                    out.update({f"voc/{tag}/{n}": float(a) for n, a in zip(self.classes, aps)})
        return out
