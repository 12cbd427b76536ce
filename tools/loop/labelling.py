"""Labelling-tool round trip: export a round's pre-annotations, read the corrected labels back.

Export (``<output>/labelling/round<r>/``): the model's certain boxes (after rejudge) of the round's
images, each flagged as model-made, as

* ``label_studio_tasks.json``: Label Studio tasks with ``predictions`` (``origin: prediction``);
* ``cvat_annotations.xml``: CVAT for images 1.1 (``source="auto"``);
* ``coco_preannotations.json`` and ``voc/<image>.xml``;
* ``manifest.json``: the round, the images and the pre-annotations (read back by the import).

Import: a Label Studio JSON export, a CVAT for images 1.1 XML, a folder of VOC XML files or a COCO
JSON, each matched to the round's images by file name; the corrected records and the edit counts
(:mod:`asm.edits`) are written to ``imported.json`` for ``train_asm_one.py --resume``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
from lxml import etree

from asm.edits import Edits, count_edits
from asm.merge import MergeResult
from datasets.atomic import atomic_write_text
from datasets.coco import load_coco, read_json, records_to_coco
from datasets.common import sanitize_boxes
from datasets.exports import ImageNames, label_studio_shapes, parse_cvat, parse_label_studio
from datasets.records import AnnotationError, Record, RecordSet, record_from_dict, record_to_dict
from datasets.report import LoadReport
from datasets.voc import parse_voc_xml, voc_xml
from tools.engine.checkpoint import last_path, read_run

logger = logging.getLogger(__name__)


def export_round(
    folder: str,
    round_index: int,
    pre: Sequence[Record],
    scores: Sequence[np.ndarray],
    data: RecordSet,
    al_estimates: Sequence[float] | None = None,
) -> None:
    """Write the pre-annotations of a round in every supported format (``al_estimates``: the model's
    estimate of each image's AL ratio, a field of the Label Studio tasks)."""
    os.makedirs(os.path.join(folder, "voc"), exist_ok=True)
    manifest = {
        "round": round_index,
        "classes": list(data.classes),
        "image_root": data.image_root,
        "preannotations": [record_to_dict(r) for r in pre],
        "scores": [s.tolist() for s in scores],
    }
    atomic_write_text(os.path.join(folder, "manifest.json"), json.dumps(manifest))
    atomic_write_text(
        os.path.join(folder, "label_studio_tasks.json"),
        json.dumps(_label_studio_tasks(pre, scores, data, round_index, al_estimates), indent=1),
    )
    atomic_write_text(os.path.join(folder, "cvat_annotations.xml"), _cvat_xml(pre, data.classes))
    atomic_write_text(
        os.path.join(folder, "coco_preannotations.json"), json.dumps(records_to_coco(data, list(pre)))
    )
    for r in pre:
        stem = os.path.splitext(os.path.basename(r.file_name))[0]
        atomic_write_text(os.path.join(folder, "voc", f"{stem}.xml"), voc_xml(r, data.classes))


LOCAL_FILES = "/data/local-files/?d="  # Label Studio's URL of a file under its local-files document root


def _label_studio_tasks(pre, scores, data: RecordSet, round_index: int, al_estimates=None) -> list[dict]:
    """One task per image. ``data.image`` is a URL Label Studio serves from local files when started
    with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``
    set to the dataset's image root (``labelstudio_round.py push`` uploads the images instead)."""
    tasks = []
    estimates = al_estimates if al_estimates is not None else [None] * len(pre)
    for r, s, estimate in zip(pre, scores, estimates):
        result = []
        for k, (box, label) in enumerate(zip(r.boxes.astype(float), r.labels)):
            x1, y1, x2, y2 = box
            result.append(
                {
                    "id": f"{r.image_id}-{k}",
                    "type": "rectanglelabels",
                    "from_name": "label",
                    "to_name": "image",
                    "origin": "prediction",
                    "original_width": int(r.width),
                    "original_height": int(r.height),
                    "image_rotation": 0,
                    "score": float(s[k]),
                    "value": {
                        "x": 100 * x1 / r.width,
                        "y": 100 * y1 / r.height,
                        "width": 100 * (x2 - x1) / r.width,
                        "height": 100 * (y2 - y1) / r.height,
                        "rotation": 0,
                        "rectanglelabels": [data.classes[int(label) - 1]],
                    },
                }
            )
        fields = {
            "image": LOCAL_FILES + quote(r.file_name),
            "file_name": r.file_name,
            "asm_round": round_index,
        }
        if estimate is not None:
            fields["al_ratio_estimate"] = round(float(estimate), 4)
        tasks.append(
            {
                "data": fields,
                "predictions": [
                    {
                        "model_version": f"asm-round{round_index}",
                        "result": result,
                        "score": float(np.mean(s)) if len(s) else 0.0,
                    }
                ],
            }
        )
    return tasks


def _cvat_xml(pre, classes) -> str:
    root = etree.Element("annotations")
    etree.SubElement(root, "version").text = "1.1"
    labels = etree.SubElement(etree.SubElement(etree.SubElement(root, "meta"), "task"), "labels")
    for name in classes:
        etree.SubElement(etree.SubElement(labels, "label"), "name").text = name
    for k, r in enumerate(pre):
        image = etree.SubElement(
            root, "image", id=str(k), name=r.file_name, width=str(r.width), height=str(r.height)
        )
        for box, label in zip(r.boxes.astype(float).tolist(), r.labels):
            etree.SubElement(
                image,
                "box",
                label=classes[int(label) - 1],
                source="auto",
                occluded="0",
                xtl=repr(box[0]),
                ytl=repr(box[1]),
                xbr=repr(box[2]),
                ybr=repr(box[3]),
                z_order="0",
            )
    return etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="utf-8").decode()


