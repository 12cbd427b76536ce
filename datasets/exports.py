"""Datasets as labelling tools export them: LabelMe, CVAT for images 1.1 and Label Studio JSON.

* LabelMe: one JSON per image (``shapes``: rectangles, polygons, circles; the image beside it under
  ``imagePath``, or embedded in ``imageData``), anywhere under ``--labelme-root``.
* CVAT for images 1.1: ``annotations.xml`` (boxes, polygons, ellipses; labels in ``<meta>``) and
  ``images/`` under ``--cvat-root``.
* Label Studio: the JSON export (a list of tasks) and the folder of its images (``--ls-json``,
  ``--ls-images``); an uploaded image's name (``/data/upload/1/3f2a1b7c-x.jpg``) finds ``x.jpg``.

The three readers (:func:`parse_labelme`, :func:`parse_cvat`, :func:`parse_label_studio`) turn a
file into :class:`Item` s (an image name and its :class:`Shape` s); the same readers serve the
import of a labelled round (``tools/loop/labelling.py``). :func:`load_export` turns items into a
:class:`RecordSet`: polygons become boxes and masks (a rectangle's mask is the rectangle), a shape
it cannot read is counted (``bad_shape``, ``unsupported_shape``) and never dropped without a word,
and no path outside the root is ever read.

Our own readers, not ``globox``: globox reads boxes alone (no polygons, so no masks), does not read
LabelMe's embedded ``imageData``, and stops at the first bad file rather than counting it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

import numpy as np
from lxml import etree

from datasets.atomic import atomic_open
from datasets.cache import default_cache_dir
from datasets.coco import read_json
from datasets.common import (
    IMAGE_EXTENSIONS,
    check_image,
    is_absolute_name,
    read_image_size,
    safe_relpath,
    sanitize_boxes,
)
from datasets.orientation import turn_points
from datasets.records import AnnotationError, Record, RecordSet
from datasets.report import LoadReport
from datasets.voc import xml_parser

logger = logging.getLogger(__name__)

CVAT_XML = "annotations.xml"  # CVAT for images 1.1: this file and images/ beside it
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio renames uploads to <8 hex digits>-<name>


@dataclass
class Shape:
    """One labelled shape in pixels: ``points`` ``[N, 2]``; a ``box`` has its two corners, a
    ``polygon`` three or more points (a rotated rectangle's four corners, an ellipse's outline)."""

    label: str
    kind: str  # "box" or "polygon"
    points: np.ndarray
    where: str  # the file and field, for messages
    group: Any = None  # LabelMe group_id: shapes of one label and group are one object
    rotated: bool = False
    occluded: bool = False  # CVAT's occluded="1": kept as the record's difficult flag

    @property
    def box(self) -> list[float]:
        """xyxy: a box's corners as written (an inverted one stays inverted, and is refused or
        counted later), an outline's extent."""
        if self.kind == "box":
            return self.points[:2].reshape(-1).tolist()
        return [*self.points.min(0).tolist(), *self.points.max(0).tolist()]

    @property
    def polygon(self) -> list[float]:
        """The outline as a COCO polygon (flat x, y); a box's is its four corners."""
        if self.kind == "polygon":
            return self.points.reshape(-1).tolist()
        x0, y0, x1, y1 = self.box
        return [x0, y0, x1, y0, x1, y1, x0, y1]


@dataclass
class Item:
    """One annotated image as a tool names it (a path, an upload URL), with its shapes."""

    name: str
    where: str
    shapes: list[Shape] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)  # (width, height) as the file says; 0 when it does not
    embedded: bytes | None = None  # LabelMe imageData


