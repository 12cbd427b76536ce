"""Count what a human changed between the model's pre-annotations and the corrected labels.

Pre-annotation boxes are paired one-to-one with final boxes, greedily by IoU (highest first, any
class, IoU >= ``pair_iou``). A pair with IoU >= ``keep_iou`` (0.8, the SL threshold) is
**confirmed** when the class is unchanged and **relabelled** otherwise; a pair below ``keep_iou``
is **moved**. Unpaired final boxes were **added** (drawn), unpaired pre-annotations **deleted**.

For the ASM accounting, confirmed boxes are SL; added, moved and relabelled boxes are AL (the
human had to produce them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from asm.merge import MergeResult, box_iou


@dataclass
class Edits:
    added: int = 0
    deleted: int = 0
    moved: int = 0
    relabelled: int = 0
    confirmed: int = 0

    def __iadd__(self, other: Edits) -> Edits:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def count_edits(
    pre_boxes, pre_labels, boxes, labels, keep_iou: float = 0.8, pair_iou: float = 0.3
) -> tuple[Edits, np.ndarray, np.ndarray]:
    """Edits of one image, and for each final box whether it is a confirmed model box (SL) and
    whether it is a model box the human moved.

    Args:
        pre_boxes, pre_labels: the model's pre-annotations ``[P, 4]`` xyxy, ``[P]``.
        boxes, labels: the corrected labels ``[N, 4]``, ``[N]``.
    """
    pre_boxes = np.asarray(pre_boxes, np.float64).reshape(-1, 4)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    pre_labels, labels = np.asarray(pre_labels).reshape(-1), np.asarray(labels).reshape(-1)
    iou = box_iou(pre_boxes, boxes)
    edits = Edits()
    sl, moved = np.zeros(len(boxes), bool), np.zeros(len(boxes), bool)
    used_pre, used_new = np.zeros(len(pre_boxes), bool), np.zeros(len(boxes), bool)
    for p, n in _greedy_pairs(iou, pair_iou):
        used_pre[p] = used_new[n] = True
        if iou[p, n] < keep_iou:
            edits.moved += 1
            moved[n] = True
        elif pre_labels[p] != labels[n]:
            edits.relabelled += 1
        else:
            edits.confirmed += 1
            sl[n] = True
    edits.added = int((~used_new).sum())
    edits.deleted = int((~used_pre).sum())
    return edits, sl, moved


def count_moves(results: Sequence[MergeResult], move_iou: float = 0.5) -> list[MergeResult]:
    """Count a deleted certain box and a drawn GT box of its class at IoU >= ``move_iou`` as one move.

    The merge calls every certain box below ``gt_iou`` (0.8) a false positive to delete and the GT box
    under it a box to draw. A human shown a box at IoU 0.5-0.8 drags it onto the object instead: one
    edit. Pairs are one-to-one, greedily by IoU. The SA annotation is unchanged (it holds the GT box);
    ``drawn`` and ``deleted`` lose one each per move and ``moved`` flags the SA boxes made so.

    Returns:
        New results (the inputs are not changed).
    """
    out = []
    for r in results:
        moved = np.zeros(len(r.sa), bool)
        if r.deleted and r.drawn and r.deleted_boxes is not None:
            al = np.flatnonzero(~r.sl)
            iou = box_iou(r.deleted_boxes, r.sa.boxes[al])
            iou[np.asarray(r.deleted_labels)[:, None] != r.sa.labels[al][None, :]] = 0.0
            pairs = _greedy_pairs(iou, move_iou)
            moved[al[[n for _, n in pairs]]] = True
            if pairs:
                keep = np.ones(len(r.deleted_boxes), bool)
                keep[[p for p, _ in pairs]] = False
                r = dataclasses.replace(
                    r,
                    drawn=r.drawn - len(pairs),
                    deleted=r.deleted - len(pairs),
                    deleted_boxes=r.deleted_boxes[keep],
                    deleted_labels=r.deleted_labels[keep],
                )
        out.append(dataclasses.replace(r, moved=moved))
    return out


def _greedy_pairs(iou: np.ndarray, thresh: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs, highest IoU first, each at least ``thresh``."""
    pairs, used_r, used_c = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < thresh:
            break
        if i not in used_r and j not in used_c:
            used_r.add(i)
            used_c.add(j)
            pairs.append((i, j))
    return pairs
