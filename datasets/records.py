"""Annotation records: the one data contract every other module reads and edits.

A :class:`Record` describes one image and its boxes with plain numpy arrays (no tensors, no open
files), so that the ASM engine can split, merge and move records between pools cheaply and a
checkpoint can hold them as plain data. A :class:`RecordSet` is a list of records plus the class
names and, for COCO data, the maps between contiguous labels and original category ids.

Conventions (as in torchvision's detection models):

* ``boxes``: float32 ``[N, 4]``, ``(x1, y1, x2, y2)`` in pixels of the original image.
* ``labels``: int64 ``[N]`` in ``1..C``; 0 is reserved for the background.
* ``difficult`` (VOC) and ``iscrowd`` (COCO): bool ``[N]``; both are always present.
* ``masks``: ``None`` or a list of ``N`` COCO segmentations (polygon lists or RLE dicts), decoded
  only when a Mask R-CNN needs them (:func:`datasets.coco.decode_masks`).

Records serialise to JSON and back losslessly (:func:`save_records` / :func:`load_records`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datasets.atomic import atomic_write_text

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class AnnotationError(ValueError):
    """A bad annotation file: the message names the file and, where known, the line or field."""


@dataclass
class Record:
    """One image and its annotations.

    Args:
        image_id: stable identifier, unique within a dataset.
        file_name: image path relative to the dataset's ``image_root`` (POSIX separators).
        width, height: image size in pixels.
        boxes: float32 ``[N, 4]`` xyxy pixels.
        labels: int64 ``[N]`` in ``1..C``.
        difficult: bool ``[N]`` (VOC ``<difficult>``; all False for COCO).
        iscrowd: bool ``[N]`` (COCO ``iscrowd``; all False for VOC).
        masks: ``None`` or ``N`` COCO segmentations (polygons or RLE dicts).
    """

    image_id: str
    file_name: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    difficult: np.ndarray | None = None
    iscrowd: np.ndarray | None = None
    masks: list | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        self.difficult = _flags(self.difficult, n)
        self.iscrowd = _flags(self.iscrowd, n)
        if len(self.labels) != n:
            raise ValueError(f"record {self.image_id}: {n} boxes but {len(self.labels)} labels")
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"record {self.image_id}: {n} boxes but {len(self.masks)} masks")

    @classmethod
    def trusted(
        cls,
        image_id: str,
        file_name: str,
        width: int,
        height: int,
        boxes: np.ndarray,
        labels: np.ndarray,
        difficult: np.ndarray,
        iscrowd: np.ndarray,
        masks: list | None = None,
    ) -> Record:
        """A record from arrays that already have the right dtypes and lengths, without re-checking
        them (hot loops that build thousands of records from validated ones)."""
        record = object.__new__(cls)
        record.__dict__.update(
            image_id=image_id,
            file_name=file_name,
            width=width,
            height=height,
            boxes=boxes,
            labels=labels,
            difficult=difficult,
            iscrowd=iscrowd,
            masks=masks,
        )
        return record

    def __len__(self) -> int:
        return len(self.boxes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return record_to_dict(self) == record_to_dict(other)

    def select(self, keep: np.ndarray) -> Record:
        """Return a copy that keeps only the boxes indexed by ``keep`` (bool mask or indices)."""
        keep = np.asarray(keep)
        if keep.dtype != bool:
            keep = np.asarray(keep, dtype=np.int64)
        masks = None
        if self.masks is not None:
            idx = np.flatnonzero(keep) if keep.dtype == bool else keep
            masks = [self.masks[i] for i in idx]
        return dataclasses.replace(
            self,
            boxes=self.boxes[keep],
            labels=self.labels[keep],
            difficult=self.difficult[keep],
            iscrowd=self.iscrowd[keep],
            masks=masks,
        )


def _flags(value: Any, n: int) -> np.ndarray:
    if value is None:
        return np.zeros((n,), dtype=bool)
    value = np.asarray(value, dtype=bool).reshape(-1)
    if len(value) != n:
        raise ValueError(f"expected {n} flags, got {len(value)}")
    return value


@dataclass
class RecordSet:
    """Records of one dataset split plus what is needed to interpret their labels.

    Args:
        records: one :class:`Record` per image.
        classes: class names; label ``i`` (1-based) is ``classes[i - 1]``.
        image_root: folder that every ``record.file_name`` is relative to.
        label_to_cat_id: contiguous label -> original COCO category id (identity for VOC).
        report: what the loader dropped, clipped or fixed (see :class:`datasets.report.LoadReport`).
    """

    records: list[Record]
    classes: tuple[str, ...]
    image_root: str
    label_to_cat_id: dict[int, int] = field(default_factory=dict)
    report: Any = None

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        if not self.label_to_cat_id:
            self.label_to_cat_id = {i: i for i in range(1, len(self.classes) + 1)}

    @property
    def cat_id_to_label(self) -> dict[int, int]:
        """Original category id -> contiguous label."""
        return {cat: label for label, cat in self.label_to_cat_id.items()}

    @property
    def num_classes(self) -> int:
        """Number of foreground classes ``C`` (a model needs ``C + 1`` outputs)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def num_boxes(self) -> int:
        return sum(len(r) for r in self.records)


