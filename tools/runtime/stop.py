"""Clean stops on Ctrl-C (SIGINT) and SIGTERM: never in the middle of a checkpoint write.

While :data:`STOP` is installed (``with STOP:``), either signal raises :class:`Stopped` at once,
unless a checkpoint is being written (``with STOP.deferred():``): then the write finishes first
and :class:`Stopped` is raised right after it. The entry catches it and prints the exact command
that continues the run. A signal that the parent process ignores (a background job of a
non-interactive shell ignores SIGINT) stays ignored.

A batch is received from the DataLoader's workers the same way (:meth:`StopSignals.batches`): a
stop raised while a worker hands over a tensor's file descriptor cuts that worker's handshake, and
the worker prints a ``ConnectionResetError`` (or ``BrokenPipeError``) traceback. There a second
signal stops at once, so a worker that hangs cannot keep the run from stopping.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Exit codes of the scripts, one table: what a wrapper script (or bench/asm_efficiency.py) can act on.
EXIT_DONE = 0  # finished: the pool is exhausted, AP settled, or --max-rounds
EXIT_BAD_INPUT = 2  # options, data, checkpoint or folder refused, in one line naming what to fix
EXIT_INTERRUPTED = 3  # --exit-after-epochs (resume tests): continue with the printed command
EXIT_PAUSED = 4  # a round waits for a human's labels (--oracle none): the next steps are printed
EXIT_DIVERGED = 5  # training diverged past the rollbacks; the last checkpoint is the last good state
# Ctrl-C and SIGTERM: 130 and 143 (128 + the signal), after the checkpoint being written (Stopped)


class Interrupted(Exception):
    """Raised to end a run early (``--exit-after-*``); the checkpoint just written lets it continue."""


class Stopped(Exception):
    """A stop signal arrived; ``exit_code`` is the shell's convention (128 + signal number)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class StopSignals:
    def __init__(self) -> None:
        self._deferring = 0
        self._strict = 0  # deferred sections that a second signal must not cut either
        self.pending: int | None = None
        self._previous: dict[int, object] = {}
        self._owner = os.getpid()  # the process whose stop this is (set again on __enter__)

    def __enter__(self) -> StopSignals:
        self._owner = os.getpid()
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread only
            for signum in SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        self.pending = None

    def _handle(self, signum: int, frame) -> None:
        if (
            os.getpid() != self._owner
        ):  # a forked DataLoader worker: the run's process stops, then shuts it down
            return
        if self._deferring and (self.pending is None or self._strict):
            self.pending = signum
            return
        self.pending = None
        raise Stopped(signum)

    @contextlib.contextmanager
    def deferred(self, strict: bool = True) -> Iterator[None]:
        """A section a stop signal must not cut (a checkpoint write): it raises after the section.
        ``strict=False``: a second signal during the section raises at once."""
        self._deferring += 1
        self._strict += strict
        try:
            yield
        finally:
            self._deferring -= 1
            self._strict -= strict
            if not self._deferring and self.pending is not None:
                signum, self.pending = self.pending, None
                raise Stopped(signum)

    def batches(self, loader: Iterable[T]) -> Iterator[T]:
        """``loader``'s items, each received with a stop held back until it has arrived (a second
        signal stops at once); the stop is raised between items."""
        items = iter(loader)
        while True:
            with self.deferred(strict=False):
                try:
                    item = next(items)
                except StopIteration:
                    return
            yield item


STOP = StopSignals()

# Flags that must not be repeated when a run continues: they start over, reinitialise the model
# or stop the run again.
_DROP = {"--resume": 1, "--overwrite": 0, "--weights": 1, "--exit-after-epochs": 1}


def resume_command(argv: Sequence[str], checkpoint: str, script: str | None = None) -> str:
    """The command line that continues a run: ``argv`` without the flags of :data:`_DROP`, plus
    ``--resume checkpoint``."""
    kept, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in _DROP:
            skip = 0 if "=" in arg else _DROP[name]
            continue
        kept.append(arg)
    script = script or sys.argv[0]
    return shlex.join(["python", script, *kept, "--resume", checkpoint])
