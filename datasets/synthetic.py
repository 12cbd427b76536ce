"""The built-in demo dataset: coloured shapes on textured backgrounds.

Written once to a cache folder as a real Pascal VOC folder (JPEG + XML + ImageSets) and as COCO
JSON with polygon masks, so that the demo goes through the same loaders as real data::

    <root>/VOC/JPEGImages/demo_000000.jpg
    <root>/VOC/Annotations/demo_000000.xml
    <root>/VOC/ImageSets/Main/{train,val,trainval}.txt
    <root>/annotations/instances_{train,val}.json   (file_name relative to VOC/)

It is sized for the demo's detector on two CPU cores (a backbone pretrained on other images of this
generator, ``bench/pretrain_demo_backbone.py``): four classes told apart by shape (and loosely by
hue), one to three objects of 40-96 px in 192-256 px images, textured backgrounds, about 6% empty
images and a little overlap. Each image is drawn from its own seed, so the data are
identical for a seed on every machine and generating 600 images takes a few seconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_iou

from datasets.cache import default_cache_dir
from datasets.coco import load_coco, records_to_coco
from datasets.records import Record, RecordSet
from datasets.voc import load_voc, voc_xml

logger = logging.getLogger(__name__)

DEMO_CLASSES = ("circle", "square", "triangle", "cross")
DEMO_VERSION = 5  # 5: upright shapes; 4: fewer, larger objects (1-3 of 40-96 px); 3: COCO files
_EMPTY_FRACTION = 0.06
_IMAGE_SIZES = (192, 257)  # px: width and height drawn from [low, high)
_MAX_OBJECTS = 3
_SIZES = (42.0, 92.0)  # px: a shape's extent, whatever its rotation
_MAX_OVERLAP_IOU = 0.3


def demo_root(seed: int = 0, num_train: int = 500, num_val: int = 100, cache_dir: str | None = None) -> str:
    """Folder of the demo dataset for these settings, generating it on first use."""
    base = cache_dir or default_cache_dir()
    root = os.path.join(base, f"demo-v{DEMO_VERSION}-seed{seed}-{num_train}-{num_val}")
    if not os.path.isfile(os.path.join(root, "DONE")):
        write_demo(root, seed, num_train, num_val)
    return root


def load_demo(
    split: str = "train",
    fmt: str = "voc",
    seed: int = 0,
    num_train: int = 500,
    num_val: int = 100,
    cache_dir: str | None = None,
) -> RecordSet:
    """Records of a demo split (``train`` or ``val``), read through the VOC or the COCO loader."""
    root = demo_root(seed, num_train, num_val, cache_dir)
    if fmt == "voc":
        return load_voc(os.path.join(root, "VOC"), split, classes=DEMO_CLASSES, cache_dir=cache_dir)
    if fmt == "coco":
        ann = os.path.join(root, "annotations", f"instances_{split}.json")
        return load_coco(ann, os.path.join(root, "VOC"))
    raise ValueError(f"unknown demo format {fmt!r}; choose 'voc' or 'coco'")


def write_demo(root: str, seed: int, num_train: int, num_val: int) -> None:
    """Generate the dataset into ``root`` atomically (a temp folder renamed into place)."""
    os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(root)), prefix=".demo_tmp_")
    try:
        voc = os.path.join(tmp, "VOC")
        for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
            os.makedirs(os.path.join(voc, sub))
        os.makedirs(os.path.join(tmp, "annotations"))
        splits = {"train": range(num_train), "val": range(num_train, num_train + num_val)}
        for split, indices in splits.items():
            records = []
            for index in indices:
                image, objects = render_image(seed, index, rotate=False)
                record = _record(f"demo_{index:06d}", image.size, objects)
                image.save(os.path.join(voc, record.file_name), quality=92)
                with open(
                    os.path.join(voc, "Annotations", f"{record.image_id}.xml"), "w", encoding="utf-8"
                ) as f:
                    f.write(voc_xml(record, DEMO_CLASSES))
                records.append(record)
            with open(os.path.join(voc, "ImageSets", "Main", f"{split}.txt"), "w") as f:
                f.writelines(f"demo_{i:06d}\n" for i in indices)
            with open(os.path.join(tmp, "annotations", f"instances_{split}.json"), "w") as f:
                json.dump(records_to_coco(RecordSet(records, DEMO_CLASSES, voc)), f)
        with open(os.path.join(voc, "ImageSets", "Main", "trainval.txt"), "w") as f:
            f.writelines(f"demo_{i:06d}\n" for i in range(num_train + num_val))
        open(os.path.join(tmp, "DONE"), "w").close()
        if os.path.isdir(root):  # an older, incomplete attempt
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("demo dataset written to %s (%d train, %d val)", root, num_train, num_val)


def render_image(
    seed: int, index: int, rotate: bool = True
) -> tuple[Image.Image, list[tuple[int, list[float]]]]:
    """Draw image ``index`` of the dataset with this seed. The demo's shapes stand upright
    (``rotate=False``): their boxes are edges a detector can fit at IoU 0.8, as SL needs; the
    backbone's pretraining images (``bench/pretrain_demo_backbone.py``) turn them.

    Returns:
        The RGB image and its objects as ``(label 1..C, flat polygon [x0, y0, x1, y1, ...])``.
    """
    rng = np.random.default_rng([seed, index])
    width, height = (int(v) for v in rng.integers(*_IMAGE_SIZES, size=2))
    image = Image.fromarray(_background(rng, width, height))
    draw = ImageDraw.Draw(image)
    objects: list[tuple[int, list[float]]] = []
    boxes: list[np.ndarray] = []
    count = 0 if rng.random() < _EMPTY_FRACTION else int(rng.integers(1, _MAX_OBJECTS + 1))
    for _ in range(count * 10):  # a few tries per object to respect the overlap limit
        if len(objects) == count:
            break
        label = int(rng.integers(1, len(DEMO_CLASSES) + 1))
        size = float(rng.uniform(*_SIZES))
        cx, cy = rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)
        angle = float(rng.uniform(0, 2 * np.pi))  # drawn either way: one random stream for both
        poly = _shape(DEMO_CLASSES[label - 1], cx, cy, size, angle if rotate else 0.0)
        box = np.array([*poly.min(0), *poly.max(0)])
        inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
        if not inside or (
            boxes
            and box_iou(torch.from_numpy(box[None]), torch.from_numpy(np.stack(boxes))).max()
            > _MAX_OVERLAP_IOU
        ):
            continue
        draw.polygon([tuple(p) for p in poly], fill=_colour(rng, label))
        boxes.append(box)
        objects.append((label, [round(float(v), 2) for v in poly.reshape(-1)]))
    return image, objects


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    coarse = rng.uniform(70, 170, size=(4, 4, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), np.float32)
    stripes = 12 * np.sin(np.arange(width) / rng.uniform(3, 9) + rng.uniform(0, 6))[None, :, None]
    noise = rng.normal(0, 10, size=(height, width, 1))
    return np.clip(base + stripes + noise, 0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator, label: int) -> tuple[int, int, int]:
    hue = (label - 1) / len(DEMO_CLASSES) + rng.uniform(-0.12, 0.12)
    rgb = np.clip(np.abs(((hue % 1) * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1)
    value = rng.uniform(0.75, 1.0)
    return tuple(int(v) for v in (40 + 215 * value * rgb))


def _shape(name: str, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    """Polygon ``[K, 2]`` of a shape whose bounding box is about ``size`` wide."""
    r = size / 2
    if name == "circle":
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    if name == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * r * 0.75
        angle = angle % (np.pi / 8)  # mostly upright: keeps the box tight
    elif name == "triangle":
        t = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) - np.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * r
    else:  # cross
        a, b = 1.0, 0.33
        pts = (
            np.array(
                [
                    [-b, -a],
                    [b, -a],
                    [b, -b],
                    [a, -b],
                    [a, b],
                    [b, b],
                    [b, a],
                    [-b, a],
                    [-b, b],
                    [-a, b],
                    [-a, -b],
                    [-b, -b],
                ]
            )
            * r
        )
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T + np.array([cx, cy])


def _record(name: str, size: tuple[int, int], objects) -> Record:
    """The record of a rendered image: boxes are the polygons' extents, masks the polygons."""
    boxes = [
        [float(v) for v in (*xy.min(0), *xy.max(0))] for xy in (np.reshape(p, (-1, 2)) for _, p in objects)
    ]
    return Record(
        name,
        f"JPEGImages/{name}.jpg",
        size[0],
        size[1],
        np.reshape(boxes, (-1, 4)),
        [label for label, _ in objects],
        masks=[[p] for _, p in objects],
    )
