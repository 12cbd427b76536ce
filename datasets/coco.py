"""COCO JSON <-> :class:`RecordSet`.

Category ids may be non-contiguous (COCO's 1..90): labels are ``1..C`` in increasing id order and
the record set keeps the map both ways. Images without annotations (negatives) are kept unless
``drop_empty=True``. ``iscrowd`` boxes are kept and flagged. Segmentations stay as written
(polygons or RLE) until :func:`decode_masks` rasterises them for a Mask R-CNN.

The loader reads the JSON itself and builds the records with numpy, so that a train2017-sized file
loads in about the time pycocotools ``COCO()`` takes to index it (``bench/bench_load.py``).
:func:`records_to_coco` writes records back as COCO JSON (to evaluate VOC data with COCOeval and to
export SA annotations); ``load_coco(records_to_coco(x))`` gives ``x`` back.

Exports as Roboflow writes them load as they are: an empty ``segmentation`` (``[]``) means a box
without a mask, a category that no box uses and that is another category's ``supercategory`` (the
dataset's name, as category 0) is dropped with an INFO line, and :func:`export_splits` finds the
``train/``, ``valid/`` and ``test/`` folders with their ``_annotations.coco.json``.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from datasets.common import ImageSize, check_image, safe_relpath, sanitize_boxes
from datasets.orientation import turn_boxes, turn_polygons
from datasets.records import AnnotationError, Record, RecordSet
from datasets.report import LoadReport

logger = logging.getLogger(__name__)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a large annotation file is parsed and its
    records built: they hold no reference cycles, and the collector would otherwise walk every
    object made so far each time enough new ones were (a quarter of a train2017 parse)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def read_json(path: str) -> Any:
    """A JSON file's content (UTF-8, a BOM allowed), with errors that name the file: missing, empty,
    not UTF-8 (the byte and its position), malformed (the line), nested too deeply."""
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: annotation file not found")
    if os.path.getsize(path) == 0:
        raise AnnotationError(f"{path}: annotation file is empty")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise AnnotationError(
            f"{path}: not UTF-8 (byte 0x{raw[e.start]:02x} at position {e.start}); save it as UTF-8"
        ) from e
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: malformed JSON at line {e.lineno}: {e.msg}") from e
    except RecursionError as e:
        raise AnnotationError(f"{path}: JSON nested too deeply to be a COCO file") from e


EXPORT_JSON = "_annotations.coco.json"  # Roboflow: one per split folder, the images beside it
EVAL_SPLITS = ("valid", "val", "test")  # the evaluation split of an export, in order of preference


def export_splits(root: str) -> tuple[str, str]:
    """``(training folder, evaluation folder)`` of a COCO export (Roboflow's ``train/``, ``valid/``,
    ``test/``), each holding :data:`EXPORT_JSON` and its images.

    Raises:
        AnnotationError: no ``train/`` or no evaluation folder with the JSON (the message lists what
            is there).
    """
    found = {
        d: os.path.join(root, d)
        for d in ("train", *EVAL_SPLITS)
        if os.path.isfile(os.path.join(root, d, EXPORT_JSON))
    }
    evaluation = next((found[d] for d in EVAL_SPLITS if d in found), None)
    if "train" not in found or evaluation is None:
        present = (
            sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
            if os.path.isdir(root)
            else []
        )
        raise AnnotationError(
            f"{root}: a COCO export needs train/{EXPORT_JSON} and one of "
            f"{', '.join(d + '/' for d in EVAL_SPLITS)} with its {EXPORT_JSON} (found folders "
            f"{present}); otherwise pass --coco-train-json/--coco-train-images and "
            "--coco-val-json/--coco-val-images"
        )
    return found["train"], evaluation


def strict_int(value: Any) -> int:
    """``value`` as an int when it is one exactly: no bools, no fractions, no strings, 64-bit range.

    Raises:
        ValueError: saying what is wrong with the value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not an integer")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value!r} is not an integer")
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{value!r} is out of the 64-bit range")
    return int(value)


