"""An output folder belongs to one run at a time: a lock file, and no silent mixing of two runs.

``train_asm_one.py`` writes ``last.pth``, ``best.pth``, ``log.jsonl`` and ``tb/`` there. Starting a
new run in a folder that holds another run's files would interleave the logs and let either run's
checkpoints win, so it is refused unless the run continues it (``--resume``) or starts over
(``--overwrite``, which removes those files first). ``.lock`` holds the owner's host and pid; a lock
left by a killed process (no such pid on this host) is taken over.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import socket
from collections.abc import Iterator

from tools.engine.checkpoint import BEST, LAST, last_path

logger = logging.getLogger(__name__)

RUN_FILES = (
    LAST,
    BEST,
    "log.jsonl",
    "config.yaml",
    "load_report.json",
    "tb",
    "rounds",
    "labelling",
    "splits",
)  # splits: a flat folder's seeded train/val lists (--overwrite draws them again)


class OutputDirError(ValueError):
    """The output folder is in use or holds another run; the message says what to pass."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take_lock(path: str) -> None:
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path, encoding="utf-8") as f:
                    host, _, pid = f.read().strip().partition(" ")
            except (OSError, UnicodeDecodeError):
                host, pid = "", ""
            if not host or not pid.isdigit():  # empty or torn: its writer died before finishing it
                logger.warning("taking over %s: it names no process (empty or unreadable)", path)
                os.remove(path)
                continue
            if host == socket.gethostname() and not _alive(int(pid)):
                logger.info("taking over %s from process %s, which is gone", path, pid)
                os.remove(path)
                continue
            raise OutputDirError(
                f"{os.path.dirname(path)} is in use by process {pid} on {host} (its {path}); "
                f"wait for it, or choose another --output-dir"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(me)
        return


@contextlib.contextmanager
def claim(output_dir: str, resume: bool, overwrite: bool, enabled: bool = True) -> Iterator[None]:
    """Hold ``output_dir`` for this run (``enabled``: rank 0 only under torchrun).

    Raises:
        OutputDirError: the folder is in use by a live process, or holds another run's files and
            neither ``resume`` nor ``overwrite`` is given.
    """
    if not enabled:
        yield
        return
    created = not os.path.exists(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    lock = os.path.join(output_dir, ".lock")
    _take_lock(lock)
    try:
        found = [f for f in RUN_FILES if os.path.exists(os.path.join(output_dir, f))]
        if found and overwrite:
            for name in found:
                target = os.path.join(output_dir, name)
                shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
            logger.warning("--overwrite: removed %s from %s", ", ".join(found), output_dir)
        elif found and not resume and not os.path.exists(last_path(output_dir)):
            # a run that stopped before its first checkpoint: nothing to continue, start it again
            for name in found:
                target = os.path.join(output_dir, name)
                shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
            logger.info(
                "%s holds no checkpoint yet (a run stopped before its first one): starting again", output_dir
            )
        elif found and not resume:
            raise OutputDirError(
                f"{output_dir} holds another run ({', '.join(found)}): pass --resume to continue it "
                f"(its {LAST}), --overwrite to start over, or another --output-dir"
            )
        for tmp in glob.glob(os.path.join(output_dir, ".tmp_*")):  # torn writes of a killed run
            os.remove(tmp)
            logger.info("removed %s, left by an interrupted checkpoint write", tmp)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)
        if created:  # a run refused before it wrote anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                os.rmdir(output_dir)
