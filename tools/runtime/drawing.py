"""Drawing: ground truth, predictions, a round's SA annotations, contact sheets, TensorBoard images.

Colours: ground truth green, predictions blue (with scores), SA annotations split into SL boxes
(confirmed model boxes, cyan) and AL boxes (drawn by the human, orange; moved from a model box,
violet); false positives the human deleted are dashed red. Class names are written on a filled
background above each box (inside the picture), at a size that follows the image. ``visualize.py``
draws a split or a folder of photos.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from datasets.orientation import open_upright
from datasets.records import Record

GT_COLOR = (0, 200, 0)
PRED_COLOR = (30, 100, 255)
SL_COLOR = (0, 220, 220)
AL_COLOR = (255, 140, 0)
DELETED_COLOR = (230, 0, 0)
MOVED_COLOR = (190, 90, 255)


def font_for(image: Image.Image) -> ImageFont.ImageFont:
    """A font whose size follows the image: readable on a 4,000 px photo and on a 64 px tile."""
    return ImageFont.load_default(size=max(9, round(min(image.size) / 45)))


def _label(draw: ImageDraw.ImageDraw, box, text: str, color, font, image_size: tuple[int, int]) -> None:
    """``text`` on a filled background at the box's top-left corner: above the box when there is room,
    inside it otherwise, and shifted left so that it never leaves the picture."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 4, bottom - top + 4
    x = min(max(float(box[0]), 0.0), max(image_size[0] - w, 0))
    y = float(box[1]) - h if float(box[1]) - h >= 0 else max(float(box[1]), 0.0)
    y = min(y, max(image_size[1] - h, 0))
    draw.rectangle([x, y, x + w, y + h], fill=color)
    dark = sum(color[:3]) > 3 * 110  # black text on light colours, white on dark ones
    draw.text((x + 2 - left, y + 2 - top), text, fill=(0, 0, 0) if dark else (255, 255, 255), font=font)