def int_column(values: list, what: str) -> np.ndarray:
    """``values`` as int64 when every one is an exact integer (vectorised; see :func:`strict_int`).

    Raises:
        ValueError: naming ``what[k]`` and the first value that is not one.
    """
    arr = np.asarray(values) if values else np.zeros(0, np.int64)
    if arr.dtype.kind == "i":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f" and arr.ndim == 1:
        bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) >= 2.0**63)
        if not bad.any():
            return arr.astype(np.int64)
    for k, v in enumerate(values):  # name the first bad one
        try:
            strict_int(v)
        except ValueError as e:
            raise ValueError(f"{what}[{k}]: {e}") from None
    return np.array([strict_int(v) for v in values], np.int64)


def _flag(value: Any, where: str) -> bool:
    if value in (0, 1) and not isinstance(value, float) or isinstance(value, bool):
        return bool(value)
    raise AnnotationError(f"{where}: 'iscrowd' must be 0 or 1, got {value!r}")


def _check_segmentations(segms: list, ids: list, images: list[tuple], src: str) -> None:
    """:func:`check_segmentation` for every annotation; the polygons of all of them are checked at
    once (lengths and values as arrays), and one by one only to name a bad one."""
    polygons = [p for seg in segms if type(seg) is list for p in seg]
    try:
        lens = np.fromiter(map(len, polygons), np.int64, len(polygons))
        values = np.fromiter(itertools.chain.from_iterable(polygons), np.float64)
        fine = bool((lens >= 6).all() and (lens % 2 == 0).all() and np.isfinite(values).all())
    except (TypeError, ValueError):
        fine = False
    for seg, ann_id, im in zip(segms, ids, images):
        if seg is not None and (type(seg) is not list or not fine):
            check_segmentation(seg, im[4], im[3], f"{src}: annotation id {ann_id}")


def check_segmentation(seg: Any, height: int, width: int, where: str) -> None:
    """A COCO segmentation is polygons (lists of at least 3 x, y pairs) or an RLE dict whose
    ``size`` is the image's; an RLE is decoded once to prove it.

    Raises:
        AnnotationError: naming ``where`` and what is wrong.
    """
    if isinstance(seg, list):
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                raise AnnotationError(
                    f"{where}: segmentation polygon {k} needs an even number (>= 6) of "
                    f"coordinates, got {len(poly) if isinstance(poly, list) else poly!r}"
                )
            if not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in poly
            ):
                raise AnnotationError(
                    f"{where}: segmentation polygon {k} holds a value that is not a finite number"
                )
        return
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise AnnotationError(
            f"{where}: segmentation must be polygons or an RLE dict with 'counts' and 'size'"
        )
    if list(seg["size"]) != [height, width]:
        raise AnnotationError(
            f"{where}: RLE size {seg['size']} is not the image's [height, width] [{height}, {width}]"
        )
    try:
        rle = mask_utils.frPyObjects(seg, height, width) if isinstance(seg["counts"], list) else seg
        mask_utils.decode(rle)
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise AnnotationError(f"{where}: segmentation RLE cannot be decoded ({e})") from e