# -- reading -------------------------------------------------------------------------------------
def _points(value: Any, where: str) -> np.ndarray:
    try:
        points = np.asarray(value, np.float64)
    except (TypeError, ValueError) as e:
        raise AnnotationError(f"{where}: points must be [[x, y], ...] numbers ({e})") from e
    if points.ndim != 2 or points.shape[1] != 2:  # triples or a flat list: not read as pairs silently
        raise AnnotationError(f"{where}: points must be [[x, y], ...] pairs, got shape {list(points.shape)}")
    if not len(points) or not np.isfinite(points).all():
        raise AnnotationError(f"{where}: points must be finite numbers, got {value!r}")
    return points


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _rotated(x: float, y: float, w: float, h: float, degrees: float) -> np.ndarray:
    """The corners of a ``w`` x ``h`` rectangle at ``(x, y)``, turned clockwise by ``degrees`` about
    its top-left corner (Label Studio) ."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return np.array(
        [(x + dx * c - dy * s, y + dx * s + dy * c) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    )


def _rotated_about_centre(x0: float, y0: float, x1: float, y1: float, degrees: float) -> np.ndarray:
    """The corners of the box ``x0, y0, x1, y1`` turned clockwise by ``degrees`` about its centre
    (CVAT's ``rotation``)."""
    cx, cy, a = (x0 + x1) / 2, (y0 + y1) / 2, math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    corners = np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]) - (cx, cy)
    return corners @ np.array([[c, s], [-s, c]]) + (cx, cy)


LABELME_KEYS = {  # field -> its spellings, newest first (old LabelMe, and tools writing its format)
    "shapes": ("shapes",),
    "image_path": ("imagePath", "image_path", "filename"),
    "image_data": ("imageData", "image_data"),
    "width": ("imageWidth", "image_width", "width"),
    "height": ("imageHeight", "image_height", "height"),
    "shape_type": ("shape_type", "shapeType", "type"),
    "group_id": ("group_id", "groupId"),
}


def _size(value: Any, path: str, field: str) -> int:
    """An image side from a LabelMe file: a whole number of pixels (0: not given).

    Raises:
        AnnotationError: naming the file and the field (``"800px"``, ``Infinity``, ``-3``).
    """
    if value in (None, ""):
        return 0
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number < 0 or number != int(number):
        raise AnnotationError(f"{path}: field '{field}' must be a whole number of pixels, got {value!r}")
    return int(number)


def _key(data: dict, name: str, default: Any = None) -> Any:
    return next((data[k] for k in LABELME_KEYS[name] if k in data), default)


def parse_labelme(path: str, report: LoadReport) -> Item:
    """One LabelMe JSON: its image path, embedded image and shapes. Shapes it cannot read (a polygon
    of fewer than 3 points, a line or a point) are counted in ``report`` (``bad_shape``,
    ``unsupported_shape``).

    Raises:
        AnnotationError: not JSON, not UTF-8, or not a LabelMe file (no ``shapes`` list).
    """
    data = read_json(path)
    shapes = _key(data, "shapes") if isinstance(data, dict) else None
    if not isinstance(shapes, list):
        raise AnnotationError(f"{path}: no 'shapes' list: not a LabelMe file")
    embedded = _key(data, "image_data")
    if embedded:
        try:
            embedded = base64.b64decode(embedded, validate=True)
        except (binascii.Error, TypeError, ValueError) as e:  # the image on disk may still be there
            report.add("bad_image_data", path, f"field 'imageData' is not base64 ({e}); read from imagePath")
            embedded = None
    size = tuple(
        _size(_key(data, k, 0), path, field)
        for k, field in (("width", "imageWidth"), ("height", "imageHeight"))
    )
    image_path = _key(data, "image_path", "") or ""
    if not isinstance(image_path, str) or "\x00" in image_path:
        raise AnnotationError(f"{path}: field 'imagePath' must be a file name, got {image_path!r}")
    item = Item(image_path, path, [], size, embedded or None)
    for k, shape in enumerate(shapes):
        where = f"{path}: shapes[{k}]"
        if not isinstance(shape, dict) or not str(shape.get("label", "")).strip():
            report.add("bad_shape", where, "no label")
            continue
        kind = _key(shape, "shape_type", "polygon") or "polygon"  # LabelMe 3 wrote polygons without a type
        try:
            points = _points(shape.get("points"), where)
        except AnnotationError as e:
            report.add("bad_shape", where, str(e).split(": ", 2)[-1])
            continue
        label, group = str(shape["label"]).strip(), _key(shape, "group_id")
        if group is not None and not isinstance(group, (int, str)) or isinstance(group, bool):
            report.add("bad_shape", where, f"group_id must be a number or a name, got {group!r}")
            continue
        if kind == "rectangle" and len(points) >= 2:  # LabelMe draws from any corner
            item.shapes.append(Shape(label, "box", np.stack([points.min(0), points.max(0)]), where, group))
        elif kind == "polygon" and len(points) >= 3:
            item.shapes.append(Shape(label, "polygon", points, where, group))
        elif kind == "circle" and len(points) == 2:
            r = float(np.hypot(*(points[1] - points[0])))
            item.shapes.append(Shape(label, "polygon", _ellipse(*points[0], r, r), where, group))
        elif kind in ("rectangle", "polygon", "circle"):
            report.add("bad_shape", where, f"a {kind} of {len(points)} points")
        else:
            report.add("unsupported_shape", where, f"shape_type {kind!r} (not an object outline)")
    return item


