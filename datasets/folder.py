"""A folder of images with YOLO txt labels or per-instance mask PNGs -> :class:`RecordSet`.

Layouts under ``root`` (found in this order):

* YOLO: ``images/`` + ``labels/`` with ``<stem>.txt`` per image, one line per object, normalised
  to ``[0, 1]``, class from 0: ``class cx cy w h`` (a box) or ``class x1 y1 x2 y2 x3 y3 ...`` (a
  segment: its polygon becomes the object's mask and its extent the box). Class names from
  ``classes.txt`` (one per line) or ``data.yaml``/``dataset.yaml`` (``names``: list or dict); an
  image without a label file has no boxes. ``images/<split>/`` + ``labels/<split>/`` (ultralytics)
  are read as splits.
* A Roboflow YOLO export: ``train/``, ``valid/`` (or ``val/``, ``test/``) each with ``images/`` +
  ``labels/``, ``data.yaml`` beside them (:func:`export_folders`); ``valid`` is the evaluation split.
* Mask PNGs (PennFudan, torchvision's detection tutorial): ``PNGImages/`` (or ``images/``) +
  ``PedMasks/`` (or ``masks/``) with ``<stem>_mask.png`` (or ``<stem>.png``): pixel value k > 0 is
  instance k. Boxes come from the masks; masks are kept as COCO RLE for Mask R-CNN. One class
  (``--folder-classes``, default ``object``).

Bad lines raise :class:`~datasets.records.AnnotationError` naming the file and line; missing or
broken images and boxes outside the image go to the load report, as with VOC and COCO.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import yaml
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage

from datasets.common import check_image, sanitize_boxes
from datasets.records import AnnotationError, Record, RecordSet
from datasets.report import LoadReport
from datasets.voc import images_by_stem, report_shared_stems

logger = logging.getLogger(__name__)


def folder_layout(root: str) -> str:
    """``"yolo"`` or ``"masks"``.

    Raises:
        AnnotationError: neither layout; the message names both.
    """
    if os.path.isdir(os.path.join(root, "labels")):
        return "yolo"
    if _first_dir(root, ("PedMasks", "masks")):
        return "masks"
    raise AnnotationError(
        f"{root}: no labels/ (YOLO txt) and no PedMasks/ or masks/ (mask PNGs) folder; "
        "see README 'Your own data'"
    )


EVAL_FOLDERS = ("valid", "val", "test")  # the evaluation split of an export, in order of preference


def export_folders(root: str) -> tuple[str, str] | None:
    """``(training folder, evaluation folder)`` of a YOLO export (Roboflow: ``train/`` and ``valid/``,
    each with ``images/`` + ``labels/``), or ``None`` for another layout.

    Raises:
        AnnotationError: ``train/`` is there but no evaluation folder with ``images/`` + ``labels/``.
    """

    def complete(name: str) -> bool:
        return all(os.path.isdir(os.path.join(root, name, d)) for d in ("images", "labels"))

    if not complete("train"):
        return None
    evaluation = next((d for d in EVAL_FOLDERS if complete(d)), None)
    if evaluation is None:
        raise AnnotationError(
            f"{root}: train/ holds images/ + labels/ but none of "
            f"{', '.join(d + '/' for d in EVAL_FOLDERS)} does; export a validation split too, "
            f"or pass --folder-root {os.path.join(root, 'train')} to split it by seed"
        )
    return os.path.join(root, "train"), os.path.join(root, evaluation)


def folder_splits(root: str) -> list[str]:
    """Split names present as ``images/<split>/`` (ultralytics); empty for a flat folder."""
    images = os.path.join(root, "images")
    if not os.path.isdir(images):
        return []
    return sorted(d for d in os.listdir(images) if os.path.isdir(os.path.join(images, d)))


def image_stems(root: str, split: str | None = None) -> list[str]:
    """Stems of the images of a split (``None``: the flat image folder)."""
    return sorted(images_by_stem(_image_dir(root, split)))


MAX_UNLABELLED = 0.5  # more images than this share without a label file: the labels were not found


def load_folder(
    root: str,
    stems: Sequence[str] | None = None,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    allow_missing_labels: bool = False,
) -> RecordSet:
    """Records of the images ``stems`` (default all) of ``root``'s ``split`` folder (default flat).

    Label files without an image, images sharing a stem and images without a label file are counted
    in the report; more than half the images without a label file is an error unless
    ``allow_missing_labels`` (the labels were most likely not found: ``img.jpg.txt``, another folder).
    """
    root = os.path.abspath(root)
    layout = folder_layout(root)
    image_dir = _image_dir(root, split)
    by_stem = images_by_stem(image_dir)
    stems = sorted(by_stem) if stems is None else list(stems)
    report = LoadReport()
    report_shared_stems(image_dir, by_stem, report)
    if classes is not None and len(classes) == 1 and os.path.isfile(classes[0]):
        classes = read_class_names(classes[0])
    if layout == "yolo":
        classes = tuple(classes or yolo_classes(root))
        label_dir = os.path.join(root, "labels", split) if split else os.path.join(root, "labels")
        if not os.path.isdir(label_dir):
            raise AnnotationError(f"{label_dir}: no such folder (the labels of {image_dir})")
    else:
        classes = tuple(classes or ("object",))
        mask_dir = _first_dir(root, ("PedMasks", "masks"))
    label_folder = label_dir if layout == "yolo" else mask_dir
    _report_orphans(label_folder, layout, by_stem, image_dir, report)
    records = []
    for stem in stems:
        name = by_stem.get(stem, f"{stem}.jpg")
        path = os.path.join(image_dir, name)
        file_name = os.path.relpath(path, root).replace(os.sep, "/")
        size = check_image(root, (0, 0), file_name, report, path)  # a folder states no size
        if size is None:
            continue
        if layout == "yolo":
            label_path = os.path.join(label_dir, f"{stem}.txt")
            if not os.path.isfile(label_path):
                report.add("no_label_file", path, f"expected {label_path}")
            record = _yolo_record(label_path, stem, file_name, size, len(classes), report)
        else:
            record = _mask_record(mask_dir, stem, file_name, size, report)
        records.append(record)
    report.log(f"folder {root} ({layout}{', ' + split if split else ''})")
    if not allow_missing_labels:
        _check_labels_found(image_dir, len(records), report)
    return RecordSet(records, classes, root, report=report)


def _report_orphans(
    label_folder: str, layout: str, by_stem: dict, image_dir: str, report: LoadReport
) -> None:
    """Count the label files (YOLO .txt, mask .png) whose image is not there."""
    for name in sorted(os.listdir(label_folder)):
        stem = name[:-4] if layout == "yolo" else name[:-4].removesuffix("_mask")
        if name.endswith(".txt" if layout == "yolo" else ".png") and stem not in by_stem:
            report.add("orphan_label", os.path.join(label_folder, name), f"no image {stem}.* in {image_dir}")


def _check_labels_found(image_dir: str, images: int, report: LoadReport) -> None:
    """AnnotationError when more than :data:`MAX_UNLABELLED` of the images have no label file."""
    missing = report.counts.get("no_label_file", 0)
    if images and missing > MAX_UNLABELLED * images:
        example = report.of("no_label_file")[0][1]
        raise AnnotationError(
            f"{image_dir}: {missing} of {images} images have no label file ({example}); "
            "labels are <image stem>.txt in the matching labels/ folder. Pass "
            "--allow-missing-labels if most images really have no objects"
        )


def yolo_classes(root: str) -> list[str]:
    """Class names from ``classes.txt`` or ``data.yaml``/``dataset.yaml`` ``names`` in ``root``."""
    for name in ("classes.txt", "data.yaml", "dataset.yaml"):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return read_class_names(path)
    raise AnnotationError(
        f"{root}: YOLO labels need class names: classes.txt (one per line) or data.yaml "
        "'names', or pass --folder-classes (names, or one such file)"
    )


def read_class_names(path: str) -> list[str]:
    """Class names of a text file (one per line) or a YAML file's ``names`` (a list, or a dict whose
    keys are the class numbers 0, 1, 2, ... with none missing).

    Raises:
        AnnotationError: not UTF-8, not valid YAML, or ``names`` of another shape (the file and the
            problem named).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise AnnotationError(
            f"{path}: not UTF-8 text (byte {e.start}); save the class names as UTF-8"
        ) from None
    if not path.endswith((".yaml", ".yml")):
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise AnnotationError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        keys = list(names)
        if not all(isinstance(k, int) for k in keys):
            raise AnnotationError(
                f"{path}: 'names' keys must be the class numbers 0, 1, 2, ..., got {keys[:5]}"
            )
        if sorted(keys) != list(range(len(keys))):
            missing = sorted(set(range(max(keys) + 1)) - set(keys))
            raise AnnotationError(
                f"{path}: 'names' has no class {missing[:5]}; YOLO class numbers run 0..N-1 without gaps"
            )
        return [str(names[k]) for k in sorted(keys)]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise AnnotationError(f"{path}: field 'names' must be a list or a dict of class names")


