"""Parsed-record caches that can never hide a fix.

A cache file is named by a digest of what the loader read (annotation files by size and mtime) and
of its options; inside, it keeps the name, size and mtime of every image file the loader looked
at, present or missing. A hit is used only when all of them are unchanged, so moving images into
place, replacing a broken JPEG or editing an XML is seen on the next run without deleting
anything (``--no-cache`` skips the cache altogether).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence

from datasets.atomic import atomic_write_text
from datasets.records import RecordSet, recordset_from_dict, recordset_to_dict

logger = logging.getLogger(__name__)

CACHE_VERSION = 4  # bump when the records a loader produces change


def default_cache_dir() -> str:
    return os.environ.get("ASM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "asm_trainer")


def file_stamp(path: str) -> list[int] | None:
    """``[size, mtime_ns]`` of a file or folder (a folder's mtime changes when files are added), ``None``
    when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def cache_path(kind: str, cache_dir: str | None | bool, key: object, key_files: Iterable[str]) -> str | None:
    """Where the records for ``key`` (options, roots...) and these annotation files are cached;
    ``None`` with ``cache_dir=False`` or when a key file is missing (the loader reports it)."""
    if cache_dir is False:
        return None
    digest = hashlib.sha1(json.dumps([CACHE_VERSION, key], sort_keys=True, default=str).encode())
    for path in key_files:
        stamp = file_stamp(path)
        if stamp is None:
            return None
        digest.update(os.fsencode(f"{path}\0{stamp[0]}\0{stamp[1]}\n"))  # a name's bytes, UTF-8 or not
    return os.path.join(cache_dir or default_cache_dir(), f"{kind}-{digest.hexdigest()[:20]}.json")


def read_cache(path: str | None) -> RecordSet | None:
    """The cached records, or ``None`` when there are none or an image file changed since."""
    if not path or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        images = data["images"]
        dataset = recordset_from_dict(data["dataset"])
    except (OSError, ValueError, KeyError) as e:
        logger.info("record cache %s unreadable (%s); loading again", path, e)
        return None
    changed = [p for p, stamp in images.items() if file_stamp(p) != stamp]
    if changed:
        logger.info(
            "record cache %s is stale (%d image files changed, e.g. %s); loading again",
            path,
            len(changed),
            changed[0],
        )
        return None
    return dataset


def write_cache(path: str | None, dataset: RecordSet, image_paths: Sequence[str]) -> None:
    """Store ``dataset`` with the stamps of every image file the loader looked at."""
    if path:
        data = {"images": {p: file_stamp(p) for p in image_paths}, "dataset": recordset_to_dict(dataset)}
        atomic_write_text(path, json.dumps(data))