def parse_cvat(path: str, report: LoadReport | None = None) -> tuple[list[str], list[Item]]:
    """CVAT for images 1.1 XML: its labels (``<meta>``, in order) and one item per ``<image>``.

    Boxes (a rotated one as its four corners), polygons and ellipses are read; other shapes
    (masks, polylines, points) are counted in ``report`` as ``unsupported_shape``, or raise without
    one, as does a polygon of fewer than 3 points (``bad_shape``).

    Raises:
        AnnotationError: malformed XML (its line), another root than ``<annotations>``, a
            non-numeric coordinate.
    """
    with open(path, "rb") as f:
        raw = f.read()
    try:
        root = etree.fromstring(raw, xml_parser())
    except etree.XMLSyntaxError as e:  # also text that is not UTF-8 and declares no encoding
        raise AnnotationError(f"{path}: malformed CVAT XML at line {e.lineno}: {e.msg}") from e
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):  # as VOC XML: never expanded, refused
        raise AnnotationError(f"{path}: declares XML entities; refusing to expand them")
    if root.tag != "annotations":
        raise AnnotationError(f"{path}: not a CVAT for images 1.1 file (root <{root.tag}>)")
    labels = [n.text.strip() for n in root.iterfind("meta//labels/label/name") if n.text and n.text.strip()]
    if root.find("track") is not None and root.find("image") is None:
        raise AnnotationError(
            f"{path}: a CVAT video export (<track> elements): its boxes are not read; export the task as "
            "'CVAT for images 1.1'"
        )
    items = []
    for image in root.iter("image"):
        where = f"{path}: line {image.sourceline}"
        size = tuple(_cvat_number(image, k, where, 0) for k in ("width", "height"))
        item = Item(image.get("name", ""), where, [], (int(size[0]), int(size[1])))
        for node in image:
            _cvat_shape(node, item, path, report)
        items.append(item)
    return labels, items


def _cvat_number(node, key: str, where: str, default=None) -> float:
    value = node.get(key)
    if value is None and default is not None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        raise AnnotationError(f"{where}: <{node.tag}> needs a numeric {key}, got {value!r}") from e
    if not math.isfinite(number):
        raise AnnotationError(f"{where}: <{node.tag}> {key} is not finite ({value!r})")
    return number


