"""Pascal VOC XML <-> :class:`RecordSet`, in the VOCdevkit layout or a flat one.

Two layouts of a root:

* VOCdevkit: ``Annotations/<id>.xml``, ``JPEGImages/<filename>``, ``ImageSets/Main/<split>.txt``;
* flat (what labelling tools export): ``annotations/<stem>.xml`` + ``images/<stem>.<ext>``, matched
  by file stem; a split is a text file of stems (``split`` may be a path), and
  :func:`datasets.common.seeded_split` makes one when there is none.

Several roots load into one set (VOC07+12 trainval). Image ids are the split-file ids, prefixed by
the root's folder name when several roots are given (``VOC2007/000005``). Coordinates are kept as
written in the XML (VOC pixel indices).

XML is parsed by lxml with entity resolution, DTD loading and network access turned off; a file
that declares entities is rejected, so external entities and entity-expansion bombs are never
expanded. Parsed records are cached (:mod:`datasets.cache`: keyed by the split and annotation
files, the options, and every image file's name, size and mtime), so a second load of VOC2007
reads one file and a fixed dataset is never hidden by a stale cache.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Sequence

import numpy as np
from lxml import etree
from tqdm import tqdm

from datasets.cache import cache_path, read_cache, write_cache
from datasets.common import IMAGE_EXTENSIONS, check_image, safe_relpath, sanitize_boxes
from datasets.orientation import turn_boxes
from datasets.records import AnnotationError, Record, RecordSet
from datasets.report import LoadReport

logger = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def voc_layout(root: str, folders: tuple[str | None, str | None] | None = None) -> tuple[str, str, bool]:
    """``(annotation folder, image folder, flat)`` of a VOC root.

    Args:
        folders: ``(annotations, images)`` folder names (relative to ``root``, or absolute) of a
            layout of its own (a kangaroo set's ``annots/`` + ``images/``); files are then matched
            by stem, as in the flat layout. ``None`` entries take the usual names.

    Raises:
        AnnotationError: neither layout found (or a given folder missing); the message shows both
            and the options that name other folders.
    """
    if folders is not None and any(folders):

        def folder(given: str | None, usual: tuple[str, str]) -> str:
            if given:
                return os.path.join(root, given)
            return next(
                (os.path.join(root, n) for n in usual if os.path.isdir(os.path.join(root, n))), usual[0]
            )

        ann = folder(folders[0], ("Annotations", "annotations"))
        img = folder(folders[1], ("images", "JPEGImages"))
        for path, flag in ((ann, "--voc-annotations-dir"), (img, "--voc-images-dir")):
            if not os.path.isdir(path):
                raise AnnotationError(f"{path}: no such folder ({flag}, under the VOC root {root})")
        return ann, img, True
    if os.path.isdir(os.path.join(root, "Annotations")):
        return os.path.join(root, "Annotations"), os.path.join(root, "JPEGImages"), False
    if os.path.isdir(os.path.join(root, "annotations")) and os.path.isdir(os.path.join(root, "images")):
        return os.path.join(root, "annotations"), os.path.join(root, "images"), True
    if os.path.isdir(root) and any(n.lower().endswith(".xml") for n in os.listdir(root)):
        return root, root, True  # LabelImg's default: images and their XML side by side
    present = (
        sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        if os.path.isdir(root)
        else []
    )
    raise AnnotationError(
        f"{root}: not a VOC folder (it holds {present or 'no folders'} and no .xml file); expected Annotations/ + "
        "JPEGImages/ + ImageSets/Main/<split>.txt (VOCdevkit), annotations/ + images/ (flat, matched by file "
        "stem), or images with their XML side by side (LabelImg's default); for other "
        "folder names pass --voc-annotations-dir and --voc-images-dir; see README 'Your own data'"
    )


def split_file(root: str, split: str) -> str:
    """The file listing a split: ``split`` itself when it is a file path, else ``ImageSets/Main/<split>.txt``."""
    return split if os.path.isfile(split) else os.path.join(root, "ImageSets", "Main", f"{split}.txt")


def xml_stems(root: str, folders: tuple[str | None, str | None] | None = None) -> list[str]:
    """Stems of the XML files of a root (either layout): the ids of a split made without split files."""
    ann_dir, _, _ = voc_layout(root, folders)
    return sorted(n[:-4] for n in os.listdir(ann_dir) if n.lower().endswith(".xml"))


class NotVOCAnnotation(AnnotationError):
    """An XML file whose root is not ``<annotation>`` (a labelling tool's settings file, say)."""


def xml_file(ann_dir: str, stem: str) -> str:
    """The XML file of ``stem`` in ``ann_dir``: ``<stem>.xml``, else the one whose extension differs
    only in case (``A.XML``); ``<stem>.xml`` when there is none."""
    exact = os.path.join(ann_dir, f"{stem}.xml")
    if os.path.isfile(exact):
        return exact
    for suffix in (".XML", ".Xml"):
        if os.path.isfile(os.path.join(ann_dir, stem + suffix)):
            return os.path.join(ann_dir, stem + suffix)
    return exact


def xml_parser() -> etree.XMLParser:
    """An lxml parser that never expands entities or reads the network (for any XML a user gives)."""
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, dtd_validation=False
    )


def parse_voc_xml(path: str) -> dict:
    """Parse one VOC annotation file into plain Python values.

    Returns:
        ``{"filename", "width", "height", "objects": [(name, difficult, [x1, y1, x2, y2]), ...]}``.

    Raises:
        AnnotationError: empty, malformed or truncated XML, entity declarations, or a missing or
            non-numeric field; the message names the file, the line and the field.
    """
    if os.path.getsize(path) == 0:
        raise AnnotationError(f"{path}: annotation file is empty")
    try:
        with open(path, "rb") as f:  # lxml takes no name that is not UTF-8 (nor a file object of one)
            tree = etree.parse(io.BytesIO(f.read()), xml_parser())
    except etree.XMLSyntaxError as e:
        raise AnnotationError(f"{path}: malformed XML at line {e.lineno}: {e.msg}") from e
    dtd = tree.docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise AnnotationError(f"{path}: declares XML entities; refusing to expand them")
    root = tree.getroot()
    if root.tag != "annotation":
        raise NotVOCAnnotation(
            f"{path}: line {root.sourceline}: root element is <{root.tag}>, expected <annotation>"
        )
    size = root.find("size")
    width = _number(root, "size/width", path, default=0, cast=int) if size is not None else 0
    height = _number(root, "size/height", path, default=0, cast=int) if size is not None else 0
    objects = []
    for obj in root.iter("object"):
        name = obj.findtext("name")
        if name is None or not name.strip():
            raise AnnotationError(f"{path}: line {obj.sourceline}: <object> has no <name>")
        box = [_number(obj, f"bndbox/{k}", path) for k in ("xmin", "ymin", "xmax", "ymax")]
        difficult = bool(_number(obj, "difficult", path, default=0, cast=int))
        objects.append((name.strip(), difficult, box))
    return {
        "filename": (root.findtext("filename") or "").strip(),
        "width": width,
        "height": height,
        "objects": objects,
    }


def _number(node, field: str, path: str, default=None, cast=float):
    elem = node.find(field)
    if elem is None or elem.text is None or not elem.text.strip():
        if default is not None:
            return default
        raise AnnotationError(f"{path}: line {node.sourceline}: missing field <{field}>")
    text = elem.text.strip()
    try:
        value = float(text)
    except ValueError as e:
        raise AnnotationError(
            f"{path}: line {elem.sourceline}: field <{field}> = {text!r} is not a number"
        ) from e
    if not math.isfinite(value) or abs(value) > 1e9:
        raise AnnotationError(
            f"{path}: line {elem.sourceline}: field <{field}> = {text!r} is not a finite pixel value"
        )
    if cast is int and not value.is_integer():
        raise AnnotationError(f"{path}: line {elem.sourceline}: field <{field}> = {text!r} is not an integer")
    return cast(value)


def voc_xml(record: Record, classes: Sequence[str]) -> str:
    """A VOC annotation of ``record`` that :func:`parse_voc_xml` reads back: its file name, size,
    and per box the class name, ``difficult`` and the ``bndbox`` (coordinates written exactly)."""
    root = etree.Element("annotation")
    etree.SubElement(root, "filename").text = os.path.basename(record.file_name)
    etree.SubElement(root, "path").text = record.file_name
    size = etree.SubElement(root, "size")
    for tag, value in (("width", record.width), ("height", record.height), ("depth", 3)):
        etree.SubElement(size, tag).text = str(int(value))
    for box, label, difficult in zip(record.boxes.astype(float).tolist(), record.labels, record.difficult):
        obj = etree.SubElement(root, "object")
        etree.SubElement(obj, "name").text = classes[int(label) - 1]
        etree.SubElement(obj, "difficult").text = str(int(difficult))
        bndbox = etree.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            etree.SubElement(bndbox, tag).text = repr(value)
    return etree.tostring(root, pretty_print=True).decode()


def read_split(root: str, split: str) -> list[str]:
    """Image ids of a split file (:func:`split_file`; first column, blank lines ignored)."""
    path = split_file(root, split)
    if not os.path.isfile(path):
        raise AnnotationError(
            f"{path}: split file not found (root {root!r}, split {split!r}); without split "
            "files, --val-fraction splits the images by seed"
        )
    with open(path, encoding="utf-8", errors="surrogateescape") as f:  # a stem's bytes as the disk has them
        ids = [(n, line.split()[0]) for n, line in enumerate(f, 1) if line.strip()]
    for n, image_id in ids:  # an id names a file inside the root, never one outside it
        if os.path.isabs(image_id) or ".." in image_id.replace("\\", "/").split("/"):
            raise AnnotationError(
                f"{path} line {n}: image id {image_id!r} leaves the dataset root; ids are file "
                "stems under Annotations/"
            )
    return [image_id for _, image_id in ids]


def load_voc(
    roots: str | Sequence[str],
    split: str | Sequence[str] = "trainval",
    classes: Sequence[str] | None = None,
    discover_classes: bool = False,
    skip_unknown_classes: bool = False,
    check_images: bool = True,
    cache_dir: str | None | bool = None,
    folders: tuple[str | None, str | None] | None = None,
) -> RecordSet:
    """Load one or several VOC roots into a :class:`RecordSet`.

    Args:
        roots: VOC folder(s), e.g. ``VOCdevkit/VOC2007``.
        split: split name, or one per root (``["trainval", "trainval"]``).
        classes: class names in label order; default the 20 VOC classes.
        discover_classes: use the sorted set of names found in the files instead of ``classes``.
        skip_unknown_classes: drop (and count) objects of unknown classes instead of raising.
        check_images: drop (and count) missing or unreadable images; take sizes from the files.
        cache_dir: folder for the parsed-record cache; ``None`` = :func:`default_cache_dir`,
            ``False`` = no cache.
        folders: ``(annotations, images)`` folder names of every root (:func:`voc_layout`).

    Returns:
        The records, with ``report`` listing every dropped or clipped box and dropped image.
    """
    roots = [os.path.abspath(r) for r in ([roots] if isinstance(roots, (str, os.PathLike)) else roots)]
    splits = [split] * len(roots) if isinstance(split, str) else list(split)
    if len(splits) != len(roots):
        raise ValueError(f"{len(roots)} roots but {len(splits)} splits")
    if discover_classes and classes is not None:
        raise ValueError("pass either classes or discover_classes=True, not both")
    layouts = [voc_layout(r, folders) for r in roots]
    ids = [read_split(r, s) for r, s in zip(roots, splits)]
    key_files = [split_file(r, s) for r, s in zip(roots, splits)]
    key_files += [xml_file(ann, i) for (ann, _, _), rid in zip(layouts, ids) for i in rid]
    options = dict(
        roots=roots,
        splits=splits,
        classes=list(classes or []),
        discover=discover_classes,
        skip_unknown=skip_unknown_classes,
        check_images=check_images,
        layouts=layouts,
    )
    cached = cache_path("voc", cache_dir, options, key_files)
    dataset = read_cache(cached)
    if dataset is not None:
        logger.info("VOC: records from cache %s (--no-cache to read the files again)", cached)
        dataset.report.log(f"VOC {splits} (cached)")
        return dataset
    images: list[str] = []  # every image file looked at, for the cache's key
    dataset = _load_voc_uncached(
        roots, layouts, splits, ids, classes, discover_classes, skip_unknown_classes, check_images, images
    )
    write_cache(cached, dataset, images)
    dataset.report.log(f"VOC {splits}")
    return dataset


def _load_voc_uncached(
    roots, layouts, splits, ids, classes, discover, skip_unknown, check_images, images: list[str]
) -> RecordSet:
    report = LoadReport()
    image_root = os.path.commonpath(roots) if len(roots) > 1 else roots[0]
    parsed = []  # (root, image_id, xml path, parsed dict)
    for root, (ann_dir, img_dir, flat), split, root_ids in zip(roots, layouts, splits, ids):
        prefix = f"{os.path.basename(root)}/" if len(roots) > 1 else ""
        by_stem = images_by_stem(img_dir) if flat else {}
        if flat:  # matched by stem: adding or renaming an image changes the folder's mtime, and the cache key
            images.append(img_dir)
            _report_flat_leftovers(ann_dir, img_dir, by_stem, report)
        seen: set[str] = set()
        for i in tqdm(
            root_ids,
            desc=f"VOC {os.path.basename(root)}/{os.path.basename(split)}",
            leave=False,
            disable=None,
        ):
            if i in seen:
                report.add("duplicate_image", split_file(root, split), i)
                continue
            seen.add(i)
            xml = xml_file(ann_dir, i)
            if not os.path.isfile(xml):
                raise AnnotationError(f"{xml}: annotation file not found (listed in split {split!r})")
            try:
                p = parse_voc_xml(xml)
            except NotVOCAnnotation as e:
                if not flat:  # a split lists it as an annotation: say so
                    raise
                # a LabelImg folder: another tool's XML beside the annotations is counted and skipped
                report.add("bad_annotation_file", xml, str(e).removeprefix(f"{xml}: "))
                continue
            if flat:  # the image is the file of the same stem, whatever <filename> says (never another image)
                p["filename"] = by_stem.get(i, f"{i}.jpg")
            parsed.append((img_dir, prefix + i, xml, p))
    if discover:
        classes = sorted({name for *_, p in parsed for name, _, _ in p["objects"]})
    classes = tuple(classes or VOC_CLASSES)
    label_of = {name: i + 1 for i, name in enumerate(classes)}
    records = []
    for img_dir, image_id, xml, p in parsed:
        record = _to_record(
            img_dir, image_root, image_id, xml, p, label_of, skip_unknown, check_images, report, images
        )
        if record is not None:
            records.append(record)
    return RecordSet(records, classes, image_root, report=report)


def _report_flat_leftovers(ann_dir: str, img_dir: str, by_stem: dict[str, str], report: LoadReport) -> None:
    """Count a flat folder's images that no XML describes, and images sharing a stem."""
    stems = {n[:-4] for n in os.listdir(ann_dir) if n.lower().endswith(".xml")}
    for stem, name in sorted(by_stem.items()):
        if stem not in stems:
            report.add("image_without_xml", os.path.join(img_dir, name), f"no {stem}.xml in {ann_dir}")
    report_shared_stems(img_dir, by_stem, report)


def report_shared_stems(img_dir: str, by_stem: dict[str, str], report: LoadReport) -> None:
    """Count the images not used because another image has the same stem (``a.jpg`` and ``a.png``)."""
    if not os.path.isdir(img_dir):
        return
    for name in sorted(os.listdir(img_dir)):
        stem = os.path.splitext(name)[0]
        if name.lower().endswith(IMAGE_EXTENSIONS) and by_stem.get(stem, name) != name:
            report.add("duplicate_stem", os.path.join(img_dir, name), f"{by_stem[stem]} is used for {stem}")


def images_by_stem(img_dir: str) -> dict[str, str]:
    """Image file name per stem in a flat layout's image folder."""
    if not os.path.isdir(img_dir):
        return {}
    names = sorted(n for n in os.listdir(img_dir) if n.lower().endswith(IMAGE_EXTENSIONS))
    return {os.path.splitext(n)[0]: n for n in reversed(names)}  # the first name wins on a shared stem


def _to_record(img_dir, image_root, image_id, xml, p, label_of, skip_unknown, check_images, report, images):
    stem = image_id.rsplit("/", 1)[-1]
    name = safe_relpath(img_dir, p["filename"] or f"{stem}.jpg", xml, "filename")
    images.append(os.path.join(img_dir, name))
    file_name = os.path.relpath(os.path.join(img_dir, name), image_root).replace(os.sep, "/")
    width, height = p["width"], p["height"]
    turn = None
    if check_images:  # LabelImg shows an image as stored, whatever its EXIF orientation
        size = check_image(image_root, (width, height), file_name, report, xml, drawn="stored")
        if size is None:
            return None
        (width, height), turn = size, size
    elif width <= 0 or height <= 0:
        raise AnnotationError(f"{xml}: <size> missing or zero and check_images=False")
    labels, boxes, difficult = [], [], []
    for k, (cls, diff, box) in enumerate(p["objects"]):
        if cls not in label_of:
            if not skip_unknown:
                raise AnnotationError(
                    f"{xml}: object {k} has unknown class {cls!r}; known classes: {list(label_of)} "
                    "(pass the class list, discover classes, or skip unknown classes)"
                )
            report.add("unknown_class", xml, f"object {k} {cls!r}")
            continue
        labels.append(label_of[cls])
        boxes.append(box)
        difficult.append(diff)
    if turn is not None and turn.turn != 1:
        boxes = turn_boxes(np.asarray(boxes, np.float32), turn.turn, turn.stored)
    boxes, keep = sanitize_boxes(np.asarray(boxes, np.float32), width, height, report, xml)
    if p["objects"] and not keep.any():
        report.add("labels_lost", xml, f"all {len(p['objects'])} objects dropped")
    record = Record(
        image_id,
        file_name,
        width,
        height,
        boxes,
        np.asarray(labels, np.int64),
        difficult=np.asarray(difficult, bool),
    )
    return record if keep.all() else record.select(keep)
