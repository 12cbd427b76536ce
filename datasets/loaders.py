"""DataLoaders of detection records: shuffled, seeded batches for training; ordered batches for
evaluation and detection. Workers ignore the terminal's signals (the run's process stops them)."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import Any

from torch.utils.data import DataLoader, SequentialSampler

from datasets.records import Record
from datasets.torch_data import (
    DetectionDataset,
    EpochBatches,
    GroupedBatchSampler,
    aspect_ratio_groups,
    collate_fn,
)
from datasets.transforms import build_transforms


def quiet_worker(worker_id: int) -> None:
    """A DataLoader worker ignores Ctrl-C and SIGTERM: a terminal sends them to the whole process
    group, and the run's process stops cleanly (tools/runtime/stop.py) and then shuts its workers down. A
    worker that took them itself would die with a traceback, or be reported as killed."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def loader_options(workers: int, pin_memory: bool) -> dict[str, Any]:
    """DataLoader settings shared by training and evaluation: workers that live as long as the
    loader (a phase, or the run for the validation loader), a prefetch depth, and page-locked
    batches for non-blocking copies (``pin_memory``: when the model is on a GPU)."""
    return {
        "num_workers": workers,
        "collate_fn": collate_fn,
        "persistent_workers": workers > 0,
        "prefetch_factor": 4 if workers > 0 else None,
        "pin_memory": pin_memory,
        "worker_init_fn": quiet_worker if workers > 0 else None,
    }


def train_loader(
    records: Sequence[Record],
    image_root: str,
    batch_size: int,
    seed_keys: Sequence[int],
    workers: int = 0,
    with_masks: bool = False,
    pin_memory: bool = False,
    shard: tuple[int, int] | None = None,
) -> DataLoader:
    """Shuffled, aspect-ratio-grouped batches for one phase; call ``loader.batch_sampler.set_epoch(e)``
    before each epoch. The shuffle and the augmentation depend on ``seed_keys`` and the epoch only
    (:class:`~datasets.torch_data.EpochBatches`); ``shard``: ``(world size, rank)`` under torchrun,
    where each rank gets its part of the same permutation and the same number of batches."""
    dataset = DetectionDataset(records, image_root, build_transforms(True), with_masks=with_masks)
    batches = EpochBatches(aspect_ratio_groups(dataset.records), batch_size, seed_keys, shard)
    return DataLoader(dataset, batch_sampler=batches, **loader_options(workers, pin_memory))


def eval_loader(
    records: Sequence[Record],
    image_root: str,
    batch_size: int = 1,
    workers: int = 0,
    with_masks: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """Batches of ``records`` in order (grouped by aspect ratio), for evaluation and detection."""
    dataset = DetectionDataset(records, image_root, build_transforms(False), with_masks=with_masks)
    batches = GroupedBatchSampler(
        SequentialSampler(dataset), aspect_ratio_groups(dataset.records), batch_size
    )
    return DataLoader(dataset, batch_sampler=batches, **loader_options(workers, pin_memory))
