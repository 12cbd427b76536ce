"""Inference with a trained checkpoint: the model, test-time augmentation, COCO results files.

Entries of a results file are ``image_id``, the original ``category_id``, ``bbox`` (xywh pixels),
``score`` and, for Mask R-CNN, ``segmentation`` as RLE with ``counts`` a UTF-8 string, so that
pycocotools ``COCO.loadRes`` reads the file. For a COCO split the ids are the file's own; otherwise
images are numbered as :func:`datasets.coco.records_to_coco` numbers them and that ground truth
(or, for a folder, the image list) is written next to the results as ``<out>.gt.json``.

Test-time augmentation: every scale factor of the model's size, each also mirrored with ``flip``;
the detections are merged per class by NMS (``merge="nms"``) or by box voting (``"vote"``: each
box kept by NMS becomes the score-weighted mean of its cluster). ``infer.py`` is the command line.
"""

from __future__ import annotations

import os

import torch
from torchvision.ops import batched_nms, box_iou

from datasets.common import IMAGE_EXTENSIONS, read_image_size
from datasets.records import Record
from datasets.report import LoadReport
from net.models import build_model
from tools.engine.checkpoint import MODEL_KEYS, RunState, checkpoint_of, read_state


def model_from_checkpoint(path: str, device: torch.device) -> tuple[torch.nn.Module, RunState]:
    """The detector of a ``train_asm_one.py`` checkpoint (or of a run's folder: its best.pth), in
    eval mode, and the run's state.

    Raises:
        FileNotFoundError: no such file, or a folder without a checkpoint.
        CheckpointError: unreadable, or not a run's checkpoint (the message names the file).
    """
    state = read_state(checkpoint_of(path), MODEL_KEYS)
    cfg = state.config
    model = build_model(
        cfg["model"],
        len(state.classes) + 1,
        min_size=cfg["min_size"],
        max_size=cfg["max_size"],
        preset=cfg["preset"],
    )
    model.load_state_dict(state.model)
    return model.to(device).eval(), state


def folder_records(folder: str, report: LoadReport | None = None) -> list[Record]:
    """Records (no boxes) for every readable image file under ``folder``, sorted by path; the others
    are counted in ``report`` (missing, unreadable, truncated, too large), as training counts them.

    Raises:
        FileNotFoundError: no image file at all under ``folder``.
    """
    report = report if report is not None else LoadReport()
    names = sorted(
        os.path.relpath(os.path.join(d, f), folder).replace(os.sep, "/")
        for d, _, files in os.walk(folder)
        for f in files
        if f.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not names:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    records = []
    for name in names:
        size = read_image_size(os.path.join(folder, name))  # the header only: infer decodes each image once
        if isinstance(size, str):
            report.add(size, os.path.join(folder, name))
            continue
        records.append(Record(name, name, *size))
    return records


def mirror_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """``[N, 4]`` xyxy boxes of an image ``width`` pixels wide, mirrored left to right (the boxes of
    a flipped image mapped back onto the original, and the other way)."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


@torch.inference_mode()
def predict_tta(
    model, image: torch.Tensor, scales=(1.0,), flip: bool = False, merge: str = "nms", iou: float = 0.5
) -> dict:
    """Detections of one image (float ``[3, H, W]`` in ``[0, 1]``), merged over the augmentations.

    Returns numpy ``boxes`` (original pixels), ``labels``, ``scores`` and, for Mask R-CNN,
    ``masks`` ``[N, H, W]`` probabilities.
    """
    transform = model.transform
    base_min, base_max = transform.min_size, transform.max_size
    width = image.shape[-1]
    parts = []
    try:
        for s in scales:
            transform.min_size = tuple(round(m * s) for m in base_min[-1:])
            transform.max_size = round(base_max * s)
            for mirrored in (False, True) if flip else (False,):
                out = model([image.flip(-1) if mirrored else image])[0]
                if mirrored:
                    out["boxes"] = mirror_boxes(out["boxes"], width)
                    if "masks" in out:
                        out["masks"] = out["masks"].flip(-1)
                parts.append(out)
    finally:
        transform.min_size, transform.max_size = base_min, base_max
    merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    keep = batched_nms(merged["boxes"], merged["scores"], merged["labels"], iou)[
        : model.roi_heads.detections_per_img
    ]
    result = {k: v[keep] for k, v in merged.items()}
    if merge == "vote" and len(parts) > 1:
        result["boxes"] = _vote(merged, keep, iou)
    if "masks" in result:
        result["masks"] = result["masks"][:, 0]
    return {k: v.cpu().numpy() for k, v in result.items()}


def _vote(merged: dict, keep: torch.Tensor, iou: float) -> torch.Tensor:
    """Box voting: the score-weighted mean of each kept box's cluster (same class, IoU >= ``iou``)."""
    overlap = box_iou(merged["boxes"][keep], merged["boxes"]) >= iou
    overlap &= merged["labels"][keep][:, None] == merged["labels"][None, :]
    weights = overlap.float() * merged["scores"][None, :]
    return weights @ merged["boxes"] / weights.sum(1, keepdim=True)
