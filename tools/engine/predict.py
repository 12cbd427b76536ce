"""Model API for samplers: class-probability vectors per detection, and per-image losses.

* :func:`predict_proba` keeps what torchvision's box post-processing drops: for every kept
  detection the softmax over all classes (background included) of the proposal it came from.
* :func:`compute_loss` returns each image's training loss dict without gradients and without
  changing the model: BatchNorm layers run on their running statistics (as a frozen-BN model
  trains), weights and buffers are untouched, and the proposal sampling uses a fixed seed in a
  forked RNG, so the global RNG is not advanced either.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import boxes as box_ops

from datasets.records import Record
from datasets.torch_data import DetectionDataset, collate_fn
from datasets.transforms import build_transforms
from tools.engine.epoch import to_device, to_original


def _postprocess_with_probs(store: list, conf_thres: float, nms_thres: float):
    """A RoIHeads.postprocess_detections that also records the class probabilities it keeps."""

    def postprocess(self, class_logits, box_regression, proposals, image_shapes):
        num_classes = class_logits.shape[-1]
        sizes = [len(p) for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals).split(sizes, 0)
        pred_scores = F.softmax(class_logits, -1).split(sizes, 0)
        out_boxes, out_scores, out_labels = [], [], []
        for boxes, scores, shape in zip(pred_boxes, pred_scores, image_shapes):
            boxes = box_ops.clip_boxes_to_image(boxes, shape)[:, 1:].reshape(-1, 4)
            labels = torch.arange(num_classes, device=scores.device).expand_as(scores)[:, 1:].reshape(-1)
            rows = (
                torch.arange(len(scores), device=scores.device)[:, None].expand_as(scores)[:, 1:].reshape(-1)
            )
            flat = scores[:, 1:].reshape(-1)
            keep = torch.where(flat > conf_thres)[0]
            keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
            keep = keep[box_ops.batched_nms(boxes[keep], flat[keep], labels[keep], nms_thres)]
            keep = keep[: self.detections_per_img]
            out_boxes.append(boxes[keep])
            out_scores.append(flat[keep])
            out_labels.append(labels[keep])
            store.append(scores[rows[keep]])
        return out_boxes, out_scores, out_labels

    return postprocess


@contextlib.contextmanager
def _recording_probs(model: nn.Module, conf_thres: float, nms_thres: float):
    roi_heads = model.roi_heads
    store: list[torch.Tensor] = []
    roi_heads.postprocess_detections = types.MethodType(
        _postprocess_with_probs(store, conf_thres, nms_thres), roi_heads
    )
    try:
        yield store
    finally:
        del roi_heads.postprocess_detections  # back to the class's method


@torch.inference_mode()
def predict_proba(
    model: nn.Module,
    records: Sequence[Record],
    image_root: str,
    conf_thres: float = 0.7,
    nms_thres: float = 0.4,
    batch_size: int = 4,
    device: torch.device | None = None,
) -> list[dict]:
    """Detections with class-probability vectors.

    Returns:
        Per image: ``file_name``, ``boxes`` ``[N, 4]`` xyxy (original pixels), ``labels``, ``scores``,
        ``probs`` ``[N, C+1]`` (rows sum to 1; ``probs[k, labels[k]] == scores[k]``) and, for
        Mask R-CNN, ``masks`` ``[N, H, W]``; numpy arrays.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    dataset = DetectionDataset(records, image_root, build_transforms(False))
    results = []
    try:
        with _recording_probs(model, conf_thres, nms_thres) as store:
            for start in range(0, len(dataset), batch_size):
                images, targets = collate_fn(
                    [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                )
                images, _ = to_device(images, None, device)
                store.clear()
                outputs = model(images)
                for image, target, out, probs in zip(images, targets, outputs, store):
                    res = to_original(out, image.shape[-2:], target["orig_size"])
                    res["probs"] = probs.float().cpu().numpy()
                    res["file_name"] = records[int(target["index"])].file_name
                    results.append(res)
    finally:
        model.train(was_training)
    return results


def compute_loss(
    model: nn.Module,
    records: Sequence[Record],
    image_root: str,
    with_masks: bool = False,
    seed: int = 0,
    device: torch.device | None = None,
) -> list[dict]:
    """Per-image training loss dicts, computed without gradients and without changing the model.

    Returns:
        Per image ``{"file_name", "loss_classifier", "loss_box_reg", "loss_objectness",
        "loss_rpn_box_reg"[, "loss_mask"], "loss"}`` as floats.
    """
    device = device or next(model.parameters()).device
    modes = {m: m.training for m in model.modules()}
    dataset = DetectionDataset(records, image_root, build_transforms(False), with_masks=with_masks)
    results = []
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()  # running statistics: used, never updated
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for index in range(len(dataset)):
                torch.manual_seed(seed)
                image, target = dataset[index]
                images, targets = to_device([image], [target], device)
                losses = {k: float(v) for k, v in model(images, targets).items()}
                losses["loss"] = float(sum(losses.values()))
                results.append({"file_name": records[index].file_name, **losses})
    finally:
        for m, mode in modes.items():
            m.training = mode
    return results


def probs_by_id(records: Sequence[Record], predictions: Sequence[dict]) -> dict[str, np.ndarray]:
    """``image_id -> probs`` for the uncertainty samplers."""
    return {r.image_id: p["probs"] for r, p in zip(records, predictions)}
