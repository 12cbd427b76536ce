"""Clean stops on Ctrl-C (SIGINT) and SIGTERM: never in the middle of a checkpoint write.

While :data:`STOP` is installed (``with STOP:``), either signal raises :class:`Stopped` at once,
unless a checkpoint is being written (``with STOP.deferred():``): then the write finishes first
and :class:`Stopped` is raised right after it. The entry catches it and prints the exact command
that continues the run. A signal that the parent process ignores (a background job of a
non-interactive shell ignores SIGINT) stays ignored.

A batch is received from the DataLoader's workers the same way (:meth:`StopSignals.batches`): a
stop raised while a worker hands over a tensor's file descriptor cuts that worker's handshake, and
the worker prints a ``ConnectionResetError`` (or ``BrokenPipeError``) traceback. There a second
signal stops at once, and a first one waits for the batch at most :func:`wait_bound` seconds (a few
times the slowest batch seen, never under a minute): a worker that hangs cannot keep the run from
stopping, and the stop names it.

The deferred sections are counted in one attribute written at once, and a signal that interrupts
their bookkeeping (entering or leaving a section) is held rather than raised there: no signal can
leave a section counted after it ended.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
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
    """A stop signal arrived; ``exit_code`` is the shell's convention (128 + signal number).
    ``why``: what else the line says (a DataLoader worker that sent no batch)."""

    def __init__(self, signum: int, why: str = "") -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}" + (f" ({why})" if why else ""))


MIN_WAIT_S = 60.0  # a first signal waits at least this long for the batch being received
WAIT_FACTOR = 4.0  # ... and this many times the slowest batch seen so far


def wait_bound(slowest_s: float) -> float:
    """How long a first signal waits for the batch being received: a slow but working loader (27 s
    for one batch of 8 Aquarium images on a crowded 2-core machine) stays under it."""
    return max(MIN_WAIT_S, WAIT_FACTOR * slowest_s)


def waiting_worker(items) -> tuple[str, int | None]:
    """The DataLoader worker whose batch ``items`` (a DataLoader iterator) waits for, as
    ``("worker 1 (pid 1234)", 1234)``; ``("the loader", None)`` when that is not known (no workers)."""
    try:
        worker = items._task_info[items._rcvd_idx][0]
        pid = items._workers[worker].pid
        return f"worker {worker} (pid {pid})", pid
    except (AttributeError, KeyError, IndexError, TypeError):
        return "the loader", None


def _kill_worker(items, pid: int) -> None:
    """Kill a hung DataLoader worker. Its loader first forgets its workers' pids, so that torch's
    SIGCHLD check does not report the kill as a worker's failure."""
    if getattr(items, "_worker_pids_set", False):
        from torch.utils.data._utils.signal_handling import _remove_worker_pids

        _remove_worker_pids(id(items))
        items._worker_pids_set = False
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


class StopSignals:
    def __init__(self) -> None:
        # (deferred sections, of which strict: a second signal must not cut them either), written at once
        self._counts = (0, 0)
        self.pending: int | None = None
        self._previous: dict[int, object] = {}
        self._owner = os.getpid()  # the process whose stop this is (set again on __enter__)
        self._waiting: tuple[object, float] | None = None  # (DataLoader iterator, bound s) in batches()
        self._alarm_previous: object = None

    def __enter__(self) -> StopSignals:
        self._owner = os.getpid()
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread only
            for signum in SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            # a handler installed from C reads as None: the default handler stands in for it
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
        self.pending = None

    def _handle(self, signum: int, frame) -> None:
        if (
            os.getpid() != self._owner
        ):  # a forked DataLoader worker: the run's process stops, then shuts it down
            return
        deferring, strict = self._counts
        bookkeeping = frame is not None and frame.f_code in _BOOKKEEPING
        if deferring and (self.pending is None or strict or bookkeeping):
            self.pending = signum
            if self._waiting is not None and not strict:  # a batch being received: bounded
                self._start_alarm(self._waiting[1])
            return
        self.pending = None
        raise Stopped(signum)

    def _start_alarm(self, seconds: float) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._alarm_previous = signal.signal(signal.SIGALRM, self._overdue)
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def _stop_alarm(self) -> None:
        if self._alarm_previous is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._alarm_previous)
            self._alarm_previous = None

    def _overdue(self, signum: int, frame) -> None:
        """The batch did not arrive within the bound: stop now, naming the worker. The worker ignores
        the terminal's signals (``datasets.loaders.quiet_worker``), so it is killed: a hung worker
        would otherwise keep the process from exiting."""
        items, bound = self._waiting or (None, 0.0)
        held, self.pending = self.pending or signal.SIGTERM, None
        self._stop_alarm()
        name, pid = waiting_worker(items)
        if pid is not None:
            _kill_worker(items, pid)
        raise Stopped(held, f"{name} sent no batch within {bound:g} s; it was stopped")

    @property
    def _deferring(self) -> int:
        return self._counts[0]

    @property
    def _strict(self) -> int:
        return self._counts[1]

    def deferred(self, strict: bool = True) -> _Deferred:
        """A section a stop signal must not cut (a checkpoint write): it raises after the section.
        ``strict=False``: a second signal during the section raises at once."""
        return _Deferred(self, strict)

    def batches(self, loader: Iterable[T]) -> Iterator[T]:
        """``loader``'s items, each received with a stop held back until it has arrived, or for
        :func:`wait_bound` seconds (a second signal stops at once); the stop is raised between items."""
        items, slowest = iter(loader), 0.0
        while True:
            start = time.monotonic()
            self._waiting = (items, wait_bound(slowest))
            with self.deferred(strict=False):
                try:
                    item = next(items)
                except StopIteration:
                    return
                finally:
                    self._waiting = None
                    self._stop_alarm()
            slowest = max(slowest, time.monotonic() - start)
            yield item


class _Deferred:
    """One deferred section (:meth:`StopSignals.deferred`)."""

    def __init__(self, stop: StopSignals, strict: bool) -> None:
        self.stop, self.strict = stop, int(strict)

    def __enter__(self) -> None:
        d, s = self.stop._counts
        self.stop._counts = (d + 1, s + self.strict)  # one store: counted, or not yet

    def __exit__(self, *exc) -> None:
        stop = self.stop
        d, s = stop._counts
        stop._counts = (d - 1, s - self.strict)  # one store; a signal before it is held (bookkeeping)
        if not stop._counts[0] and stop.pending is not None:
            signum, stop.pending = stop.pending, None
            raise Stopped(signum)


# Code that a signal holds off rather than interrupts: entering and leaving a deferred section.
_BOOKKEEPING = frozenset({_Deferred.__enter__.__code__, _Deferred.__exit__.__code__})

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
