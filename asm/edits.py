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
from dataclasses import dataclass

import numpy as np

from asm.merge import batched_iou


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


def count_edits(pre_boxes, pre_labels, boxes, labels, keep_iou: float = 0.8,
                pair_iou: float = 0.3) -> tuple[Edits, np.ndarray]:  # fmt: skip
    """Edits of one image, and for each final box whether it is a confirmed model box (SL).

    Args:
        pre_boxes, pre_labels: the model's pre-annotations ``[P, 4]`` xyxy, ``[P]``.
        boxes, labels: the corrected labels ``[N, 4]``, ``[N]``.
    """
    pre_boxes = np.asarray(pre_boxes, np.float64).reshape(-1, 4)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    pre_labels, labels = np.asarray(pre_labels).reshape(-1), np.asarray(labels).reshape(-1)
    iou = batched_iou(pre_boxes[None], boxes[None])[0]
    edits = Edits()
    sl = np.zeros(len(boxes), bool)
    used_pre, used_new = np.zeros(len(pre_boxes), bool), np.zeros(len(boxes), bool)
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        p, n = divmod(int(flat), iou.shape[1])
        if iou[p, n] < pair_iou:
            break
        if used_pre[p] or used_new[n]:
            continue
        used_pre[p] = used_new[n] = True
        if iou[p, n] < keep_iou:
            edits.moved += 1
        elif pre_labels[p] != labels[n]:
            edits.relabelled += 1
        else:
            edits.confirmed += 1
            sl[n] = True
    edits.added = int((~used_new).sum())
    edits.deleted = int((~used_pre).sum())
    return edits, sl
