"""Shared by the loaders (VOC, COCO, folder): box clipping, safe paths, image headers, seeded splits."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from datasets.atomic import atomic_open
from datasets.orientation import exif_orientation, upright_size
from datasets.records import AnnotationError
from datasets.report import LoadReport

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # what the loaders look for


def sanitize_boxes(
    boxes: np.ndarray,
    width: int | np.ndarray,
    height: int | np.ndarray,
    report: LoadReport,
    source: str | Callable[[int], str],
) -> tuple[np.ndarray, np.ndarray]:
    """Clip xyxy boxes to their image and find the ones that are degenerate after clipping.

    Inverted boxes (x2 < x1) are degenerate: swapping the corners would guess at what the
    annotator meant. Every clipped or dropped box is counted in ``report``; a box that overshoots by
    less than a pixel (rounded YOLO fractions) is counted as ``clipped_subpixel``, which is not
    warned about.

    Args:
        boxes: ``[N, 4]`` xyxy pixels.
        width, height: image size, one for all boxes or one per box (``[N]``).
        report: receives ``clipped_box`` / ``degenerate_box`` entries.
        source: file (and field) the boxes came from, or a function of the box index giving it.

    Returns:
        ``(clipped float32 boxes [N, 4], keep bool [N])``.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    width = np.broadcast_to(np.asarray(width, dtype=np.float32), (len(boxes),))
    height = np.broadcast_to(np.asarray(height, dtype=np.float32), (len(boxes),))
    upper = np.stack([width, height, width, height], axis=1)
    clipped = np.clip(boxes, 0.0, upper)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    changed = np.any(clipped != boxes, axis=1) & keep
    subpixel = changed & (np.abs(clipped - boxes).max(axis=1, initial=0.0) < 1.0)
    describe = source if callable(source) else (lambda i: source)
    rows_of = (
        ("degenerate_box", ~keep),
        ("clipped_box", changed & ~subpixel),
        ("clipped_subpixel", subpixel),
    )
    for reason, rows in rows_of:
        at = np.flatnonzero(rows)
        for i, box, w, h in zip(at.tolist(), boxes[at].tolist(), width[at].tolist(), height[at].tolist()):
            report.add(reason, describe(i), f"box {i} {box} in {w:g}x{h:g}")
    return clipped, keep


_PLAIN_NAME = re.compile(r"(?!\.\.?$)[^/\\:]+")  # no separator, no drive, not "." or ".."


def is_absolute_name(name: str) -> bool:
    """Whether a file name from an annotation (``/`` separators) is absolute, here or on Windows
    (``/x``, ``C:/x``)."""
    return os.path.isabs(name) or name.startswith("/") or (len(name) > 1 and name[1] == ":")


def safe_relpath(image_root: str, file_name: str, source: str, field: str) -> str:
    """Return ``file_name`` as a normalised POSIX path inside ``image_root``.

    Raises:
        AnnotationError: when the name is absolute or climbs out of the root (``../``), so that an
            annotation file can never make the tool read or overwrite files elsewhere.
    """
    if not file_name:
        raise AnnotationError(f"{source}: field '{field}' is empty")
    if _PLAIN_NAME.fullmatch(file_name):  # one plain name (COCO's '000000000009.jpg'): nothing to normalise
        return file_name
    name = file_name.replace("\\", "/")
    if is_absolute_name(name):
        raise AnnotationError(
            f"{source}: field '{field}' = {file_name!r} is an absolute path; "
            f"file names must be relative to the image root {image_root}"
        )
    norm = os.path.normpath(name).replace(os.sep, "/")
    if norm == ".." or norm.startswith("../"):
        raise AnnotationError(
            f"{source}: field '{field}' = {file_name!r} resolves outside the image root {image_root}"
        )
    return norm


def read_image_size(path: str) -> tuple[int, int] | str:
    """Return the upright ``(width, height)`` (:mod:`datasets.orientation`) from the image header,
    or the reason it cannot be read.

    Only the header is parsed (PIL opens lazily), so this costs microseconds per JPEG.
    """
    header = read_image_header(path)
    return header if isinstance(header, str) else header[0]