def _yolo_record(path, stem, file_name, size, num_classes, report) -> Record:
    width, height = size
    labels, boxes, segms = [], [], []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                cls, box, polygon = _yolo_line(fields, f"{path}, line {lineno}", num_classes, width, height)
                labels.append(cls + 1)
                boxes.append(box)
                segms.append(None if polygon is None else [polygon])
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    masks = segms if any(s is not None for s in segms) else None  # a box line's mask is its box
    boxes, keep = sanitize_boxes(boxes, width, height, report, path)
    if len(keep) and not keep.any():
        report.add("labels_lost", path, f"all {len(keep)} boxes dropped")
    record = Record(stem, file_name, width, height, boxes, np.array(labels, np.int64), masks=masks)
    return record if keep.all() else record.select(keep)


def _yolo_line(fields, where, num_classes, width, height) -> tuple[int, list[float], list[float] | None]:
    """``(class, box in pixels, polygon in pixels or None)`` of a box or a segment (polygon) line."""
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        raise AnnotationError(
            f"{where}: expected 'class cx cy w h' (box) or 'class x1 y1 x2 y2 x3 y3 ...' "
            f"(segment, 3 points or more), got {len(fields)} fields"
        )
    try:
        cls, coords = int(fields[0]), np.array(fields[1:], np.float64)
    except ValueError as e:
        raise AnnotationError(f"{where}: {e}") from e
    if not 0 <= cls < num_classes:
        raise AnnotationError(f"{where}: class {cls} outside 0..{num_classes - 1}")
    if not np.isfinite(coords).all():
        raise AnnotationError(f"{where}: non-finite coordinate")
    if np.abs(coords).max() > 1.01:  # rounding can overshoot 1 a little; pixels overshoot a lot
        raise AnnotationError(
            f"{where}: coordinate {np.abs(coords).max():g} is not normalised to [0, 1] (YOLO "
            "labels are fractions of the image width and height, not pixels)"
        )
    if len(fields) == 5:
        cx, cy, w, h = coords
        return (
            cls,
            [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height],
            None,
        )
    xy = coords.reshape(-1, 2) * (width, height)
    box = [*xy.min(0), *xy.max(0)]
    return cls, box, [round(float(v), 2) for v in xy.ravel()]