def _cvat_shape(node, item: Item, path: str, report: LoadReport | None) -> None:
    where = f"{path}: line {node.sourceline}"
    label = (node.get("label") or "").strip()
    before = len(item.shapes)
    if node.tag == "tag" or not isinstance(node.tag, str):
        return  # an image-level tag, or a comment
    if node.tag == "box":
        x0, y0, x1, y1 = (_cvat_number(node, k, where) for k in ("xtl", "ytl", "xbr", "ybr"))
        angle = _cvat_number(node, "rotation", where, 0.0) % 360
        if angle:
            corners = _rotated_about_centre(x0, y0, x1, y1, angle)
            item.shapes.append(Shape(label, "polygon", corners, where, rotated=True))
        else:
            item.shapes.append(Shape(label, "box", np.array([[x0, y0], [x1, y1]]), where))
    elif node.tag == "polygon":
        try:
            points = np.array(
                [[float(v) for v in p.split(",")] for p in (node.get("points") or "").split(";")], np.float64
            )
        except ValueError as e:
            raise AnnotationError(f"{where}: <polygon> points must be 'x,y;x,y;...' numbers") from e
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
            _bad(report, "bad_shape", where, f"a polygon of {len(points)} points")
            return
        item.shapes.append(Shape(label, "polygon", points, where))
    elif node.tag == "ellipse":
        cx, cy, rx, ry = (_cvat_number(node, k, where) for k in ("cx", "cy", "rx", "ry"))
        item.shapes.append(Shape(label, "polygon", _ellipse(cx, cy, rx, ry), where))
    else:
        _bad(report, "unsupported_shape", where, f"<{node.tag}> (not a box, polygon or ellipse)")
    if len(item.shapes) > before:
        item.shapes[-1].occluded = node.get("occluded", "0").strip() == "1"


def _bad(report: LoadReport | None, reason: str, where: str, detail: str) -> None:
    if report is None:
        raise AnnotationError(f"{where}: {detail}")
    report.add(reason, where, detail)


LS_SHAPES = ("rectanglelabels", "polygonlabels", "ellipselabels")


def parse_label_studio(
    path: str, report: LoadReport | None = None, sizes: dict[str, tuple[int, int]] | None = None
) -> list[tuple[Item, list[dict] | None]]:
    """A Label Studio JSON export: one item per task (the image's URL or path as ``name``) with the
    result of its last completed annotation, unconverted (percent of the image; see
    :func:`label_studio_shapes`).

    A task without a completed annotation has ``None`` for its result, or is counted as
    ``no_annotation`` with a ``report`` (a dataset keeps only what a human labelled).

    Raises:
        AnnotationError: not JSON, not a list of tasks, a task without ``data``.
    """
    tasks = read_json(path)
    if not isinstance(tasks, list):
        raise AnnotationError(f"{path}: a Label Studio JSON export is a list of tasks (export as JSON)")
    out = []
    for k, task in enumerate(tasks):
        where = f"{path}: task {task.get('id', k) if isinstance(task, dict) else k}"
        if not isinstance(task, dict) or "data" not in task:
            raise AnnotationError(f"{where}: not a Label Studio task (no 'data')")
        data = task["data"]
        if not isinstance(data, dict):
            raise AnnotationError(
                f"{where}: 'data' must be an object with 'image', got {type(data).__name__}"
            )
        name = str(data.get("file_name") or data.get("image") or "")
        done = [
            a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")
        ]
        if not done and report is not None:
            report.add("no_annotation", where, f"image {name!r} has no completed annotation")
            continue
        results = None
        if done:
            result = done[-1].get("result")
            if result is not None and not isinstance(result, list):  # an object, or the string "[]"
                raise AnnotationError(
                    f"{where}: the annotation's 'result' must be a list of regions, got {type(result).__name__} "
                    f"{str(result)[:40]!r} (export the project as JSON again)"
                )
            results = [r for r in result or [] if isinstance(r, dict)]
        out.append((Item(name, where), results))
    return out