def read_image_header(path: str) -> tuple[tuple[int, int], str, str, int] | str:
    """``((width, height), format, mode, orientation)`` of an image file (its upright size and
    EXIF orientation), or the reason it cannot be read (see :func:`read_image_size`). A JPEG is
    decoded only when it looks cut short; other formats are decoded whole, since a PNG's checksums
    can all hold over a compressed stream that does not decode."""
    if not os.path.isfile(path):
        return "missing_image"
    try:
        with Image.open(path) as im:
            size, fmt, mode = im.size, im.format, im.mode
            if size[0] * size[1] > MAX_PIXELS:
                return "image_too_large"
            turn = (
                exif_orientation(im) if fmt == "JPEG" else None
            )  # read at open; a PNG's may follow its pixels
            im.verify()  # structure and checksums where the format has them (PNG), without decoding
    except Image.DecompressionBombError:
        return "image_too_large"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return "unreadable_image"
    if fmt == "JPEG" and not _ends_with_eoi(path) and not _decodes(path):
        return "truncated_image"  # no end marker near the end, and the pixels do not decode: cut short
    if turn is None:
        turn = _decoded_orientation(path)
        if turn is None:
            return "unreadable_image"
    return upright_size(size, turn), fmt, mode, turn


MAX_PIXELS = 100_000_000  # larger images are refused (PIL warns of decompression bombs from 89 MP)


def _ends_with_eoi(path: str) -> bool:
    """A complete JPEG ends with the EOI marker (``FF D9``), allowing a little trailing padding;
    a file cut short during a copy does not. A cheap first look: a file that fails it is decoded."""
    with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - 64, 0))
        return b"\xff\xd9" in f.read()


def _decodes(path: str) -> bool:
    """Whether every pixel of the image decodes (a JPEG padded after its end marker does; one cut
    short does not)."""
    return _decoded_orientation(path) is not None


def _decoded_orientation(path: str) -> int | None:
    """The image's EXIF orientation once every pixel decoded, or None when they do not."""
    try:
        with Image.open(path) as im:
            im.load()
            return exif_orientation(im)
    except (OSError, ValueError, SyntaxError):
        return None


class ImageSize(tuple):
    """An image's upright ``(width, height)``, and ``turn``: the EXIF orientation to apply to its
    annotation's coordinates (1: they are on the upright image already), with ``stored``, the size
    they were drawn on."""

    turn: int = 1
    stored: tuple[int, int] = (0, 0)

    def __new__(cls, size: tuple[int, int], turn: int = 1, stored: tuple[int, int] | None = None):
        new = super().__new__(cls, (int(size[0]), int(size[1])))
        new.turn, new.stored = turn, tuple(stored) if stored is not None else (new[0], new[1])
        return new


def check_image(
    image_root: str,
    record_size: tuple[int, int],
    file_name: str,
    report: LoadReport,
    source: str,
    drawn: str = "upright",
) -> ImageSize | None:
    """Check that an image exists and decodes; return its real (upright) size, or ``None`` to drop
    it. A size the annotation lacks (0 or missing) is taken from the file (``size_from_image``); a
    file whose content is another format than its extension says is decoded by content
    (``format_mismatch``).

    ``drawn``: where the format's tool drew the boxes of an image stored turned (EXIF orientation):
    ``"upright"`` (Label Studio, LabelMe, CVAT, COCO) or ``"stored"`` (LabelImg). A stated size
    that is the stored one where upright would swap it says "stored" whatever the tool; boxes drawn
    on the stored pixels are to be turned (the size's ``turn``; counted as ``exif_turned``).
    """
    path = os.path.join(image_root, file_name)
    header = read_image_header(path)
    if isinstance(header, str):
        report.add(header, source, path)
        return None
    size, fmt, mode, turn = header
    stored = upright_size(size, turn)  # turning twice by a swap is the identity
    stated = tuple(record_size)
    on_stored = turn != 1 and (drawn == "stored" or (stated == stored and stated != size))
    if on_stored:
        report.add(
            "exif_turned", source, f"orientation {turn}: boxes drawn on the stored {stored}, turned upright"
        )
    if not all(record_size):
        report.add("size_from_image", source, f"annotated {stated}, file {size}")
    elif stated != size and not (on_stored and stated == stored):
        report.add("size_mismatch", source, f"annotated {record_size}, file {size}")
    named = EXTENSION_FORMATS.get(os.path.splitext(file_name)[1].lower())
    if named is not None and fmt != named:
        report.add("format_mismatch", path, f"a {fmt} ({mode}) named {os.path.splitext(file_name)[1]}")
    return ImageSize(size, turn if on_stored else 1, stored if on_stored else None)


