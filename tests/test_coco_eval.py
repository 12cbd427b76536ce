import contextlib
import io
import os

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from datasets.coco import decode_masks, load_coco
from tools.engine.coco_eval import STATS, COCOEvaluator, to_coco_results


def _predictions(records, seed=0):
    rng = np.random.default_rng(seed)
    outputs = []
    for r in records:
        keep = rng.random(len(r)) < 0.8
        boxes = r.boxes[keep] + rng.normal(0, 3, (int(keep.sum()), 4)).astype(np.float32)
        masks = decode_masks(r)[keep].astype(np.float32)
        masks = np.roll(masks, int(rng.integers(-3, 4)), axis=2)
        labels = np.where(rng.random(len(boxes)) < 0.9, r.labels[keep], 1)
        outputs.append(
            {
                "boxes": boxes,
                "labels": labels,
                "scores": rng.random(len(boxes)).astype(np.float32),
                "masks": masks,
            }
        )
    return outputs


def test_equals_cocoeval_on_the_original_file(tiny_coco_root):
    ann = os.path.join(tiny_coco_root, "annotations", "instances_val2017.json")
    data = load_coco(ann, os.path.join(tiny_coco_root, "val2017"))
    outputs = _predictions(data.records)
    ev = COCOEvaluator(data, iou_types=("bbox", "segm"))
    ev.process(data.records, outputs)
    ours = ev.summarize()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann)
        for iou_type in ("bbox", "segm"):
            results = to_coco_results(
                data.records,
                outputs,
                data.label_to_cat_id,
                [int(r.image_id) for r in data.records],
                with_masks=iou_type == "segm",
            )
            ref = COCOeval(gt, gt.loadRes(results), iou_type)
            ref.evaluate(), ref.accumulate(), ref.summarize()
            for k, v in zip(STATS, ref.stats[:6]):
                assert ours[f"{iou_type}/{k}"] == pytest.approx(float(v), abs=1e-12), (iou_type, k)
            assert 0.2 < ours[f"{iou_type}/AP50"] <= 1.0
    person = ours["bbox/AP/person"]
    assert 0.0 <= person <= 1.0


def test_perfect_predictions_score_one(demo_cache):
    from datasets.synthetic import load_demo

    data = load_demo("val", "coco", num_train=120, num_val=20, cache_dir=demo_cache)
    outputs = [
        {"boxes": r.boxes, "labels": r.labels, "scores": np.ones(len(r), np.float32)} for r in data.records
    ]
    ev = COCOEvaluator(data)
    ev.process(data.records, outputs)
    s = ev.summarize()
    assert s["bbox/AP"] == pytest.approx(1.0) and s["bbox/AP/circle"] == pytest.approx(1.0)
