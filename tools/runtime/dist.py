"""Distributed runs under ``torchrun``: process group, rank helpers, sharding and gathering.

Launch as torchvision's references do::

    torchrun --nproc_per_node 4 train_asm_one.py ...                      # one node, 4 GPUs
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 \\
        --rdzv_backend c10d --rdzv_endpoint host0:29400 train_asm_one.py ... # two nodes

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them everything here is a
no-op and the run is a plain single process. The backend is NCCL on CUDA and gloo on CPU.

Training uses ``DistributedDataParallel`` with a distributed, aspect-ratio-grouped sampler;
detection and evaluation split the *batches* of a loader across ranks (the same batches as one
process would run, so results are identical) and gather the outputs in dataset order; decisions
(sample selection) are taken on rank 0 and broadcast, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)
T = TypeVar("T")


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> torch.device:
    """Join the process group when launched by ``torchrun``; returns this rank's device.

    Raises:
        ValueError: CUDA requested but fewer GPUs than local processes on this node.
    """
    if not launched() or is_distributed():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs on this node: "
                "start at most one process per GPU (--nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank() != 0:  # one copy of the log, from rank 0
        logging.getLogger().setLevel(logging.WARNING)
    logger.info("distributed: %d processes, backend %s", world_size(), dist.get_backend())
    return device


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Wrap an entry point: the process group (if :func:`init` joined one) is left however it ends."""
    try:
        yield
    finally:
        if is_distributed():
            dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def will_be_main() -> bool:
    """Rank 0, also before the process group starts (torchrun sets ``RANK``)."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def main_first(fn: Callable[..., T], *params: Any) -> T:
    """``fn(*params)`` on rank 0 first, then on the others (rank 0 writes caches they then read)."""
    if not is_main():
        barrier()
    try:
        return fn(*params)
    finally:
        if is_main():
            barrier()


def broadcast(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` holds it, on every rank (any picklable object)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def check_shardable(n: int, what: str) -> None:
    """Refuse a launch with more processes than ``n`` items to split (most of them would idle)."""
    if n < world_size():
        raise ValueError(
            f"{what}: {n} items for {world_size()} processes; use at most {n} processes "
            "(torchrun --nproc_per_node) or more items"
        )


def shard_loader(loader: DataLoader) -> DataLoader:
    """The loader with only this rank's batches: batch ``k`` goes to rank ``k % world_size``."""
    if not is_distributed():
        return loader
    batches = list(loader.batch_sampler)  # a rank left without batches contributes nothing
    return DataLoader(
        loader.dataset,
        batch_sampler=batches[rank() :: world_size()],
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
    )


def local_world_size() -> int:
    """Processes on this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def gather_by_index(found: dict[int, T]) -> dict[int, T]:
    """Merge per-rank ``{dataset index: output}`` dicts into one, on every rank."""
    if not is_distributed():
        return found
    merged: dict[int, T] = {}
    for part in all_gather(found):
        merged.update(part)
    return merged


def sharded_map(fn: Callable[[Sequence], list[T]], items: Sequence) -> list[T]:
    """``fn(items)`` computed in contiguous slices, one per rank, and gathered in order on every rank."""
    if not is_distributed():
        return fn(items)
    bounds = [len(items) * r // world_size() for r in range(world_size() + 1)]
    part = fn(items[bounds[rank()] : bounds[rank() + 1]])
    return [x for chunk in all_gather(part) for x in chunk]


def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed (optionally with SyncBatchNorm)."""
    if not is_distributed():
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