def label_studio_shapes(item: Item, results: list[dict], size: tuple[int, int], report=None) -> list[Shape]:
    """The shapes of one task's result in pixels of an image of ``size``. Label Studio stores
    coordinates in percent of the image it showed, so they are read on the file's size; a result's
    ``original_width`` / ``original_height`` serve only where the size is not known (0), and where
    they disagree with the file the task is counted once (``size_mismatch``) and the file wins.
    Brushes and key points are counted (or raise without a ``report``); choices and text are not
    shapes.

    Raises:
        AnnotationError: a result without numeric coordinates or a label, naming the task and result.
    """
    shapes, disagreed = [], False
    for j, r in enumerate(results):
        kind, where = r.get("type"), f"{item.where}: result {j}"
        if kind not in LS_SHAPES:
            if kind in ("brushlabels", "keypointlabels"):
                _bad(report, "unsupported_shape", where, f"{kind} (not a box, polygon or ellipse)")
            continue
        try:
            v = r["value"]
            stated = tuple(float(r.get(f"original_{s}") or 0) for s in ("width", "height"))
            w, h = (float(size[0]), float(size[1])) if all(size) else stated
            if all(size) and all(stated) and stated != (w, h) and not disagreed:
                disagreed = True
                said = f"original size {stated}, file {tuple(size)}: read on the file"
                if report is None:
                    logger.warning("%s: %s", where, said)
                else:
                    report.add("size_mismatch", where, said)
            label = str(v[kind][0])
            if kind == "polygonlabels":
                points = np.asarray(v["points"], np.float64).reshape(-1, 2) * (w / 100, h / 100)
            elif kind == "ellipselabels":
                cx, cy, rx, ry = (
                    float(v[k]) * s / 100 for k, s in (("x", w), ("y", h), ("radiusX", w), ("radiusY", h))
                )
                points = _ellipse(cx, cy, rx, ry)
            else:
                x, y, bw, bh = (
                    float(v[k]) * s / 100 for k, s in (("x", w), ("y", h), ("width", w), ("height", h))
                )
                angle = float(v.get("rotation") or 0) % 360
                points = _rotated(x, y, bw, bh, angle) if angle else np.array([[x, y], [x + bw, y + bh]])
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise AnnotationError(
                f"{item.where} ({item.name}): result {j} needs numeric x, y, width, height (or points) and "
                f"one label ({type(e).__name__}: {e})"
            ) from e
        if kind == "polygonlabels" and len(points) < 3:
            _bad(report, "bad_shape", where, f"a polygon of {len(points)} points")
            continue
        rotated = kind == "rectanglelabels" and len(points) == 4
        shapes.append(Shape(label, "box" if len(points) == 2 else "polygon", points, where, rotated=rotated))
    return shapes


# -- image names ---------------------------------------------------------------------------------
class ImageNames:
    """Find the file a tool names among known relative names: the path itself, its base name, or
    the base name Label Studio gives an upload (``/data/upload/1/3f2a1b7c-raccoon-109.jpg``). Shared
    by the datasets and the import of a labelled round."""

    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        self.exact = set(self.names)
        self.base: dict[str, str] = {}
        for n in self.names:
            self.base.setdefault(os.path.basename(n), n)

    def find(self, name: str) -> str | None:
        name = unquote(name.split("?d=", 1)[-1]).replace("\\", "/")  # local files: /data/local-files/?d=x
        tail = os.path.basename(name)
        return (
            (name if name in self.exact else None)
            or self.base.get(tail)
            or self.base.get(UPLOAD_PREFIX.sub("", tail))
        )


