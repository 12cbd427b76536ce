"""The evaluator contract, as detectron2's: ``reset()``, ``process(records, outputs, indices)`` once per
batch inside the detection loop, ``summarize() -> dict[str, float]`` at the end.

``process`` keeps only a compact form of each prediction (:meth:`Evaluator.compact`: boxes, scores,
labels; the COCO evaluator adds RLE masks), so memory grows with the number of detections, never
with image size. Under torchrun each rank processes its share and :meth:`Evaluator.gathered`
collects the compact results once, at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from asm.select import detection_outcomes
from datasets.records import Record
from tools.runtime import dist

AP50 = "voc/AP50"  # the metric every report, record and early stop reads
AP_KEYS = {"ap_50": AP50, "ap_75": "voc/AP75"}  # --ap: the AP early stopping and best.pth follow


class Evaluator:
    """Accumulates ground-truth records and compact predictions; subclasses implement :meth:`summarize`."""

    def reset(self) -> None:
        self._items: dict[int, tuple[Record, dict]] = {}

    def process(
        self, records: Sequence[Record], outputs: Sequence[dict], indices: Sequence[int] | None = None
    ) -> None:
        """Add a batch of images: their records and predictions (``boxes`` xyxy, ``scores``, ``labels``
        [, ``masks``]). ``indices`` (dataset positions) order the images in :meth:`summarize`; by
        default they follow the order of the calls."""
        if len(records) != len(outputs):
            raise ValueError(f"{len(records)} records but {len(outputs)} outputs")
        if indices is None:
            indices = range(len(self._items), len(self._items) + len(records))
        for index, record, output in zip(indices, records, outputs):
            self._items[int(index)] = (record, self.compact(output))

    def compact(self, output: dict) -> dict:
        """What is kept of one image's prediction."""
        return {
            "boxes": np.asarray(output["boxes"]).reshape(-1, 4),
            "scores": np.asarray(output["scores"]),
            "labels": np.asarray(output["labels"]),
        }

    def gathered(self) -> tuple[list[Record], list[dict]]:
        """Every rank's images in index order: ``(records, compact outputs)``."""
        items = dist.gather_by_index(self._items)
        ordered = [items[i] for i in sorted(items)]
        return [r for r, _ in ordered], [o for _, o in ordered]

    def summarize(self) -> dict[str, float]:
        raise NotImplementedError


class OutcomeEvaluator(Evaluator):
    """Each detection's label, score and whether it is right at ``gt_iou``
    (:func:`asm.select.detection_outcomes`, over scores >= ``floor``): what ``--certain-precision``
    calibrates on. :meth:`summarize` keeps them (:meth:`take`) and adds no metric."""

    def __init__(self, gt_iou: float, floor: float) -> None:
        self.gt_iou, self.floor = gt_iou, floor
        self.outcomes: dict[str, list] | None = None
        self.reset()

    def summarize(self) -> dict[str, float]:
        records, outputs = self.gathered()
        self.outcomes = detection_outcomes(outputs, records, self.gt_iou, self.floor)
        return {}

    def take(self) -> dict[str, list] | None:
        """The last evaluation's outcomes, once (None if there was none since the last take)."""
        outcomes, self.outcomes = self.outcomes, None
        return outcomes