def _mask_record(mask_dir, stem, file_name, size, report) -> Record:
    width, height = size
    path = next(
        (
            p
            for p in (os.path.join(mask_dir, f"{stem}_mask.png"), os.path.join(mask_dir, f"{stem}.png"))
            if os.path.isfile(p)
        ),
        None,
    )
    if path is None:
        raise AnnotationError(f"{mask_dir}: no mask for image {file_name} ({stem}_mask.png or {stem}.png)")
    with Image.open(path) as im:
        ids = np.asarray(im)
    if ids.ndim != 2 or ids.shape != (height, width):
        raise AnnotationError(
            f"{path}: mask is {ids.shape}, expected one channel of {height}x{width} (the image)"
        )
    boxes, masks = [], []
    for m in _instances(ids, path, report):
        ys, xs = np.nonzero(m)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        masks.append({"size": [height, width], "counts": rle["counts"].decode("ascii")})
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    boxes, keep = sanitize_boxes(boxes, width, height, report, path)
    record = Record(stem, file_name, width, height, boxes, np.ones(len(boxes), np.int64), masks=masks)
    return record if keep.all() else record.select(keep)


MIN_REGION = 16  # pixels: a smaller separate region of a mask value is a speck, not an object


def _instances(ids: np.ndarray, path: str, report: LoadReport) -> list[np.ndarray]:
    """One boolean mask per object of an instance-id mask: each non-zero value, split into its
    separate regions (8-connected) when it has several (a 0/255 mask of two people is two objects,
    counted as ``mask_split``); regions under :data:`MIN_REGION` pixels are dropped."""
    out = []
    for k in np.unique(ids):
        if k == 0:
            continue
        regions, count = ndimage.label(ids == k, structure=np.ones((3, 3), bool))
        if count == 1:
            out.append(regions == 1)
            continue
        sizes = np.bincount(regions.ravel())[1:]
        kept = [regions == r + 1 for r in np.flatnonzero(sizes >= MIN_REGION)]
        report.add(
            "mask_split",
            path,
            f"value {int(k)}: {count} separate regions, {len(kept)} objects (under {MIN_REGION} px dropped)",
        )
        out += kept
    return out


def _first_dir(root: str, names: Sequence[str]) -> str | None:
    return next((os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))), None)


def _image_dir(root: str, split: str | None) -> str:
    if split:
        return os.path.join(root, "images", split)
    found = _first_dir(root, ("images", "PNGImages", "JPEGImages"))
    if found is None:
        raise AnnotationError(f"{root}: no images/ (or PNGImages/, JPEGImages/) folder")
    return found
