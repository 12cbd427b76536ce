"""The evaluator contract: ``reset()``, ``process(records, outputs)``, ``summarize() -> dict[str, float]``."""

from __future__ import annotations

from collections.abc import Sequence

from datasets.records import Record


class Evaluator:
    """Accumulates ground-truth records and predictions; subclasses implement :meth:`summarize`."""

    def reset(self) -> None:
        self._records: list[Record] = []
        self._outputs: list[dict] = []

    def process(self, records: Sequence[Record], outputs: Sequence[dict]) -> None:
        """Add images: their records and predictions (``boxes`` xyxy, ``scores``, ``labels``[, ``masks``])."""
        if len(records) != len(outputs):
            raise ValueError(f"{len(records)} records but {len(outputs)} outputs")
        self._records.extend(records)
        self._outputs.extend(outputs)

    def summarize(self) -> dict[str, float]:
        raise NotImplementedError
