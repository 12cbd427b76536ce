"""A run's main loop receiving DataLoader batches from two workers, stopped by SIGTERM in the middle
of a worker's file-descriptor handover (``python tests/handover_child.py plain|batches``).

The hand-over is ``multiprocessing``'s: the main process connects to the worker's resource sharer and
answers its challenge. The signal is sent at the third answer, so the stop lands inside the handshake
every time. ``plain`` iterates the loader as it is; ``batches`` through ``STOP.batches``. Prints one
line: the batches seen and whether the stop was raised inside the handshake (read from the stop's
own traceback, so it does not depend on timing), then exits 143.
"""

import multiprocessing.connection
import os
import signal
import sys
import traceback

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.loaders import loader_options  # noqa: E402
from tools.runtime.stop import STOP, Stopped  # noqa: E402

MAIN = os.getpid()
answer = multiprocessing.connection.answer_challenge
answers = 0


def answer_with_a_stop(connection, authkey):
    """The main process's side of the handshake, with SIGTERM sent to itself at the third answer."""
    global answers
    if os.getpid() == MAIN:
        answers += 1
        if answers == 3:
            os.kill(MAIN, signal.SIGTERM)
    return answer(connection, authkey)


class Tensors(Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.full((32, 32), float(i)), {"index": i}


def main(mode: str) -> int:
    multiprocessing.connection.answer_challenge = answer_with_a_stop
    loader = DataLoader(Tensors(), batch_size=2, **loader_options(2, pin_memory=False))
    seen = 0
    try:
        with STOP:
            for _ in STOP.batches(loader) if mode == "batches" else loader:
                seen += 1
    except Stopped as e:
        inside = any(f.f_code is answer_with_a_stop.__code__ for f, _ in traceback.walk_tb(e.__traceback__))
        print(f"seen {seen}, inside the handshake: {inside}, {e}", flush=True)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
