"""Drawing: ground truth, predictions, a round's SA annotations, contact sheets, TensorBoard images.

Colours: ground truth green, predictions blue (with scores), SA annotations split into SL boxes
(confirmed model boxes, cyan) and AL boxes (drawn by the human, orange); false positives the human
deleted are dashed red. Class names are written above each box. ``visualize.py`` draws a split.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from datasets.build import build_datasets
from datasets.records import Record
from tools.inference import model_from_checkpoint, predict_tta

GT_COLOR = (0, 200, 0)
PRED_COLOR = (30, 100, 255)
SL_COLOR = (0, 220, 220)
AL_COLOR = (255, 140, 0)
DELETED_COLOR = (230, 0, 0)


def _label(draw: ImageDraw.ImageDraw, box, text: str, color) -> None:
    x, y = float(box[0]), max(float(box[1]) - 11, 0)
    draw.rectangle([x, y, x + 6 * len(text) + 2, y + 10], fill=color)
    draw.text((x + 1, y - 1), text, fill=(0, 0, 0))


def _dashed(draw: ImageDraw.ImageDraw, box, color, width: int = 2, dash: int = 4) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(int(length // dash), 1)
        for k in range(0, steps, 2):
            t0, t1 = k / steps, min((k + 1) / steps, 1.0)
            draw.line([ax + (bx - ax) * t0, ay + (by - ay) * t0, ax + (bx - ax) * t1, ay + (by - ay) * t1],
                      fill=color, width=width)  # fmt: skip


def draw_boxes(image: Image.Image, boxes, labels, classes: Sequence[str], colors, scores=None,
               dashed: bool = False, width: int = 2) -> Image.Image:  # fmt: skip
    """Draw ``boxes`` (xyxy) on a copy of ``image``; ``colors`` is one colour or one per box."""
    image = image.convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    per_box = colors if isinstance(colors, list) else [colors] * len(boxes)
    for i, box in enumerate(boxes):
        if dashed:
            _dashed(draw, box, per_box[i], width)
        else:
            draw.rectangle(box.tolist(), outline=per_box[i], width=width)
        text = classes[int(labels[i]) - 1] if 0 < int(labels[i]) <= len(classes) else str(int(labels[i]))
        if scores is not None:
            text += f" {float(scores[i]):.2f}"
        _label(draw, box, text, per_box[i])
    return image


def draw_sa(image: Image.Image, sa: Record, sl: Sequence[bool], classes: Sequence[str],
            deleted_boxes: np.ndarray | None = None) -> Image.Image:  # fmt: skip
    """A round's SA annotation: SL boxes cyan, AL boxes orange, deleted false positives dashed red."""
    colors = [SL_COLOR if flag else AL_COLOR for flag in sl]
    out = draw_boxes(image, sa.boxes, sa.labels, classes, colors)
    if deleted_boxes is not None and len(deleted_boxes):
        out = draw_boxes(out, deleted_boxes, [0] * len(deleted_boxes), ["deleted"], DELETED_COLOR, dashed=True)
    return out


def contact_sheet(images: Sequence[Image.Image], columns: int = 4, cell: int = 256) -> Image.Image:
    """Images scaled into ``cell`` x ``cell`` tiles, ``columns`` per row."""
    rows = max(1, -(-len(images) // columns))
    sheet = Image.new("RGB", (columns * cell, rows * cell), (32, 32, 32))
    for k, im in enumerate(images):
        tile = im.copy()
        tile.thumbnail((cell, cell))
        sheet.paste(tile, ((k % columns) * cell, (k // columns) * cell))
    return sheet


def round_sheet(results, image_root: str, classes: Sequence[str], num: int = 8) -> Image.Image:
    """Contact sheet of the round's ``num`` most uncertain images (highest AL ratio) with their SA annotations."""
    ranked = sorted(results, key=lambda r: (-r.ratio, r.sa.image_id))[:num]
    tiles = [draw_sa(Image.open(os.path.join(image_root, r.sa.file_name)), r.sa, r.sl, classes, r.deleted_boxes)
             for r in ranked]  # fmt: skip
    return contact_sheet(tiles)


def to_tensorboard(writer, tag: str, image: Image.Image, step: int) -> None:
    writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")


def draw_split(args: argparse.Namespace) -> str:
    """Draw ``args.num`` images of a split with their ground truth and, with ``args.checkpoint``,
    the model's predictions at ``args.score_thresh``; one PNG each and ``sheet.png`` in ``args.out``.

    Returns:
        The output folder.
    """
    data = build_datasets(args)[0 if args.split == "train" else 1]
    model = None
    if args.checkpoint:
        model, _ = model_from_checkpoint(args.checkpoint, torch.device("cpu"))
        model.roi_heads.score_thresh = args.score_thresh  # the model's own 0.05 would hide lower thresholds
    os.makedirs(args.out, exist_ok=True)
    tiles = []
    for record in data.records[: args.num]:
        image = Image.open(os.path.join(data.image_root, record.file_name)).convert("RGB")
        drawn = draw_boxes(image, record.boxes, record.labels, data.classes, GT_COLOR)
        if model is not None:
            pred = predict_tta(model, torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255)
            keep = pred["scores"] >= args.score_thresh
            drawn = draw_boxes(drawn, pred["boxes"][keep], pred["labels"][keep], data.classes, PRED_COLOR,
                               scores=pred["scores"][keep])  # fmt: skip
        drawn.save(os.path.join(args.out, os.path.basename(record.file_name).rsplit(".", 1)[0] + ".png"))
        tiles.append(drawn)
    contact_sheet(tiles).save(os.path.join(args.out, "sheet.png"))
    return os.path.abspath(args.out)