@collector_paused()  # the parse and the records hold no cycles: no collector walks
def load_coco(
    ann_file: str | dict,
    image_root: str,
    drop_empty: bool = False,
    check_images: bool = True,
    source: str | None = None,
) -> RecordSet:
    """Load a COCO instances file into a :class:`RecordSet`.

    Args:
        ann_file: path to the JSON, or the already-parsed dict.
        image_root: folder the images' ``file_name`` are relative to.
        drop_empty: drop (and count) images that have no annotation left.
        check_images: drop (and count) missing or unreadable images.
        source: name used in messages when ``ann_file`` is a dict.

    Raises:
        AnnotationError: empty or malformed JSON, missing fields, duplicate image or category ids,
            a file name outside ``image_root``.
    """
    src = source or (ann_file if isinstance(ann_file, str) else "<coco dict>")
    data = _instances(read_json(ann_file) if isinstance(ann_file, str) else ann_file, src)
    report = LoadReport()
    anns = data.get("annotations") or []
    classes, cat_ids = _categories(_drop_supercategories(data["categories"], anns, src), src)
    image_ids, images = _images(data["images"], src)
    if "annotations" not in data:
        logger.warning("%s: no 'annotations' key: all %d images are negatives (no objects)", src, len(images))
        report.add("no_annotations_key", src, "no 'annotations' key: every image a negative")
    ann_idx, img_idx, labels, boxes, iscrowd, ann_ids = _annotations(anns, image_ids, cat_ids, src, report)
    boxes, kept = _sane_boxes(boxes, images, img_idx, ann_idx, ann_ids, report, src)
    kept = kept[np.argsort(img_idx[kept], kind="stable")]
    bounds = np.searchsorted(img_idx[kept], np.arange(len(images) + 1))
    ann_idx = ann_idx[kept]
    segms = [anns[i].get("segmentation") or None for i in ann_idx]  # [] (Roboflow): a box without a mask
    if any(s is not None for s in segms):
        _check_segmentations(segms, [ann_ids[i] for i in ann_idx], [images[k] for k in img_idx[kept]], src)
    else:
        segms = None
    typed = (boxes[kept].astype(np.float32), labels[kept].astype(np.int64), iscrowd[kept].astype(bool))
    per_image = _Objects(*typed, anns, ann_idx, segms)
    records = []
    for k, image in enumerate(images):
        record = _record(
            image, per_image, bounds[k], bounds[k + 1], image_root, drop_empty, check_images, report, src
        )
        if record is not None:
            records.append(record)
    label_to_cat = {i + 1: c for i, c in enumerate(cat_ids)}
    dataset = RecordSet(records, classes, os.path.abspath(image_root), label_to_cat, report)
    report.log(f"COCO {src}")
    return dataset


def _sane_boxes(boxes, images, img_idx, ann_idx, ann_ids, report, src):
    """Boxes clipped to their image, the indices of those kept, and a count of images whose every
    annotation was dropped."""
    widths = np.array([im[3] for im in images], np.float32)
    heights = np.array([im[4] for im in images], np.float32)
    boxes, keep = sanitize_boxes(
        boxes,
        widths[img_idx],
        heights[img_idx],
        report,
        lambda i: f"{src}: annotation id {ann_ids[ann_idx[i]]}",
    )
    kept = np.flatnonzero(keep)
    lost = (np.bincount(img_idx, minlength=len(images)) > 0) & (
        np.bincount(img_idx[kept], minlength=len(images)) == 0
    )
    for k in np.flatnonzero(lost):
        report.add("labels_lost", f"{src}: image id {images[k][0]}", "every annotation dropped")
    return boxes, kept