# -- import -------------------------------------------------------------------------------------
def read_labels(path: str, manifest: dict[str, Any], fmt: str = "auto") -> list[Record]:
    """Corrected records of the round's images (manifest order) from a labelling tool's export."""
    pre = [record_from_dict(r) for r in manifest["preannotations"]]
    classes = list(manifest["classes"])
    if fmt == "auto":
        fmt = "voc" if os.path.isdir(path) else "cvat" if path.endswith(".xml") else "json"
    if fmt == "json":
        fmt = "coco" if isinstance(read_json(path), dict) else "labelstudio"
    readers = {"labelstudio": _read_label_studio, "cvat": _read_cvat, "voc": _read_voc, "coco": _read_coco}
    if fmt not in readers:
        raise ValueError(f"unknown labels format {fmt!r}; choose one of {sorted(readers)} or auto")
    found = readers[fmt](path, pre, classes)  # file name -> (boxes, labels)
    out = []
    for r in pre:
        if r.file_name not in found:
            raise AnnotationError(f"{path}: no labels for image {r.file_name!r} of round {manifest['round']}")
        boxes, labels = found[r.file_name]
        out.append(
            Record(
                r.image_id,
                r.file_name,
                r.width,
                r.height,
                checked_boxes(boxes, r, path),
                np.asarray(labels, np.int64),
            )
        )
    return out


def checked_boxes(boxes, record: Record, path: str) -> np.ndarray:
    """Imported boxes as the loaders keep them: finite, not inverted, clipped to the image
    (:func:`datasets.common.sanitize_boxes`; clipped boxes are logged).

    Raises:
        AnnotationError: naming the file, the image and the box, before anything is written.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    where = f"{path}: image {record.file_name!r}"
    for k in np.flatnonzero(
        ~np.isfinite(boxes).all(1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    ):
        problem = (
            "is not finite"
            if not np.isfinite(boxes[k]).all()
            else "is empty or inverted (need x1 < x2 and y1 < y2)"
        )
        raise AnnotationError(f"{where}: box {k} {boxes[k].tolist()} {problem}")
    report = LoadReport()
    clipped, keep = sanitize_boxes(boxes, record.width, record.height, report, where)
    if not keep.all():
        k = int(np.flatnonzero(~keep)[0])
        raise AnnotationError(f"{where}: box {k} {boxes[k].tolist()} lies outside the image")
    if report.entries:
        report.log(f"labels {path}")
    return clipped


def _label_of(name: str, classes: list[str], where: str) -> int:
    if name not in classes:
        raise AnnotationError(f"{where}: unknown label {name!r}; known: {classes}")
    return classes.index(name) + 1


def _image_of(name: str, pre: Sequence[Record], where: str) -> Record:
    """The round's record of an image named by a tool: by path, by file name, or by the file name
    Label Studio gives an uploaded image (:class:`datasets.exports.ImageNames`, shared with the
    datasets)."""
    names = {r.file_name: r for r in pre}
    found = ImageNames(names).find(name)
    if found is None:
        raise AnnotationError(f"{where}: image {unquote(name)!r} is not one of this round's images")
    return names[found]


def _as_boxes(path: str, shapes_of: dict[str, list], classes: list[str]) -> dict[str, tuple[list, list]]:
    """``file name -> (boxes, labels)``; a polygon, ellipse or rotated box is kept as the axis-aligned
    box that holds it, counted in one WARNING per kind."""
    shapes = [s for found in shapes_of.values() for s in found if s.kind == "polygon"]
    for kind, n in (
        ("rotated", sum(s.rotated for s in shapes)),
        ("polygon", sum(not s.rotated for s in shapes)),
    ):
        if n:
            logger.warning("%s: %d %s boxes kept as their axis-aligned bounding boxes", path, n, kind)
    return {
        name: ([s.box for s in shapes], [_label_of(s.label, classes, f"{s.where} ({name})") for s in shapes])
        for name, shapes in shapes_of.items()
    }


def _read_label_studio(path, pre, classes):
    found, seen = {}, {}
    for item, results in parse_label_studio(path):
        record = _image_of(item.name, pre, item.where)
        if results is None:
            raise AnnotationError(f"{item.where}: image {record.file_name!r} has no completed annotation")
        if record.file_name in found:
            raise AnnotationError(
                f"{item.where}: a second task for image {record.file_name!r} ({seen[record.file_name]} has it "
                "too); delete one of them in Label Studio"
            )
        seen[record.file_name] = item.where.rsplit(": ", 1)[-1]
        found[record.file_name] = label_studio_shapes(item, results, (record.width, record.height))
    return _as_boxes(path, found, classes)


def _read_cvat(path, pre, classes):
    found = {}
    for item in parse_cvat(path)[1]:
        found[_image_of(item.name, pre, item.where).file_name] = item.shapes
    return _as_boxes(path, found, classes)


def _read_voc(path, pre, classes):
    found = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".xml"):
            xml = os.path.join(path, name)
            parsed = parse_voc_xml(xml)
            record = _image_of(parsed["filename"] or name[:-4], pre, xml)
            found[record.file_name] = (
                [b for _, _, b in parsed["objects"]],
                [_label_of(c, classes, xml) for c, _, _ in parsed["objects"]],
            )
    return found


def _read_coco(path, pre, classes):
    data = load_coco(path, "/", check_images=False)
    bad = data.report.of("degenerate_box") if data.report is not None else []
    if bad:  # refused, as the other importers refuse an empty or inverted box
        raise AnnotationError(
            f"{bad[0][0]}: {bad[0][1]} is empty or inverted (need a positive width and height)"
        )
    found = {}
    for r in data.records:
        record = _image_of(r.file_name, pre, path)
        found[record.file_name] = (
            r.boxes,
            [_label_of(data.classes[int(lb) - 1], classes, path) for lb in r.labels],
        )
    return found


def nudged_boxes(pre_boxes: np.ndarray, confirmed: np.ndarray, tol: float = 0.5) -> int:
    """How many ``confirmed`` boxes differ from every pre-annotation by more than ``tol`` pixels on
    some side: boxes the human adjusted without leaving the SL rule's IoU >= 0.8."""
    if not len(confirmed):
        return 0
    if not len(pre_boxes):
        return len(confirmed)
    gap = np.abs(np.asarray(confirmed, np.float64)[:, None, :] - np.asarray(pre_boxes, np.float64)[None]).max(
        -1
    )
    return int((gap.min(1) > tol).sum())


