"""One JSON line per epoch/round in ``<output>/log.jsonl`` and TensorBoard scalars in ``<output>/tb``."""

from __future__ import annotations

import json
import math
import os
from typing import Any


class RunLog:
    """Write logs only when ``enabled`` (rank 0 in distributed runs)."""

    def __init__(self, output_dir: str, enabled: bool = True) -> None:
        self.output_dir = output_dir
        self.enabled = enabled
        self._writer = None
        if enabled:
            os.makedirs(output_dir, exist_ok=True)

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
        with open(os.path.join(self.output_dir, "log.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=_plain) + "\n")

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