EXTENSION_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}


def same_files(paths_a: list[str], paths_b: list[str], head: int = 65536) -> list[tuple[str, str]]:
    """``(a, b)`` for every file ``b`` of ``paths_b`` with the content of a file ``a`` of ``paths_a``, as
    far as their size and a hash of their first ``head`` bytes tell: the same image under two folders
    (``train2017/`` and ``val2017/``).

    Only files of a size found on both sides are read, so two sets of distinct images cost one
    ``stat`` per file. Missing files are ignored.
    """

    def sizes(paths: list[str]) -> dict[str, int]:
        out = {}
        for p in paths:
            try:
                out[p] = os.path.getsize(p)
            except OSError:
                continue
        return out

    def fingerprint(path: str, size: int) -> tuple[int, str]:
        with open(path, "rb") as f:
            return size, hashlib.blake2b(f.read(head), digest_size=16).hexdigest()

    size_a, size_b = sizes(paths_a), sizes(paths_b)
    common = set(size_a.values()) & set(size_b.values())
    first_a: dict[tuple[int, str], str] = {}
    for p, n in size_a.items():
        if n in common:
            first_a.setdefault(fingerprint(p, n), p)
    return [
        (first_a[key], p) for p, n in size_b.items() if n in common and (key := fingerprint(p, n)) in first_a
    ]


def read_lines(path: str) -> list[str]:
    """The non-blank lines of a split file of image names, whole (names may hold spaces)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:  # a name's bytes, as the disk has them
        return [line.rstrip("\r\n") for line in f if line.strip()]


def seeded_split(stems: list[str], val_fraction: float, seed: int, out_dir: str) -> tuple[str, str]:
    """Split image ids into train and val by a seeded shuffle and write ``out_dir/{train,val}.txt``;
    files already there are reused as they are (a resumed run keeps its split).

    Returns:
        The two files (usable wherever a split name is, e.g. ``--voc-train-split``).
    """
    paths = (os.path.join(out_dir, "train.txt"), os.path.join(out_dir, "val.txt"))
    if all(os.path.isfile(p) for p in paths):
        logger.info("reusing the train/val split in %s", out_dir)
        return paths
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    if len(stems) < 2:
        raise AnnotationError(f"{len(stems)} annotated images: a train/val split needs at least 2")
    order = np.random.default_rng(seed).permutation(len(stems))
    n_val = min(len(stems) - 1, max(1, round(val_fraction * len(stems))))
    os.makedirs(out_dir, exist_ok=True)
    # a name's bytes as the disk has them (UTF-8 or not); both encoded before either is written,
    # each written whole or not at all
    texts = [
        "".join(f"{stems[i]}\n" for i in sorted(part)).encode("utf-8", "surrogateescape")
        for part in (order[n_val:], order[:n_val])
    ]
    for path, text in zip(paths, texts):
        with atomic_open(path, "wb") as f:
            f.write(text)
    logger.info(
        "no split files: %d images split into %d train / %d val (seed %d, --val-fraction %g), written to %s",
        len(stems),
        len(stems) - n_val,
        n_val,
        seed,
        val_fraction,
        out_dir,
    )
    return paths
