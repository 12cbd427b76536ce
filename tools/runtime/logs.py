"""One JSON line per epoch/round in ``<output>/log.jsonl`` and TensorBoard scalars in ``<output>/tb``."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from datasets.atomic import atomic_write_text


class RunLog:
    """Write logs only when ``enabled`` (rank 0 in distributed runs)."""

    def __init__(self, output_dir: str, enabled: bool = True) -> None:
        self.output_dir = output_dir
        self.enabled = enabled
        self._writer = None
        self.path = os.path.join(output_dir, "log.jsonl")
        self.lines = 0  # lines in log.jsonl: a checkpoint records it, a resume cuts back to it
        if enabled:
            os.makedirs(output_dir, exist_ok=True)
            if os.path.isfile(self.path):
                with open(self.path, encoding="utf-8") as f:
                    self.lines = sum(1 for line in f if line.strip())

    def truncate(self, lines: int) -> int:
        """Keep the first ``lines`` lines of log.jsonl (those a checkpoint had seen); returns how many
        were dropped: records of epochs a killed run wrote after its last checkpoint, which the resumed
        run writes again."""
        if not self.enabled or self.lines <= lines:
            return 0
        with open(self.path, encoding="utf-8") as f:
            kept = [line for line in f if line.strip()][:lines]
        atomic_write_text(self.path, "".join(kept))
        dropped, self.lines = self.lines - lines, lines
        return dropped

    def records_since(self, line: int) -> list[dict[str, Any]]:
        """The records of log.jsonl from its ``line``-th on (a phase's, when ``line`` was read at its start)."""
        if not self.enabled:
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(s) for s in [s for s in f if s.strip()][line:]]

    @property
    def writer(self):
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(os.path.join(self.output_dir, "tb"))
        return self._writer

    def scalars(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        for tag, value in values.items():
            if value is not None and math.isfinite(float(value)):
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def jsonl(self, entry: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=_plain) + "\n")
        self.lines += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
