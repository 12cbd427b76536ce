"""Which images the human sees and where the model is sure: pure rules over detections.

* :func:`choose_informative`: from ``C x K`` candidate images, the ``K`` with the largest predicted
  share of uncertain boxes (what the human will have to draw), with a bonus for a class mix unlike
  the images already chosen (greedy, so the batch is not ``K`` copies of one kind of image).
* :func:`class_thresholds`: per class, the lowest score above which the model's detections on
  held-out images (the validation set, by the model about to mine) are right at the SL IoU with a
  precision whose lower confidence bound (:func:`precision_lower_bound`) reaches a target, used
  instead of one fixed ``certain_thre``: a class with too few right boxes to show it gets no
  certain box. :func:`calibrate_scores` maps each class's threshold onto ``certain_thre`` so the
  merge rules stay unchanged.
* :func:`require_agreement`: a certain box must be drawn again, at IoU >= ``min_iou``, by the model
  on the mirrored image (CALD's consistency idea, here as a gate on certainty): a box the model
  places differently when the image is flipped is not tight enough to confirm, whatever its score.

Detections are dicts of numpy arrays ``boxes`` ``[D, 4]`` xyxy, ``labels`` ``[D]`` (1..C), ``scores``
``[D]`` sorted by descending score.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from asm.merge import ASMConfig, box_iou, match_gt, split_and_rejudge
from datasets.records import Record


def predicted_uncertainty(dets: Sequence[dict], cfg: ASMConfig) -> np.ndarray:
    """Model-only AL ratio per image: uncertain / (certain + uncertain) after rejudge; 1.0 where the
    model finds nothing above ``uncertain_thre`` (the human would draw every box)."""
    certain, uncertain, _ = split_and_rejudge(dets, cfg)
    c = np.array([f.sum() for f in certain], np.float64)
    u = np.array([f.sum() for f in uncertain], np.float64)
    return np.divide(u, c + u, out=np.ones(len(dets)), where=c + u > 0)


def class_mix(dets: Sequence[dict], num_classes: int, floor: float) -> np.ndarray:
    """``[N, num_classes]`` score mass per class of the detections at or above ``floor``."""
    mix = np.zeros((len(dets), num_classes))
    for i, d in enumerate(dets):
        keep = np.asarray(d["scores"]) >= floor
        np.add.at(mix[i], np.asarray(d["labels"])[keep] - 1, np.asarray(d["scores"])[keep])
    return mix


def choose_informative(
    dets: Sequence[dict], k: int, cfg: ASMConfig, num_classes: int, diversity: float = 0.5
) -> list[int]:
    """Indices of the ``k`` candidates to label, in the order chosen.

    Each step takes the candidate with the largest ``uncertainty + diversity * (1 - cos(mix, chosen))``,
    where ``mix`` is its class mix and ``chosen`` the summed mix of the candidates taken so far
    (ties: the earlier candidate, i.e. the unlabelled queue's order).
    """
    gain = predicted_uncertainty(dets, cfg)
    mix = class_mix(dets, num_classes, cfg.uncertain_thre)
    norm = np.linalg.norm(mix, axis=1, keepdims=True)
    unit = np.divide(mix, norm, out=np.zeros_like(mix), where=norm > 0)
    chosen: list[int] = []
    total = np.zeros(num_classes)
    free = np.ones(len(dets), bool)
    for _ in range(min(k, len(dets))):
        size = np.linalg.norm(total)
        similarity = unit @ (total / size) if size > 0 else np.zeros(len(dets))
        score = np.where(free, gain + diversity * (1.0 - similarity), -np.inf)
        j = int(np.argmax(score))
        chosen.append(j)
        free[j] = False
        total += mix[j]
    return chosen


def detection_outcomes(
    dets: Sequence[dict], gts: Sequence[Record], gt_iou: float, floor: float
) -> dict[str, list]:
    """Label, score and true/false positive of every detection at or above ``floor``.

    A detection is a true positive when it takes a free GT box of its class at IoU >= ``gt_iou``
    (greedy by score, as the merge matches certain boxes). Plain lists.
    """
    labels, scores, tp = [], [], []
    for d, g in zip(dets, gts):
        d = rescored(d, np.asarray(d["scores"]))  # in score order, whatever the detector's
        keep = np.asarray(d["scores"]) >= floor
        boxes, lab, sc = (
            np.asarray(d["boxes"], np.float64)[keep],
            np.asarray(d["labels"])[keep],
            np.asarray(d["scores"])[keep],
        )
        tp += (match_gt(boxes, lab, g, gt_iou) >= 0).tolist()
        labels += lab.tolist()
        scores += sc.tolist()
    return {"labels": labels, "scores": scores, "tp": tp}


CONFIDENCE = 0.95  # of the precision's lower bound in class_thresholds (one-sided)


def precision_lower_bound(hits: np.ndarray, confidence: float = CONFIDENCE) -> np.ndarray:
    """For each prefix ``hits[:n]`` (n = 1..N; true positives in descending score order): the
    one-sided Wilson score lower bound on the precision at ``confidence``. It rises with the count
    as well as the share: 10 of 10 right gives 0.79 at 0.95, 30 of 30 gives 0.92."""
    n = np.arange(1, len(hits) + 1, dtype=np.float64)
    p = np.cumsum(np.asarray(hits, np.float64)) / n
    z = NormalDist().inv_cdf(confidence)
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1.0 + z * z / n)


def class_thresholds(
    outcomes: dict[str, list],
    num_classes: int,
    precision: float,
    floor: float,
    confidence: float = CONFIDENCE,
) -> dict[int, float]:
    """Per class (1..C): the lowest score at which the detections scoring at least that much have a
    precision whose lower bound (:func:`precision_lower_bound` at ``confidence``) reaches
    ``precision``; 1.0 (nothing certain) when no score does, a class without detections included.
    Never below ``floor`` (``uncertain_thre``)."""
    labels, scores, tp = (np.asarray(outcomes[k]) for k in ("labels", "scores", "tp"))
    out = {}
    for c in range(1, num_classes + 1):
        m = labels == c
        order = np.argsort(-scores[m], kind="stable")
        s, bound = scores[m][order], precision_lower_bound(tp[m][order], confidence)
        # a threshold must keep all detections of equal score together: test the last of each score
        last = np.r_[s[1:] != s[:-1], True]
        ok = np.flatnonzero((bound >= precision) & last)
        out[c] = max(float(s[ok[-1]]), floor) if len(ok) else 1.0
    return out


def rescored(det: dict, scores: np.ndarray) -> dict:
    """``det`` with new ``scores``, its rows re-sorted by them (descending, ties in their order)."""
    order = np.argsort(-scores, kind="stable")
    return {**{k: np.asarray(v)[order] for k, v in det.items()}, "scores": np.asarray(scores)[order]}


def calibrate_scores(dets: Sequence[dict], thresholds: dict[int, float], cfg: ASMConfig) -> list[dict]:
    """Detections with scores mapped per class so that class ``c``'s threshold lands on
    ``cfg.certain_thre`` (piecewise linear and increasing: ``[uncertain_thre, t_c] -> [uncertain_thre,
    certain_thre]`` and ``[t_c, 1] -> [certain_thre, 1]``; lower scores unchanged), re-sorted."""
    u, c = cfg.uncertain_thre, cfg.certain_thre
    out = []
    for d in dets:
        s = np.asarray(d["scores"], np.float64)
        t = np.array([thresholds.get(int(k), c) for k in np.asarray(d["labels"])], np.float64)
        low = u + (s - u) * (c - u) / np.maximum(t - u, 1e-12)
        high = c + (s - t) * (1.0 - c) / np.maximum(1.0 - t, 1e-12)
        mapped = np.where(
            s < u, s, np.where(s < t, np.minimum(low, np.nextafter(c, 0)), np.minimum(high, 1.0))
        )
        out.append(rescored(d, mapped))
    return out


def mirror_agreement(dets: Sequence[dict], mirrored: Sequence[dict], floor: float) -> list[np.ndarray]:
    """Per image, each detection's highest IoU with a detection of its class in the mirrored view
    (its boxes mapped back onto the image) scoring at least ``floor``; 0 where there is none."""
    out = []
    for d, m in zip(dets, mirrored):
        keep = np.asarray(m["scores"]) >= floor
        boxes, labels = np.asarray(m["boxes"]).reshape(-1, 4)[keep], np.asarray(m["labels"])[keep]
        iou = box_iou(d["boxes"], boxes)
        iou[np.asarray(d["labels"])[:, None] != labels[None, :]] = 0.0
        out.append(iou.max(1, initial=0.0))
    return out


def require_agreement(
    dets: Sequence[dict], mirrored: Sequence[dict], min_iou: float, cfg: ASMConfig
) -> tuple[list[dict], int]:
    """Detections where each certain box (score >= ``certain_thre``) that the mirrored view does not
    draw again at IoU >= ``min_iou`` (:func:`mirror_agreement`, over its boxes scoring at least
    ``uncertain_thre``) is made uncertain: its score set just below ``certain_thre``, re-sorted.
    Also how many boxes were so demoted."""
    below = np.nextafter(cfg.certain_thre, 0)
    out, demoted = [], 0
    for d, agree in zip(dets, mirror_agreement(dets, mirrored, cfg.uncertain_thre)):
        s = np.asarray(d["scores"], np.float64)
        doubt = (s >= cfg.certain_thre) & (agree < min_iou)
        demoted += int(doubt.sum())
        out.append(rescored(d, np.where(doubt, below, s)))
    return out, demoted
