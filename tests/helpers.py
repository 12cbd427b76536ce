"""Builders of small VOC and COCO folders for bad-input tests."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from PIL import Image


def voc_xml(
    filename: str = "a.jpg", size=(64, 48), objects=(("cat", (5, 5, 30, 30)),), extra: str = ""
) -> str:
    objs = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects
    )
    return (
        f"{extra}<annotation><filename>{filename}</filename><path>/elsewhere/{filename}</path>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        f"{objs}</annotation>"
    )


def detection(scores, labels, boxes) -> dict:
    """A detector's answer for one image, in the dtypes torchvision's models give."""
    return {
        "scores": np.asarray(scores, np.float32),
        "labels": np.asarray(labels, np.int64),
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
    }


def write_image(path: str, size=(64, 48), value: int = 128) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def make_voc(
    root,
    annotations: dict[str, str],
    images: dict[str, tuple[int, int]] | None = None,
    split: str = "train",
    split_ids: list[str] | None = None,
) -> str:
    """Write a VOC folder: ``annotations`` maps id -> XML text, ``images`` file name -> size."""
    root = str(root)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for image_id, text in annotations.items():
        with open(os.path.join(root, "Annotations", f"{image_id}.xml"), "w") as f:
            f.write(text)
    for name, size in (images if images is not None else {f"{i}.jpg": (64, 48) for i in annotations}).items():
        write_image(os.path.join(root, "JPEGImages", name), size)
    with open(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "w") as f:
        f.writelines(f"{i}\n" for i in (split_ids if split_ids is not None else annotations))
    return root


def coco_dict(images=((1, "a.jpg", 64, 48),), anns=((1, 1, [5, 5, 20, 20]),), cats=((1, "cat"),)) -> dict:
    return {
        "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in images],
        "annotations": [
            {"id": k + 1, "image_id": img, "category_id": cat, "bbox": bbox, "iscrowd": 0, "area": 1.0}
            for k, (img, cat, bbox) in enumerate(anns)
        ],
        "categories": [{"id": i, "name": n} for i, n in cats],
    }


def write_coco(folder, data: dict | str, image_sizes: dict[str, tuple[int, int]] | None = None) -> str:
    """Write ``instances.json`` (a dict, or raw text) and the images; return the JSON path."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "instances.json")
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    if image_sizes is None and isinstance(data, dict):
        image_sizes = {im["file_name"]: (im["width"], im["height"]) for im in data["images"]}
    for name, size in (image_sizes or {}).items():
        write_image(os.path.join(folder, "images", name), size)
    return path


def plain_state(value):
    """Tensors as lists, so states compare with ==."""
    if isinstance(value, dict):
        return {k: plain_state(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_state(v) for v in value]
    return value.tolist() if isinstance(value, torch.Tensor) else value


def tiny_demo(train: int, val: int = 4) -> list[str]:
    """The flags of a one-epoch demo run at 64 pixels on ``train`` + ``val`` images."""
    return ["--demo-train", str(train), "--demo-val", str(val), "--min-size", "64", "--epochs", "1"]


def paused_demo_argv(tmp_path, out: str) -> list[str]:
    """A tiny demo run that pauses at round 1 for a human (``--oracle none``): 3 images with the
    model's boxes as pre-annotations (low thresholds, so that a 1-epoch model offers some)."""
    return [
        *tiny_demo(16),
        "--round-epochs",
        "1",
        "--K",
        "3",
        "--initial",
        "6",
        "--max-rounds",
        "1",
        "--oracle",
        "none",
        "--certain-thre",
        "0.05",
        "--uncertain-thre",
        "0.04",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output-dir",
        out,
    ]