def _instances(data, src: str) -> dict:
    """``data`` if it has the shape of a COCO instances file; else AnnotationError naming the key."""
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise AnnotationError(f"{src}: not a COCO instances file (needs 'images' and 'categories')")
    for key in ("images", "categories", "annotations"):
        if key in data and not isinstance(data[key], list):
            raise AnnotationError(f"{src}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


@dataclass(frozen=True)
class _Objects:
    """The kept annotations, sorted by image: boxes, labels, crowd flags, masks (None: no masks)."""

    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    anns: list
    ann_idx: np.ndarray
    segms: list | None


def _record(
    image, objects: _Objects, lo, hi, image_root, drop_empty, check_images, report, src
) -> Record | None:
    """One image's record with its objects ``lo:hi``; None when it is dropped (and counted)."""
    image_id, file_name, key, width, height = image
    if drop_empty and lo == hi:
        report.add("empty_image_dropped", src, f"image id {image_id}")
        return None
    name = safe_relpath(image_root, file_name, f"{src}: image id {image_id}", "file_name")
    boxes, masks = objects.boxes[lo:hi], objects.segms[lo:hi] if objects.segms is not None else None
    if check_images:
        size = check_image(image_root, (width, height), name, report, f"{src}: image id {image_id}")
        if size is None:
            return None
        width, height = size
        if size.turn != 1:
            boxes, masks = _turned(boxes, masks, size, f"{src}: image id {image_id}")
    difficult = _difficult(objects.anns, objects.ann_idx[lo:hi])
    return Record.trusted(  # the arrays are checked and typed once for all images (load_coco)
        key,
        name,
        width,
        height,
        boxes,
        objects.labels[lo:hi],
        np.zeros(hi - lo, bool) if difficult is None else difficult,
        objects.iscrowd[lo:hi],
        masks,
    )


def _turned(
    boxes: np.ndarray, masks: list | None, size: ImageSize, where: str
) -> tuple[np.ndarray, list | None]:
    """Boxes and polygon masks drawn on the stored pixels of an image stored turned, on the upright
    image (:mod:`datasets.orientation`).

    Raises:
        AnnotationError: an RLE mask there (its runs are not turned), naming the image.
    """
    if masks is not None and any(not isinstance(m, list) for m in masks):
        raise AnnotationError(
            f"{where}: RLE masks drawn on the stored pixels of an image with EXIF orientation {size.turn} "
            "are not read; turn the image upright (and its masks) or give polygons"
        )
    turned = None if masks is None else [turn_polygons(m, size.turn, size.stored) for m in masks]
    return turn_boxes(boxes, size.turn, size.stored), turned


def _drop_supercategories(categories: list, anns: list, src: str) -> list:
    """``categories`` without those that no annotation uses and that name another category's
    supercategory (Roboflow writes the dataset's name as category 0): not classes to learn."""
    cats = [c for c in categories if isinstance(c, dict)]
    parents = [
        c for c in cats if any(d is not c and str(d.get("supercategory")) == str(c.get("name")) for d in cats)
    ]
    if not parents:  # COCO's own categories: the annotations need no look
        return categories
    used = {str(a.get("category_id")) for a in anns if isinstance(a, dict)}
    dropped = [c for c in parents if str(c.get("id")) not in used]
    if dropped:
        logger.info(
            "%s: category %s dropped: no box uses it and it is the supercategory of the others",
            src,
            ", ".join(f"{c.get('id')} {c.get('name')!r}" for c in dropped),
        )
    return [c for c in categories if not any(c is d for d in dropped)]


def _categories(categories: list, src: str) -> tuple[tuple[str, ...], list[int]]:
    try:
        pairs = sorted((strict_int(c["id"]), str(c["name"])) for c in categories)
    except (KeyError, TypeError, ValueError) as e:
        raise AnnotationError(f"{src}: every entry of 'categories' needs an integer 'id' and a 'name'") from e
    ids = [i for i, _ in pairs]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise AnnotationError(f"{src}: duplicate category ids in 'categories': {dup}")
    return tuple(n for _, n in pairs), ids


def _images(images: list, src: str) -> tuple[np.ndarray, list[tuple]]:
    """``(ids, [(id, file_name, record id, width, height)])`` of the images, their fields checked as
    columns; one by one (:func:`_images_one_by_one`) only to name a bad one."""
    try:
        ids = int_column([im["id"] for im in images], "id")
        widths = int_column([im["width"] for im in images], "width")
        heights = int_column([im["height"] for im in images], "height")
        names = [im["file_name"] for im in images]
        fine = (
            all(type(n) is str for n in names)
            and bool(((widths >= 0) & (widths <= 100_000) & (heights >= 0) & (heights <= 100_000)).all())
            and all(isinstance(im["id"], int) and not isinstance(im["id"], bool) for im in images)
        )
    except (KeyError, TypeError, ValueError):
        fine = False
    if not fine:
        return _images_one_by_one(images, src)
    keys = [str(im.get("asm_image_id", i)) for im, i in zip(images, ids.tolist())]
    out = list(zip(ids.tolist(), names, keys, widths.tolist(), heights.tolist()))
    return _unique_ids(ids, src), out


def _unique_ids(ids: np.ndarray, src: str) -> np.ndarray:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise AnnotationError(f"{src}: duplicate image ids in 'images': {uniq[counts > 1][:10].tolist()}")
    return ids


def _images_one_by_one(images: list, src: str) -> tuple[np.ndarray, list[tuple]]:
    out = []
    for k, im in enumerate(images):
        try:
            image_id = strict_int(im["id"])
            width, height = strict_int(im["width"]), strict_int(im["height"])
            if not isinstance(im["file_name"], str):
                raise ValueError(f"'file_name' is {im['file_name']!r}, not a string")
            if not (0 <= width <= 100_000 and 0 <= height <= 100_000):
                raise ValueError(f"size {width}x{height} is out of range")
            out.append((image_id, im["file_name"], str(im.get("asm_image_id", image_id)), width, height))
        except (KeyError, TypeError, ValueError) as e:
            raise AnnotationError(
                f"{src}: images[{k}] needs integer 'id', 'width', 'height' and a 'file_name' ({e})"
            ) from e
    return _unique_ids(np.array([im[0] for im in out], dtype=np.int64), src), out


def _annotations(anns: list, image_ids: np.ndarray, cat_ids: list[int], src: str, report: LoadReport):
    """Gather the annotation fields into arrays; drop (and count) dangling references.

    Returns:
        ``(ann_idx, img_idx, labels, boxes xyxy float64, iscrowd, ann_ids)`` for the annotations
        that reference an existing image and category; ``ann_idx`` indexes ``anns``.
    """
    try:
        img = int_column(list(map(itemgetter("image_id"), anns)), "image_id")
        cat = int_column(list(map(itemgetter("category_id"), anns)), "category_id")
        xywh = np.array(list(map(itemgetter("bbox"), anns)), dtype=np.float64).reshape(len(anns), 4)
        if not np.isfinite(xywh).all():
            raise ValueError("a bbox value is not finite")
    except (KeyError, TypeError, ValueError) as e:
        bad = next((k for k, a in enumerate(anns) if not _valid_ann(a)), 0)
        raise AnnotationError(
            f"{src}: annotations[{bad}] needs integer 'image_id', 'category_id' and a 4-number 'bbox' ({e})"
        ) from e
    crowd = np.asarray([a.get("iscrowd", 0) for a in anns])
    if crowd.dtype.kind not in "biu" or not np.isin(crowd, (0, 1)).all():
        crowd = np.array(
            [_flag(a.get("iscrowd", 0), f"{src}: annotations[{k}]") for k, a in enumerate(anns)], bool
        )
    crowd = crowd.astype(bool)
    ann_ids = [a.get("id", k) for k, a in enumerate(anns)]
    order = np.argsort(image_ids)
    pos = np.clip(np.searchsorted(image_ids[order], img), 0, max(len(image_ids) - 1, 0))
    img_idx = order[pos] if len(image_ids) else np.zeros_like(img)
    ok_img = image_ids[img_idx] == img if len(image_ids) else np.zeros(len(img), bool)
    cat_sorted = np.asarray(cat_ids, np.int64)
    cpos = np.clip(np.searchsorted(cat_sorted, cat), 0, max(len(cat_sorted) - 1, 0))
    ok_cat = cat_sorted[cpos] == cat if len(cat_sorted) else np.zeros(len(cat), bool)
    for i in np.flatnonzero(~ok_img):
        report.add("missing_image_id", f"{src}: annotation id {ann_ids[i]}", f"image_id {img[i]}")
    for i in np.flatnonzero(ok_img & ~ok_cat):
        report.add("unknown_category", f"{src}: annotation id {ann_ids[i]}", f"category_id {cat[i]}")
    keep = np.flatnonzero(ok_img & ok_cat)
    boxes = np.concatenate([xywh[keep, :2], xywh[keep, :2] + xywh[keep, 2:]], axis=1)
    return keep, img_idx[keep], cpos[keep] + 1, boxes, crowd[keep], ann_ids


def _valid_ann(a: Any) -> bool:
    try:
        strict_int(a["image_id"]), strict_int(a["category_id"])
        return len(a["bbox"]) == 4 and all(np.isfinite(float(v)) for v in a["bbox"])
    except (KeyError, TypeError, ValueError):
        return False


def _difficult(anns: list, idx: np.ndarray) -> np.ndarray | None:
    # 'difficult' is not COCO; records_to_coco writes it so that VOC -> COCO -> VOC is lossless.
    if not len(idx) or "difficult" not in anns[idx[0]]:
        return None
    return np.array([bool(anns[i].get("difficult", 0)) for i in idx], dtype=bool)


def records_to_coco(dataset: RecordSet, records: list[Record] | None = None) -> dict[str, Any]:
    """COCO instances dict of ``records`` (default: all of ``dataset``).

    Image ids are the record ids when they are all integers, else ``1..N``; the record's
    ``image_id`` is also written as ``asm_image_id`` and VOC ``difficult`` as ``difficult``, so
    that :func:`load_coco` gives the same records back. Original category ids are restored.
    """
    records = dataset.records if records is None else records
    numeric = all(r.image_id.isdigit() for r in records)
    images, annotations = [], []
    for k, r in enumerate(records):
        coco_id = int(r.image_id) if numeric else k + 1
        images.append(
            {
                "id": coco_id,
                "file_name": r.file_name,
                "width": int(r.width),
                "height": int(r.height),
                "asm_image_id": r.image_id,
            }
        )
        b = r.boxes.astype(np.float64)  # float32 differences would round: stay exact
        xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
        areas = _areas(r, xywh)
        for i in range(len(r)):
            ann = {
                "id": len(annotations) + 1,
                "image_id": coco_id,
                "category_id": int(dataset.label_to_cat_id[int(r.labels[i])]),
                "bbox": [float(v) for v in xywh[i]],
                "area": areas[i],
                "iscrowd": int(r.iscrowd[i]),
                "difficult": int(r.difficult[i]),
            }
            if r.masks is not None and r.masks[i] is not None:
                ann["segmentation"] = r.masks[i]
            annotations.append(ann)
    categories = [
        {"id": int(dataset.label_to_cat_id[i + 1]), "name": name} for i, name in enumerate(dataset.classes)
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def _areas(record: Record, xywh: np.ndarray) -> list[float]:
    areas = (xywh[:, 2].astype(np.float64) * xywh[:, 3]).tolist()
    if record.masks is not None:
        for i, segm in enumerate(record.masks):
            if segm is not None:
                rle = _to_rle(segm, record.height, record.width)
                areas[i] = float(mask_utils.area(rle))
    return areas


def _to_rle(segm: Any, height: int, width: int) -> dict:
    if isinstance(segm, list):  # polygons of one object
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(segm, height, width)
    return segm


def decode_masks(record: Record) -> np.ndarray:
    """Rasterise a record's segmentations to uint8 ``[N, H, W]`` (a box without one: its box)."""
    h, w = int(record.height), int(record.width)
    out = np.zeros((len(record), h, w), dtype=np.uint8)
    for i in range(len(record)):
        segm = record.masks[i] if record.masks is not None else None
        if segm is None:
            x1, y1, x2, y2 = np.round(record.boxes[i]).astype(int)
            out[i, y1:y2, x1:x2] = 1
        else:
            out[i] = mask_utils.decode(_to_rle(segm, h, w))
    return out