def image_files(folder: str) -> list[str]:
    """Every image under ``folder`` (recursively), relative to it, with POSIX separators."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, folder)
        out += [
            (n if rel == "." else f"{rel}/{n}").replace(os.sep, "/")
            for n in sorted(filenames)
            if n.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return out


# -- records -------------------------------------------------------------------------------------
@dataclass
class Found:
    """An item whose image was found: its file name under the image root and its shapes."""

    item: Item
    file_name: str
    shapes: list[Shape]


def records_of(
    found: Sequence[Found],
    image_root: str,
    classes: Sequence[str] | None,
    report: LoadReport,
    skip_unknown_classes: bool = False,
) -> RecordSet:
    """Records of the found items: each image checked (its real size kept), labels mapped to
    ``classes`` (discovered in sorted order when ``None``), shapes of one LabelMe group merged into
    one object, boxes clipped and counted, masks kept when any shape is a polygon.

    Raises:
        AnnotationError: a label outside ``classes`` (without ``skip_unknown_classes``).
    """
    if classes is None:
        classes = sorted({s.label for f in found for s in f.shapes})
    classes = tuple(classes)
    with_masks = any(s.kind == "polygon" for f in found for s in f.shapes)
    records = []
    for f in found:
        size = check_image(image_root, f.item.size, f.file_name, report, f.item.where)
        if size is None:
            continue
        shapes = f.shapes
        if size.turn != 1:  # drawn on the stored pixels of an image stored turned
            shapes = [_turned(s, size.turn, size.stored) for s in shapes]
        objects = _objects(shapes, classes, skip_unknown_classes, report)
        boxes = np.array([o[1] for o in objects], np.float32).reshape(-1, 4)
        sources = [o[3] for o in objects]
        clipped, keep = sanitize_boxes(boxes, size[0], size[1], report, sources.__getitem__)
        keep_idx = np.flatnonzero(keep)
        if shapes and not len(keep_idx):
            report.add("labels_lost", f.item.where, f"{len(shapes)} shapes")
        records.append(
            Record(
                f.file_name,
                f.file_name,
                size[0],
                size[1],
                clipped[keep_idx],
                np.array([objects[i][0] for i in keep_idx], np.int64),
                difficult=[objects[i][4] for i in keep_idx],
                masks=[objects[i][2] for i in keep_idx] if with_masks else None,
            )
        )
    return RecordSet(records, classes, image_root, report=report)


def _turned(shape: Shape, turn: int, stored: tuple[int, int]) -> Shape:
    """``shape`` drawn on the stored pixels, on the upright image: a box's corners put back in
    order (top-left first; an inverted box stays as written, to be counted), an outline's points moved."""
    points = turn_points(shape.points, turn, stored)
    if shape.kind == "box" and (shape.points[1] >= shape.points[0]).all():
        points = np.stack([points.min(0), points.max(0)])
    return replace(shape, points=points)


def _objects(shapes, classes, skip_unknown, report) -> list[tuple[int, list[float], list, str, bool]]:
    """``(label, box, segmentation, where, occluded)`` per object; LabelMe shapes sharing a label and
    a ``group_id`` are one object (their union box, every outline)."""
    groups: dict[tuple, list[Shape]] = {}
    for k, s in enumerate(shapes):
        if s.label not in classes:
            if not skip_unknown:
                raise AnnotationError(
                    f"{s.where}: unknown label {s.label!r}; known: {list(classes)} (give the class list, "
                    "or pass --skip-unknown-classes to count and drop such shapes)"
                )
            report.add("unknown_class", s.where, s.label)
            continue
        if s.rotated:
            report.add("rotated_box", s.where, "kept as the axis-aligned box that holds it")
        groups.setdefault((s.label, k) if s.group is None else (s.label, "group", s.group), []).append(s)
    out = []
    for (label, *_), members in groups.items():
        boxes = np.array([m.box for m in members])
        box = [*boxes[:, :2].min(0).tolist(), *boxes[:, 2:].max(0).tolist()]
        occluded = any(m.occluded for m in members)
        out.append((classes.index(label) + 1, box, [m.polygon for m in members], members[0].where, occluded))
    return out


