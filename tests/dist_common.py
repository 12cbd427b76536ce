"""The model, data and evaluators shared by the distributed test and its torchrun worker."""

import torch

from datasets.loaders import eval_loader
from datasets.synthetic import load_demo
from net.models import build_model
from tools.engine.coco_eval import COCOEvaluator
from tools.engine.voc_eval import VOCEvaluator


def build():
    """A fixed random tiny model (same weights in every process), 10 demo images, both evaluators."""
    data = load_demo("val", num_train=12, num_val=10)
    torch.manual_seed(0)
    model = build_model(
        "fasterrcnn_mobilenet_v2_fpn",
        data.num_classes + 1,
        min_size=64,
        preset="cpu_fast",
        box_score_thresh=0.0,
    )
    loader = eval_loader(data.records, data.image_root)
    return model, loader, [VOCEvaluator(data.classes), COCOEvaluator(data)]
