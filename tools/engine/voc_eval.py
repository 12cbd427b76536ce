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


def match_class(
    dets: list[tuple], gts: list[tuple], iou_thr: float
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Greedy devkit matching of one class over all images.

    Args:
        dets: per image ``(boxes [D, 4], scores [D])`` of this class.
        gts: per image ``(boxes [G, 4], difficult [G])`` of this class.
        iou_thr: IoU threshold for a true positive.

    Returns:
        ``(tp, fp, npos, images)``: flags in descending score order, the number of non-difficult
        boxes, and the image of each detection in that order.
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
    return tp, fp, npos, img[order]


def _curve(tp: np.ndarray, fp: np.ndarray, images: np.ndarray, npos_per_image: np.ndarray) -> tuple:
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return tp / npos_per_image.sum(), tp / np.maximum(tp + fp, np.finfo(np.float64).eps)


BOOTSTRAP_RESAMPLES = 1000  # resamples of the evaluation images behind ap50_ci95


def bootstrap_ap(matched: list[tuple], num_images: int, resamples: int, seed: int = 0) -> np.ndarray:
    """Mean AP (area definition) over classes for ``resamples`` bootstrap resamples of the images.

    A detection is right or wrong by its own image alone (the devkit matches within an image), so a
    resample keeps every detection's flag: each image drawn ``k`` times contributes its detections
    ``k`` times, next to one another in score order, and its boxes ``k`` times to the recall. This
    is the AP of the resampled list of images (ties in score across images aside), without matching
    again.

    Args:
        matched: per class ``(tp, fp, images, npos_per_image)``: :func:`match_class`'s flags and
            images in score order, and the class's non-difficult boxes in each image (``[num_images]``).
        num_images: the evaluation images.
        resamples: how many resamples.
        seed: of the resampling.

    Returns:
        ``[resamples]`` mean AP over the classes with a box in the resample (NaN: none has one).
    """
    draws = np.random.default_rng(seed).integers(0, num_images, size=(resamples, num_images))
    out = np.full(resamples, np.nan)
    for r, drawn in enumerate(draws):
        weight = np.bincount(drawn, minlength=num_images)
        aps = []
        for tp, fp, images, npos_per_image in matched:
            npos = int(weight @ npos_per_image)
            if npos == 0:
                continue
            times = weight[images]
            tp_r, fp_r = np.cumsum(np.repeat(tp, times)), np.cumsum(np.repeat(fp, times))
            precision = tp_r / np.maximum(tp_r + fp_r, np.finfo(np.float64).eps)
            aps.append(average_precision(tp_r / npos, precision, use_11pt=False))
        if aps:
            out[r] = float(np.mean(aps))
    return out


def ap50_interval(matched: list[tuple], num_images: int) -> dict[str, float]:
    """``voc/AP50_ci95_lo`` / ``_hi`` (the 2.5th and 97.5th percentiles of :func:`bootstrap_ap`,
    NaN with no box) and ``voc/eval_images``."""
    lo = hi = float("nan")
    if matched and num_images:
        aps = bootstrap_ap(matched, num_images, BOOTSTRAP_RESAMPLES)
        aps = aps[~np.isnan(aps)]
        if len(aps):
            lo, hi = (float(v) for v in np.percentile(aps, [2.5, 97.5]))
    return {"voc/AP50_ci95_lo": lo, "voc/AP50_ci95_hi": hi, "voc/eval_images": float(num_images)}


class VOCEvaluator(Evaluator):
    """``reset / process / summarize`` VOC mAP at IoU 0.5 and 0.75, both AP definitions.

    Keys of :meth:`summarize`: ``voc/AP50``, ``voc/AP75`` (area), ``voc/AP50_11pt``,
    ``voc/AP75_11pt``, and per class ``voc/AP50/<name>``, ``voc/AP75/<name>``.
    """

    def __init__(self, classes: Sequence[str], iou_thresholds: Sequence[float] = (0.5, 0.75)) -> None:
        self.classes = tuple(classes)
        self.iou_thresholds = tuple(iou_thresholds)
        self.reset()

    def matched(self, iou_thr: float, gathered=None) -> list[tuple | None]:
        """Per class ``(tp, fp, images, npos_per_image)`` (:func:`match_class`; ``npos_per_image``:
        the class's non-difficult boxes in each image), or None for a class without boxes."""
        records, outputs = gathered or self.gathered()
        out = []
        for c in range(1, len(self.classes) + 1):
            dets, gts = [], []
            for rec, o in zip(records, outputs):
                d = np.asarray(o["labels"]) == c
                g = rec.labels == c
                dets.append((np.asarray(o["boxes"])[d].reshape(-1, 4), np.asarray(o["scores"])[d]))
                gts.append((rec.boxes[g], (rec.difficult | rec.iscrowd)[g]))
            tp, fp, npos, images = match_class(dets, gts, iou_thr)
            out.append(None if npos == 0 else (tp, fp, images, np.array([int((~d).sum()) for _, d in gts])))
        return out

    def pr_curves(self, iou_thr: float, gathered=None) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per class ``(recall, precision)`` in score order, or None for a class without boxes."""
        return [None if m is None else _curve(*m) for m in self.matched(iou_thr, gathered)]

    @staticmethod
    def _aps(curves, use_11pt: bool) -> np.ndarray:
        return np.array([np.nan if c is None else average_precision(*c, use_11pt) for c in curves])

    def per_class_ap(self, iou_thr: float, use_11pt: bool) -> np.ndarray:
        """AP per class (``[C]``, NaN for a class without non-difficult boxes)."""
        return self._aps(self.pr_curves(iou_thr), use_11pt)

    def summarize(self) -> dict[str, float]:
        """The APs, and for AP50 a 95% bootstrap interval over the evaluation images
        (``voc/AP50_ci95_lo``, ``voc/AP50_ci95_hi``: :func:`bootstrap_ap`, seeded) and their number
        (``voc/eval_images``)."""
        out: dict[str, float] = {}
        gathered = self.gathered()
        for thr in self.iou_thresholds:
            tag = f"AP{round(thr * 100)}"
            matched = self.matched(thr, gathered)  # matching once: both AP definitions and the interval
            curves = [None if m is None else _curve(*m) for m in matched]
            if tag == "AP50":
                out.update(ap50_interval([m for m in matched if m is not None], len(gathered[0])))
            for use_11pt, suffix in ((False, ""), (True, "_11pt")):
                aps = self._aps(curves, use_11pt)
                valid = aps[~np.isnan(aps)]
                out[f"voc/{tag}{suffix}"] = float(valid.mean()) if len(valid) else float("nan")
                if not use_11pt:
                    out.update({f"voc/{tag}/{n}": float(a) for n, a in zip(self.classes, aps)})
        return out