# -- the three datasets --------------------------------------------------------------------------
def load_labelme(
    root: str,
    classes: Sequence[str] | None = None,
    skip_unknown_classes: bool = False,
    cache_dir: str | None = None,
) -> RecordSet:
    """Every LabelMe JSON under ``root``. An image is read from ``imagePath`` (relative to its JSON;
    a path leaving ``root`` is never read, the same name beside the JSON is); where that file is
    absent, from the embedded ``imageData`` (``image_from_json``). When some images are embedded,
    all are gathered under ``cache_dir`` so that they have one root."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise AnnotationError(
            f"{root}: no such folder (--labelme-root, the folder of the LabelMe JSON files)"
        )
    report = LoadReport()
    items = _labelme_items(root, report)
    embedded = any(not on_disk and item.embedded for item, _, on_disk in items)
    image_root = _embedded_root(root, cache_dir) if embedded else root
    found, seen = [], {}
    for item, rel, on_disk in items:
        if rel in seen:
            report.add("duplicate_image", item.where, f"{rel} is also {seen[rel]}'s image (not used twice)")
            continue
        if not on_disk and item.embedded is None:
            report.add("missing_image", item.where, os.path.join(root, rel))
            continue
        seen[rel] = item.where
        if image_root != root:
            _place(image_root, rel, None if on_disk else item.embedded, os.path.join(root, rel))
        if not on_disk:
            report.add("image_from_json", item.where, f"imageData written to {os.path.join(image_root, rel)}")
        found.append(Found(item, rel, item.shapes))
    data = records_of(found, image_root, classes, report, skip_unknown_classes)
    report.log(f"LabelMe {root}")
    return data


def _labelme_items(root: str, report: LoadReport) -> list[tuple[Item, str, bool]]:
    """``(item, image name under root, whether that file exists)`` of every LabelMe JSON; a JSON that
    is not LabelMe's, or cannot be read, is counted (``bad_annotation_file``)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(n for n in filenames if n.lower().endswith(".json")):
            path = os.path.join(dirpath, name)
            try:
                item = parse_labelme(path, report)
            except AnnotationError as e:
                report.add("bad_annotation_file", path, str(e).removeprefix(f"{path}: "))
                continue
            out.append((item, *_labelme_image(root, dirpath, item, report)))
    return out


def _labelme_image(root: str, folder: str, item: Item, report: LoadReport) -> tuple[str, bool]:
    """The image's name relative to ``root`` and whether it is there: ``imagePath`` relative to the
    JSON's folder; a path that is absolute or leaves the root is never read (``path_outside_root``),
    the same file name beside the JSON is. Without ``imagePath``: the JSON's stem, as an image of
    the embedded format."""
    here = os.path.relpath(folder, root).replace(os.sep, "/")
    name = item.name.replace("\\", "/")
    if os.path.basename(name) in ("", ".", ".."):  # no file name (none, or a folder's): the JSON's own
        name = os.path.splitext(os.path.basename(item.where))[0] + _suffix(item.embedded or b"")
    rel = None
    try:
        # relative to the JSON's folder; an absolute name stays absolute, for safe_relpath to refuse
        joined = name if here == "." or is_absolute_name(name) else f"{here}/{name}"
        rel = safe_relpath(root, joined, item.where, "imagePath")
    except AnnotationError as e:
        report.add(
            "path_outside_root", item.where, str(e).split(": ", 1)[-1] + "; the name beside the JSON is used"
        )
    if rel is None or not os.path.isfile(os.path.join(root, rel)):
        beside = os.path.basename(name)
        beside = beside if here == "." else f"{here}/{beside}"
        if rel is None or os.path.isfile(os.path.join(root, beside)):
            rel = beside
    return rel, os.path.isfile(os.path.join(root, rel))


def _suffix(data: bytes) -> str:
    return ".png" if data.startswith(b"\x89PNG") else ".jpg"


def _embedded_root(root: str, cache_dir: str | None) -> str:
    """Where a LabelMe folder's images are gathered when some are only embedded in their JSON."""
    digest = hashlib.sha1(root.encode()).hexdigest()[:16]
    return os.path.join(cache_dir or default_cache_dir(), f"labelme-{digest}")


def _place(image_root: str, rel: str, data: bytes | None, source: str) -> None:
    """Put one image under ``image_root`` (embedded bytes, or a copy of the file on disk), unless the
    same content is already there."""
    target = os.path.join(image_root, rel)
    if data is None:
        with open(source, "rb") as f:
            data = f.read()
    if os.path.isfile(target) and os.path.getsize(target) == len(data):
        with open(target, "rb") as f:
            if f.read() == data:
                return
    with atomic_open(target, "wb") as f:
        f.write(data)