def record_to_dict(record: Record) -> dict[str, Any]:
    """JSON-ready dict of a record (float32 values survive the trip exactly)."""
    out = {
        "image_id": record.image_id,
        "file_name": record.file_name,
        "width": int(record.width),
        "height": int(record.height),
        "boxes": record.boxes.tolist(),
        "labels": record.labels.tolist(),
        "difficult": record.difficult.tolist(),
        "iscrowd": record.iscrowd.tolist(),
    }
    if record.masks is not None:
        out["masks"] = record.masks
    return out


def record_from_dict(data: dict[str, Any]) -> Record:
    """Inverse of :func:`record_to_dict`."""
    return Record(
        image_id=str(data["image_id"]),
        file_name=data["file_name"],
        width=int(data["width"]),
        height=int(data["height"]),
        boxes=data["boxes"],  # Record casts and shapes them (float32 [N, 4], int64, bool)
        labels=data["labels"],
        difficult=data.get("difficult"),  # absent: all False
        iscrowd=data.get("iscrowd"),
        masks=data.get("masks"),
    )


def pack_records(records: list[Record]) -> dict[str, Any]:
    """Many records as a few flat tensors (boxes, labels, flags, per-record counts) plus lists of
    names, sizes and masks: what a checkpoint holds (``torch.load(weights_only=True)`` reads it), and
    ~10x faster to save and load than per-record dicts at COCO size. :func:`unpack_records` is the
    inverse."""
    import torch  # only checkpoints need it

    def flat(key: str, dtype, shape=(-1,)) -> torch.Tensor:
        parts = [np.asarray(getattr(r, key), dtype).reshape(shape) for r in records]
        return torch.from_numpy(np.concatenate(parts) if parts else np.zeros((0, *shape[1:]), dtype))

    return {
        "image_id": [r.image_id for r in records],
        "file_name": [r.file_name for r in records],
        "size": [[int(r.width), int(r.height)] for r in records],
        "counts": torch.tensor([len(r.boxes) for r in records], dtype=torch.int64),
        "boxes": flat("boxes", np.float32, (-1, 4)),
        "labels": flat("labels", np.int64),
        "difficult": flat("difficult", bool),
        "iscrowd": flat("iscrowd", bool),
        "masks": [r.masks for r in records],
    }


def unpack_records(data: dict[str, Any]) -> list[Record]:
    """Inverse of :func:`pack_records`."""
    cuts = np.cumsum(data["counts"].numpy())[:-1]
    boxes, labels, difficult, iscrowd = (
        np.split(data[k].numpy(), cuts) for k in ("boxes", "labels", "difficult", "iscrowd")
    )
    return [
        Record(i, f, int(w), int(h), b, lab, d, c, m)
        for i, f, (w, h), b, lab, d, c, m in zip(
            data["image_id"],
            data["file_name"],
            data["size"],
            boxes,
            labels,
            difficult,
            iscrowd,
            data["masks"],
        )
    ]


def recordset_to_dict(dataset: RecordSet) -> dict[str, Any]:
    report = dataset.report.to_dict() if dataset.report is not None else None
    return {
        "format_version": FORMAT_VERSION,
        "classes": list(dataset.classes),
        "image_root": dataset.image_root,
        "label_to_cat_id": {str(k): v for k, v in dataset.label_to_cat_id.items()},
        "report": report,
        "records": [record_to_dict(r) for r in dataset.records],
    }


def recordset_from_dict(data: dict[str, Any]) -> RecordSet:
    from datasets.report import LoadReport

    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported record format_version {data.get('format_version')!r}")
    report = data.get("report")
    return RecordSet(
        records=[record_from_dict(r) for r in data["records"]],
        classes=tuple(data["classes"]),
        image_root=data["image_root"],
        label_to_cat_id={int(k): int(v) for k, v in data["label_to_cat_id"].items()},
        report=LoadReport.from_dict(report) if report is not None else None,
    )


def save_records(dataset: RecordSet, path: str | os.PathLike) -> None:
    """Write a :class:`RecordSet` as JSON, atomically (temp file + ``os.replace``)."""
    atomic_write_text(path, json.dumps(recordset_to_dict(dataset)))


def load_records(path: str | os.PathLike) -> RecordSet:
    """Read a :class:`RecordSet` written by :func:`save_records`."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from e
    return recordset_from_dict(data)
