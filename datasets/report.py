"""What a loader skipped, clipped or fixed, so that nothing is lost silently."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# Reasons a loader may report. Box-level reasons drop or change one box; image-level ones drop or
# change one image. Keeping the list here makes the report's keys a documented, closed set.
REASONS = {
    "degenerate_box": "box has zero or negative width/height after clipping to the image (dropped)",
    "clipped_box": "box extended outside the image and was clipped (kept)",
    "clipped_subpixel": "box overshot the image by less than a pixel (rounding) and was clipped (kept, not warned)",
    "unknown_class": "object class not in the class list (dropped, --skip-unknown-classes)",
    "unknown_category": "annotation names a category id absent from 'categories' (dropped)",
    "missing_image_id": "annotation points to an image id absent from 'images' (dropped)",
    "missing_image": "image file does not exist (image dropped)",
    "unreadable_image": "image file cannot be decoded (image dropped)",
    "truncated_image": "JPEG file without its end marker, cut short (image dropped)",
    "image_too_large": "image over 100 megapixels, a decompression bomb or a scan (image dropped)",
    "size_mismatch": "annotated width/height differ from the image file (file size used)",
    "duplicate_image": "image listed twice in a split file, or labelled twice in an export (second dropped)",
    "empty_image_dropped": "image without annotations dropped on request",
    "no_label_file": "image without a label file (kept, without boxes)",
    "orphan_label": "label or mask file without an image (not used)",
    "duplicate_stem": "two images share a file stem (the first name kept, the other not used)",
    "labels_lost": "image whose every box was dropped (degenerate, unknown class): kept without boxes",
    "image_without_xml": "image of a flat VOC folder without an annotation file of its stem (not used)",
    "no_annotations_key": "COCO file without an 'annotations' key: every image a negative",
    "size_from_image": "annotation without a size (0 or missing): the image file's size used",
    "format_mismatch": "image file of another format than its extension (PNG named .jpg): decoded by content",
    "exif_turned": "boxes drawn on the stored pixels of a photo stored turned (EXIF orientation): turned upright with it",
    "bad_shape": "shape that cannot outline an object: a polygon of fewer than 3 points, no label, no numbers (dropped)",
    "unsupported_shape": "shape that is not a box, polygon, circle or ellipse: a line, point, brush, mask (dropped)",
    "rotated_box": "rotated rectangle: kept as the axis-aligned box that holds it (its mask the rotated one)",
    "image_from_json": "LabelMe image absent on disk: decoded from the JSON's embedded imageData",
    "bad_image_data": "LabelMe imageData that is not base64: ignored, the image read from imagePath",
    "path_outside_root": "image path absolute or leaving the root: never read (the same name beside the file is)",
    "bad_annotation_file": "annotation file that is not valid JSON, not UTF-8 or not of the format (not used)",
    "no_annotation": "Label Studio task without a completed annotation (not labelled: not used)",
    "mask_split": "mask value covering separate regions: one object per region (specks dropped)",
}
# counted and listed in load_report.json, but not worth a warning (the second: the loader warns once itself)
QUIET = {"clipped_subpixel", "no_annotations_key", "size_from_image"}  # YOLO labels never hold a size


@dataclass
class LoadReport:
    """Counted skips and fixes of one load, each with the file (and field) it came from.

    ``entries`` holds ``(reason, source, detail)`` tuples; ``counts`` the number per reason.
    """

    entries: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, reason: str, source: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise KeyError(f"unknown report reason {reason!r}; known: {sorted(REASONS)}")
        self.entries.append((reason, str(source), detail))

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(reason for reason, _, _ in self.entries))

    def of(self, reason: str) -> list[tuple[str, str]]:
        """``(source, detail)`` of every entry with this reason."""
        return [(src, detail) for r, src, detail in self.entries if r == reason]

    def extend(self, other: LoadReport) -> None:
        self.entries.extend(other.entries)

    def log(self, name: str, shown: int = 10) -> None:
        """Log a one-line summary, the first ``shown`` files of each reason at info level, and the
        rest at debug level (all of them are in ``load_report.json`` of the run's output folder)."""
        quiet = {reason: n for reason, n in self.counts.items() if reason in QUIET}
        loud = [e for e in self.entries if e[0] not in QUIET]
        aside = "".join(f"; {n} {reason}" for reason, n in sorted(quiet.items()))
        if not loud:
            logger.info("%s: loaded with nothing skipped or fixed%s", name, aside)
            return
        summary = ", ".join(
            f"{n} {reason}" for reason, n in sorted(self.counts.items()) if reason not in QUIET
        )
        logger.warning("%s: %s (each file below; all in load_report.json)%s", name, summary, aside)
        seen: Counter = Counter()
        for reason, src, detail in loud:
            seen[reason] += 1
            level = logging.INFO if seen[reason] <= shown else logging.DEBUG
            logger.log(level, "  %s: %s %s", reason, src, detail)
            if seen[reason] == shown + 1:
                logger.info("  %s: ... %d more", reason, self.counts[reason] - shown)

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [list(e) for e in self.entries]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadReport:
        return cls(entries=[tuple(e) for e in data.get("entries", [])])
