"""Streaming evaluation: per-batch ``process`` with compact results gives exactly the numbers of one
call over the whole split, and keeps no mask arrays."""

import os

import numpy as np
import pytest
import torch

from datasets.coco import load_coco
from datasets.loaders import eval_loader
from datasets.synthetic import load_demo
from net.models import build_model
from tests.test_coco_eval import _predictions
from tools.engine.coco_eval import COCOEvaluator
from tools.engine.epoch import detect, evaluate
from tools.engine.mining import detect_sorted
from tools.engine.voc_eval import VOCEvaluator


def _evaluators(data):
    return [VOCEvaluator(data.classes), COCOEvaluator(data, ("bbox", "segm"))]


def _at_once(evaluators, records, outputs):
    out = {}
    for ev in evaluators:
        ev.reset()
        ev.process(records, outputs)
        out.update(ev.summarize())
    return out


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert (np.isnan(a[k]) and np.isnan(b[k])) or a[k] == b[k], k


def test_batches_in_any_order_give_the_numbers_of_one_call(tiny_coco_root):
    data = load_coco(
        os.path.join(tiny_coco_root, "annotations", "instances_val2017.json"),
        os.path.join(tiny_coco_root, "val2017"),
    )
    outputs = _predictions(data.records)
    reference = _at_once(_evaluators(data), data.records, outputs)
    assert reference["segm/AP"] > 0.1 and reference["voc/AP50"] > 0.1  # real numbers, not zeros
    streamed = _evaluators(data)
    order = np.random.default_rng(0).permutation(len(data.records))
    for ev in streamed:
        ev.reset()
        for chunk in np.array_split(order, 7):
            ev.process([data.records[i] for i in chunk], [outputs[i] for i in chunk], chunk.tolist())
    for _, kept in streamed[1]._items.values():
        assert "masks" not in kept and all(isinstance(r["counts"], str) for r in kept["rles"])
    _same(reference, {k: v for ev in streamed for k, v in ev.summarize().items()})


@pytest.fixture(scope="module")
def mask_model_and_data(tmp_path_factory):
    data = load_demo(
        "val", fmt="coco", num_train=8, num_val=12, cache_dir=str(tmp_path_factory.mktemp("demo"))
    )
    torch.manual_seed(0)
    model = build_model(
        "maskrcnn_mobilenet_v2_fpn", data.num_classes + 1, min_size=64, preset="cpu_fast"
    ).eval()
    model.roi_heads.score_thresh = 0.0  # many detections, each with a mask ...
    model.roi_heads.detections_per_img = 20  # ... 240 in all: enough to rank, few masks to paste
    return model, data


def test_evaluate_streams_with_the_numbers_of_detect_then_evaluate(mask_model_and_data):
    model, data = mask_model_and_data
    loader = eval_loader(data.records, data.image_root, batch_size=3)
    cpu = torch.device("cpu")
    outputs = detect(model, loader, cpu)
    assert all("masks" in o for o in outputs) and sum(len(o["boxes"]) for o in outputs) > 100
    _same(_at_once(_evaluators(data), data.records, outputs), evaluate(model, loader, _evaluators(data), cpu))


def test_mining_keeps_no_masks(mask_model_and_data):
    model, data = mask_model_and_data
    dets = detect_sorted(model, data.records[:4], data.image_root, torch.device("cpu"), batch_size=2)
    assert len(dets) == 4 and all("masks" not in d and len(d["boxes"]) for d in dets)