def load_cvat(
    root: str,
    classes: Sequence[str] | None = None,
    skip_unknown_classes: bool = False,
    images: str | None = None,
) -> RecordSet:
    """CVAT for images 1.1: ``root`` is the export's folder (``annotations.xml`` and ``images/``) or
    the XML itself; ``images`` names the image folder when it is elsewhere. Classes default to the
    XML's ``<meta>`` labels; ``occluded="1"`` is kept as the box's difficult flag."""
    xml, image_dir = cvat_files(root)
    if images is not None:
        image_dir = os.path.abspath(images)
        if not os.path.isdir(image_dir):
            raise AnnotationError(f"{image_dir}: no such folder (--cvat-images, the export's images)")
    report = LoadReport()
    labels, items = parse_cvat(xml, report)
    found = _found(items, ImageNames(image_files(image_dir)), image_dir, report)
    data = records_of(found, image_dir, classes or labels or None, report, skip_unknown_classes)
    report.log(f"CVAT {xml}")
    return data


def cvat_files(root: str) -> tuple[str, str]:
    """``(annotations.xml, image folder)`` of a CVAT export folder (or the XML file itself)."""
    root = os.path.abspath(root)
    xml = root if os.path.isfile(root) or root.lower().endswith(".xml") else os.path.join(root, CVAT_XML)
    if not os.path.isfile(xml):
        raise AnnotationError(
            f"{xml}: not found; --cvat-root (or --cvat-xml) is the folder of a 'CVAT for images 1.1' export "
            f"({CVAT_XML} and images/) or its XML file"
        )
    folder = os.path.dirname(xml)
    images = os.path.join(folder, "images")
    return xml, images if os.path.isdir(images) else folder


def load_label_studio(
    json_path: str, image_dir: str, classes: Sequence[str] | None = None, skip_unknown_classes: bool = False
) -> RecordSet:
    """A Label Studio JSON export as a dataset: each task's image found in ``image_dir`` by path or
    name (:class:`ImageNames`), its last completed annotation's boxes and polygons."""
    image_dir = os.path.abspath(image_dir)
    if not os.path.isdir(image_dir):
        raise AnnotationError(f"{image_dir}: no such folder (--ls-images, the folder of the export's images)")
    report = LoadReport()
    tasks = parse_label_studio(json_path, report)
    index = ImageNames(image_files(image_dir))
    for item, results in tasks:
        rel = index.find(item.name)
        size = read_image_size(os.path.join(image_dir, rel)) if rel else (0, 0)
        item.size = size if isinstance(size, tuple) else (0, 0)  # an export holds no size of its own
        item.shapes = label_studio_shapes(item, results, item.size, report)
    found = _found([item for item, _ in tasks], index, image_dir, report)
    data = records_of(found, image_dir, classes, report, skip_unknown_classes)
    report.log(f"Label Studio {json_path}")
    return data


def _found(items, index: ImageNames, image_dir: str, report: LoadReport) -> list[Found]:
    """The items whose image is in the folder (``missing_image`` otherwise), once each
    (``duplicate_image``)."""
    found, seen = [], {}
    for item in items:
        rel = index.find(item.name) if item.name else None
        if rel is None:
            report.add("missing_image", item.where, f"{item.name!r} is not under {image_dir}")
            continue
        if rel in seen:
            report.add(
                "duplicate_image", item.where, f"{rel} is also labelled at {seen[rel]} (not used twice)"
            )
            continue
        seen[rel] = item.where
        found.append(Found(item, rel, item.shapes))
    return found


def split_by_names(data: RecordSet, train: list[str], val: list[str]) -> tuple[RecordSet, RecordSet]:
    """The records named in ``train`` and in ``val`` (split files of image names); a record in neither
    (an image fixed or added since the split was written) joins the training pool, in one line. The
    load report stays with the training set."""
    train_set, val_set = set(train), set(val)
    new = [r for r in data.records if r.image_id not in train_set | val_set]
    if new:
        logger.warning(
            "%d images are in neither split file (added or fixed since the split was written, e.g. %s): "
            "they join the training pool",
            len(new),
            new[0].image_id,
        )
    parts = (
        [r for r in data.records if r.image_id not in val_set],
        [r for r in data.records if r.image_id in val_set],
    )
    return tuple(
        RecordSet(records, data.classes, data.image_root, data.label_to_cat_id, report)
        for records, report in zip(parts, (data.report, LoadReport()))
    )