def _dashed(draw: ImageDraw.ImageDraw, box, color, width: int = 2, dash: int = 4) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    for (ax, ay), (bx, by) in (
        ((x1, y1), (x2, y1)),
        ((x2, y1), (x2, y2)),
        ((x2, y2), (x1, y2)),
        ((x1, y2), (x1, y1)),
    ):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(int(length // dash), 1)
        for k in range(0, steps, 2):
            t0, t1 = k / steps, min((k + 1) / steps, 1.0)
            draw.line(
                [ax + (bx - ax) * t0, ay + (by - ay) * t0, ax + (bx - ax) * t1, ay + (by - ay) * t1],
                fill=color,
                width=width,
            )


def draw_boxes(
    image: Image.Image,
    boxes,
    labels,
    classes: Sequence[str],
    colors,
    scores=None,
    dashed: bool = False,
    width: int | None = None,
    masks=None,
) -> Image.Image:
    """Draw ``boxes`` (xyxy) on a copy of ``image``; ``colors`` is one colour or one per box.

    ``masks`` (``[N, H, W]``, probabilities or 0/1) are blended in the box colour under the boxes.
    The line width and the label size follow the image size unless ``width`` is given.
    """
    image = image.convert("RGB").copy()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    per_box = colors if isinstance(colors, list) else [colors] * len(boxes)
    if masks is not None and len(masks):
        pixels = np.asarray(image, dtype=np.float32)
        for i, m in enumerate(np.asarray(masks)):
            inside = m >= 0.5
            pixels[inside] = 0.55 * pixels[inside] + 0.45 * np.asarray(per_box[i][:3], np.float32)
        image = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font = font_for(image)
    width = width or max(2, round(min(image.size) / 300))
    for i, box in enumerate(boxes):
        if dashed:
            _dashed(draw, box, per_box[i], width)
        else:
            draw.rectangle(box.tolist(), outline=per_box[i], width=width)
    for i, box in enumerate(boxes):  # labels last, so that no box is drawn over one
        text = classes[int(labels[i]) - 1] if 0 < int(labels[i]) <= len(classes) else str(int(labels[i]))
        if scores is not None:
            text += f" {float(scores[i]):.2f}"
        _label(draw, box, text, per_box[i], font, image.size)
    return image


def draw_sa(
    image: Image.Image,
    sa: Record,
    sl: Sequence[bool],
    classes: Sequence[str],
    deleted_boxes: np.ndarray | None = None,
    moved: Sequence[bool] | None = None,
) -> Image.Image:
    """A round's SA annotation: SL boxes cyan (confirmed), AL boxes orange (drawn) or violet (moved
    from a model box), deleted false positives dashed red."""
    moved = moved if moved is not None else [False] * len(sl)
    colors = [SL_COLOR if flag else MOVED_COLOR if move else AL_COLOR for flag, move in zip(sl, moved)]
    out = draw_boxes(image, sa.boxes, sa.labels, classes, colors)
    if deleted_boxes is not None and len(deleted_boxes):
        out = draw_boxes(
            out, deleted_boxes, [1] * len(deleted_boxes), ["deleted"], DELETED_COLOR, dashed=True
        )
    return out


def caption(image: Image.Image, text: str, height: int = 22) -> Image.Image:
    """``image`` with a dark strip below it holding ``text`` (cut to fit the width)."""
    out = Image.new("RGB", (image.width, image.height + height), (24, 24, 24))
    out.paste(image.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=height - 8)
    while len(text) > 4 and draw.textlength(text, font=font) > image.width - 6:
        text = text[:-4] + "..."
    draw.text((3, image.height + 3), text, fill=(235, 235, 235), font=font)
    return out


def legend(entries: Sequence[tuple[str, tuple[int, int, int]]], width: int, height: int = 26) -> Image.Image:
    """A strip of colour swatches with their meaning, ``width`` pixels wide."""
    strip = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default(size=height - 10)
    x = 6
    for text, color in entries:
        draw.rectangle([x, 6, x + height - 12, height - 6], fill=color)
        x += height - 6
        draw.text((x, 4), text, fill=(235, 235, 235), font=font)
        x += int(draw.textlength(text, font=font)) + 16
    return strip


def contact_sheet(
    images: Sequence[Image.Image],
    columns: int = 4,
    cell: int = 256,
    captions: Sequence[str] | None = None,
    key: Image.Image | None = None,
) -> Image.Image:
    """Images scaled into ``cell`` x ``cell`` tiles, ``columns`` per row, each with its caption under
    it when given, and ``key`` (a :func:`legend`) across the top."""
    rows = max(1, -(-len(images) // columns))
    cap = 22 if captions is not None else 0
    tiles = []
    for im in images:
        tile = im.copy()
        tile.thumbnail((cell, cell))
        tiles.append(tile)
    row_h = max((t.height for t in tiles), default=cell) + cap
    top = key.height if key is not None else 0
    sheet = Image.new("RGB", (columns * cell, top + rows * row_h), (32, 32, 32))
    if key is not None:
        sheet.paste(key.crop((0, 0, sheet.width, key.height)), (0, 0))
    for k, tile in enumerate(tiles):
        if captions is not None:
            tile = caption(tile, captions[k], cap)
        sheet.paste(tile, ((k % columns) * cell, top + (k // columns) * row_h))
    return sheet


SA_LEGEND = (
    ("drawn (AL)", AL_COLOR),
    ("confirmed (SL)", SL_COLOR),
    ("moved", MOVED_COLOR),
    ("deleted", DELETED_COLOR),
)


def round_sheet(
    results, image_root: str, classes: Sequence[str], num: int = 8, cell: int = 256
) -> Image.Image:
    """Contact sheet of the round's ``num`` most uncertain images (highest AL ratio) with their SA
    annotations, each captioned with its file name and AL ratio, under a legend of the colours."""
    ranked = sorted(results, key=lambda r: (-r.ratio, r.sa.image_id))[:num]
    tiles = []
    for r in ranked:  # scaled to the tile first, so that the labels are drawn at a readable size
        image = open_upright(os.path.join(image_root, r.sa.file_name)).convert("RGB")
        scale = min(1.0, cell / max(image.size))
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        sa = replace(r.sa, boxes=r.sa.boxes * scale)
        deleted = None if r.deleted_boxes is None else np.asarray(r.deleted_boxes) * scale
        tiles.append(draw_sa(image, sa, r.sl, classes, deleted, r.moved))
    captions = [f"{os.path.basename(r.sa.file_name)}  AL {r.ratio:.2f}" for r in ranked]
    return contact_sheet(tiles, cell=cell, captions=captions, key=legend(SA_LEGEND, 4 * cell))


def to_tensorboard(writer, tag: str, image: Image.Image, step: int) -> None:
    writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")