def import_round(folder: str, labels_path: str, fmt: str = "auto") -> dict[str, Any]:
    """Read corrected labels for the round in ``folder``; write and return ``imported.json``'s content."""
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    pre = [record_from_dict(r) for r in manifest["preannotations"]]
    records = read_labels(labels_path, manifest, fmt)
    total, per_image, nudged = Edits(), [], 0
    for p, r in zip(pre, records):
        edits, sl, moved = count_edits(p.boxes, p.labels, r.boxes, r.labels)
        total += edits
        nudged += nudged_boxes(p.boxes, r.boxes[sl])
        per_image.append(
            {"image_id": r.image_id, **edits.as_dict(), "sl": sl.tolist(), "moved_boxes": moved.tolist()}
        )
    if nudged:
        logger.info(
            "%d confirmed boxes were adjusted a little (still IoU >= 0.8 with the model's box): they count as "
            "confirmed (SL), as the rule says; a box moved further counts as moved (AL)",
            nudged,
        )
    imported = {
        "round": manifest["round"],
        "source": os.path.abspath(labels_path),
        "edits": total.as_dict(),
        "nudged": nudged,
        "images": per_image,
        "records": [record_to_dict(r) for r in records],
        "preannotated": [len(p) for p in pre],
    }
    atomic_write_text(os.path.join(folder, "imported.json"), json.dumps(imported))
    return imported


def awaiting_folder(run_dir: str) -> str:
    """The labelling folder of the round that the run in ``run_dir`` waits on (``--oracle none``).

    Raises:
        FileNotFoundError: no ``last.pth`` in ``run_dir``.
        ValueError: the run waits for no labels.
    """
    folder = read_run(run_dir).awaiting
    if not folder:
        raise ValueError(f"{last_path(run_dir)} is not waiting for labels (run with --oracle none first)")
    return os.path.join(
        run_dir, folder
    )  # relative to the run folder (moved runs); join keeps an old absolute one


def import_for_run(run_dir: str, labels_path: str, fmt: str = "auto") -> dict[str, Any]:
    """:func:`import_round` for the round that the run in ``run_dir`` waits on (:func:`awaiting_folder`)."""
    return import_round(awaiting_folder(run_dir), labels_path, fmt)


def results_from_imported(imported: dict) -> list[MergeResult]:
    """Merge results of a round labelled in a tool (``tools/labelling.import_round``'s output)."""
    out = []
    for rec, img, n_pre in zip(imported["records"], imported["images"], imported["preannotated"]):
        sa = record_from_dict(rec)
        al = img["added"] + img["moved"] + img["relabelled"]  # the human's boxes; moves are cheaper edits
        sl = img["confirmed"]
        ratio = al / (al + sl) if al + sl else (1.0 if img["deleted"] else 0.0)
        moved = np.asarray(img.get("moved_boxes", [False] * len(sa)), bool)
        out.append(
            MergeResult(
                sa,
                np.asarray(img["sl"], bool),
                al - int(moved.sum()),
                sl,
                img["deleted"],
                n_pre,
                0,
                0,
                sl,
                ratio,
                moved=moved,
            )
        )
    return out
