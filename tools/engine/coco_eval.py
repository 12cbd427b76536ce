"""COCO AP with pycocotools' COCOeval, on records and predictions of this project.

Ground truth is the records written as COCO JSON (:func:`datasets.coco.records_to_coco`), so VOC
and demo data can be scored with COCO's metric too; predictions get their original category ids
back. Masks are encoded as RLE at a 0.5 threshold.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from datasets.coco import records_to_coco
from datasets.records import Record, RecordSet
from tools.engine.evaluator import Evaluator

STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def to_coco_results(
    records: Sequence[Record],
    outputs: Sequence[dict],
    label_to_cat_id: dict[int, int],
    image_ids: Sequence[int],
    with_masks: bool = False,
) -> list[dict]:
    """Predictions as COCO result entries (``bbox`` xywh, original ``category_id``, RLE masks)."""
    results = []
    for image_id, out in zip(image_ids, outputs):
        boxes = np.asarray(out["boxes"], dtype=np.float64).reshape(-1, 4)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        for i in range(len(boxes)):
            entry = {
                "image_id": int(image_id),
                "category_id": int(label_to_cat_id[int(out["labels"][i])]),
                "bbox": [round(float(v), 3) for v in xywh[i]],
                "score": float(out["scores"][i]),
            }
            if with_masks:
                entry["segmentation"] = out["rles"][i] if "rles" in out else encode_mask(out["masks"][i])
            results.append(entry)
    return results


def encode_mask(mask: np.ndarray) -> dict:
    """A probability (or binary) mask ``[H, W]`` as a COCO RLE at the 0.5 threshold (``counts`` as str)."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask) > 0.5, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


class COCOEvaluator(Evaluator):
    """``reset / process / summarize`` COCO AP for ``bbox`` (and ``segm``).

    Keys: ``bbox/AP``, ``bbox/AP50``, ``bbox/AP75``, ``bbox/APs``, ``bbox/APm``, ``bbox/APl`` and
    ``bbox/AP/<class>`` (AP over IoU 0.5:0.95); the same with ``segm/``. Values are fractions in
    ``[0, 1]``; -1 where COCOeval has nothing to average (e.g. no small objects).
    """

    def __init__(self, dataset: RecordSet, iou_types: Sequence[str] = ("bbox",)) -> None:
        self.dataset = dataset
        self.iou_types = tuple(iou_types)
        self.reset()

    def compact(self, output: dict) -> dict:
        """Boxes, scores, labels, and with ``segm`` each mask as RLE at once (a few hundred bytes)."""
        kept = super().compact(output)
        if "segm" in self.iou_types and "masks" in output:
            kept["rles"] = [encode_mask(m) for m in output["masks"]]
        return kept

    def summarize(self) -> dict[str, float]:
        records, outputs = self.gathered()
        gt_json = records_to_coco(self.dataset, records)
        image_ids = [im["id"] for im in gt_json["images"]]
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = gt_json
            gt.createIndex()
        out: dict[str, float] = {}
        for iou_type in self.iou_types:
            results = to_coco_results(
                records, outputs, self.dataset.label_to_cat_id, image_ids, with_masks=iou_type == "segm"
            )
            out.update(run_cocoeval(gt, results, iou_type, self.dataset))
        return out


def run_cocoeval(gt: COCO, results: list[dict], iou_type: str, dataset: RecordSet) -> dict[str, float]:
    """COCOeval's summary and per-class AP as a flat dict."""
    if not results:
        return {f"{iou_type}/{k}": 0.0 for k in STATS}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {f"{iou_type}/{k}": float(v) for k, v in zip(STATS, ev.stats[:6])}
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        name = dataset.classes[dataset.cat_id_to_label[cat_id] - 1]
        out[f"{iou_type}/AP/{name}"] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    return out
