"""EXIF orientation: every image is read upright, as the labelling tools show it.

A phone stores a photo as the sensor saw it and writes in its EXIF ``Orientation`` tag (1..8) how
to turn it upright. Label Studio (the browser), LabelMe, CVAT, detectron2 and MMDetection all show
or read the image turned; so do we, everywhere an image is decoded (training, detection, the round
sheets, :func:`open_upright`), and an image's size is its upright size.

A tool that showed the stored pixels instead (LabelImg) drew its boxes on them; such boxes are
turned with the image (:func:`turn_points`, :func:`turn_boxes`). Which it was is told by the size
the annotation states where the turn swaps width and height, and otherwise by the format's tool
(``datasets.common.check_image``'s ``drawn``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

ORIENTATION_TAG = 0x0112
SWAPS_AXES = frozenset({5, 6, 7, 8})  # the orientations whose upright image is H x W


def exif_orientation(im: Image.Image) -> int:
    """The image's EXIF orientation, 1 (as stored) when absent or not one of 1..8."""
    try:
        value = im.getexif().get(ORIENTATION_TAG, 1)
    except (OSError, ValueError, SyntaxError, TypeError):  # a broken EXIF block: read as stored
        return 1
    return value if value in range(1, 9) else 1


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """``(width, height)`` of the stored ``size`` once turned by ``orientation``."""
    return (size[1], size[0]) if orientation in SWAPS_AXES else (size[0], size[1])


def open_upright(path: str) -> Image.Image:
    """The image at ``path`` decoded and turned upright (loaded: the file is closed)."""
    with Image.open(path) as im:
        turn = exif_orientation(im)
        im.load()
        return im if turn == 1 else ImageOps.exif_transpose(im)


def turn_points(points: np.ndarray, orientation: int, stored: tuple[int, int]) -> np.ndarray:
    """``[N, 2]`` (x, y) on the stored pixels (``stored``: their width and height) moved to where
    they land on the upright image (the turn PIL's ``exif_transpose`` makes)."""
    w, h = stored
    x, y = np.asarray(points, np.float64).reshape(-1, 2).T
    moved = {
        1: (x, y),
        2: (w - x, y),  # mirrored left-right
        3: (w - x, h - y),  # turned half round
        4: (x, h - y),  # mirrored top-bottom
        5: (y, x),  # transposed
        6: (h - y, x),  # turned a quarter clockwise
        7: (h - y, w - x),  # transversed
        8: (y, w - x),  # turned a quarter counter-clockwise
    }[orientation]
    return np.stack(moved, axis=1)


def turn_boxes(boxes: np.ndarray, orientation: int, stored: tuple[int, int]) -> np.ndarray:
    """``[N, 4]`` xyxy boxes on the stored pixels, as xyxy boxes on the upright image."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if orientation == 1 or not len(boxes):
        return boxes
    a = turn_points(boxes[:, :2], orientation, stored)
    b = turn_points(boxes[:, 2:], orientation, stored)
    return np.concatenate([np.minimum(a, b), np.maximum(a, b)], axis=1).astype(np.float32)


def turn_polygons(
    polygons: list[list[float]], orientation: int, stored: tuple[int, int]
) -> list[list[float]]:
    """COCO polygons (flat ``[x1, y1, x2, y2, ...]`` lists) on the stored pixels, on the upright image."""
    return [turn_points(np.asarray(p), orientation, stored).reshape(-1).tolist() for p in polygons]
