"""Torch ``Dataset`` over records, ``collate_fn`` and an aspect-ratio-grouped batch sampler."""

from __future__ import annotations

import bisect
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, DistributedSampler, RandomSampler, Sampler
from torchvision import tv_tensors

from datasets.coco import decode_masks
from datasets.orientation import open_upright
from datasets.records import Record


class DetectionDataset(Dataset):
    """``(image, target)`` pairs in torchvision's detection format.

    ``target`` holds ``boxes`` (``tv_tensors.BoundingBoxes`` xyxy pixels), ``labels`` int64,
    ``iscrowd`` and ``difficult`` bool, ``masks`` (``tv_tensors.Mask`` uint8 ``[N, H, W]``, only
    with ``with_masks``), ``index`` (the position in ``records``; ``Record.image_id`` is the
    image's name) and ``orig_size`` (``[H, W]`` of the file, to map predictions back).

    Args:
        records: the annotation records.
        image_root: folder the records' ``file_name`` are relative to.
        transforms: a callable on ``(image, target)``, e.g. :func:`datasets.transforms.build_transforms`.
        with_masks: decode instance masks (for Mask R-CNN).
    """

    def __init__(
        self,
        records: Sequence[Record],
        image_root: str,
        transforms: Callable | None = None,
        with_masks: bool = False,
    ) -> None:
        self.records = list(records)
        self.image_root = image_root
        self.transforms = transforms
        self.with_masks = with_masks

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``dataset[index]``, or ``dataset[index, seed]``: the random transforms then draw from a
        generator seeded with ``seed`` (:class:`EpochBatches`), so an epoch's augmentation does not
        depend on the worker count or on which worker loads the image."""
        if isinstance(key, tuple):
            index, seed = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self._load(index)
        return self._load(key)

    def _load(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        record = self.records[index]
        image = read_image(os.path.join(self.image_root, record.file_name))
        height, width = image.shape[-2:]
        if (width, height) != (record.width, record.height):
            raise ValueError(
                f"{record.file_name}: image is {width}x{height} but its record says "
                f"{record.width}x{record.height}; reload the annotations"
            )
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.from_numpy(record.boxes.copy()), format="XYXY", canvas_size=(height, width)
            ),
            "labels": torch.from_numpy(record.labels.copy()),
            "iscrowd": torch.from_numpy(record.iscrowd.copy()),
            "difficult": torch.from_numpy(record.difficult.copy()),
            "index": index,
            "orig_size": torch.tensor([height, width]),
        }
        if self.with_masks:
            target["masks"] = tv_tensors.Mask(torch.from_numpy(decode_masks(record)))
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def read_image(path: str) -> tv_tensors.Image:
    """Decode an image file to a uint8 RGB ``tv_tensors.Image`` ``[3, H, W]``, turned upright by its
    EXIF orientation (:mod:`datasets.orientation`).

    Every format goes through PIL (libjpeg-turbo for JPEG). torchvision 0.29 deprecated its own
    decoders (``torchvision.io.decode_jpeg``, in favour of TorchCodec); they gave the same pixels, and
    ``bench/bench_decode.py`` measures what PIL costs against them.

    Raises:
        OSError: naming the file when it is missing or cannot be decoded.
    """
    try:
        array = to_rgb8(open_upright(path))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise OSError(f"{path}: cannot read image ({e})") from e
    return tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1))


def to_rgb8(im: Image.Image) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB. 16- and 32-bit grey images are scaled by their type's range (PIL's own
    ``convert("RGB")`` clips them at 255, which turns a 16-bit image white)."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        grey = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(grey.max()), 1.0)
        grey = np.clip(grey / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.array(im if im.mode == "RGB" else im.convert("RGB"))


def collate_fn(batch):
    """Keep images of different sizes apart: ``(images tuple, targets tuple)``."""
    return tuple(zip(*batch))


def aspect_ratio_groups(records: Sequence[Record], k: int = 3) -> list[int]:
    """Group index per record by width/height, in ``2k + 2`` log-spaced bins around 1.

    Reads sizes from the records, never from the images.
    """
    bins = (2 ** np.linspace(-1, 1, 2 * k + 1)).tolist()
    return [bisect.bisect_right(bins, r.width / r.height) for r in records]


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches whose images share an aspect-ratio group, so padding wastes little compute.

    Follows the order of ``sampler``; a batch is emitted when its group fills up, and each group's
    remainder is emitted at the end as a smaller batch, so every index is used exactly once.

    Args:
        sampler: yields dataset indices (e.g. ``RandomSampler`` or a ``DistributedSampler``).
        group_ids: group of each dataset index (:func:`aspect_ratio_groups`).
        batch_size: images per batch.
        even: emit exactly ``ceil(len(sampler) / batch_size)`` batches: the groups' remainders are
            pooled into (mixed) batches at the end. Distributed training needs it: every rank must
            run the same number of iterations.
    """

    def __init__(
        self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int, even: bool = False
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.even = even

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = defaultdict(list)
        for index in self.sampler:
            group = buffers[self.group_ids[index]]
            group.append(index)
            if len(group) == self.batch_size:
                yield list(group)
                group.clear()
        if self.even:
            rest = [i for group in buffers.values() for i in group]
            for start in range(0, len(rest), self.batch_size):
                yield rest[start : start + self.batch_size]
            return
        for group in buffers.values():
            if group:
                yield list(group)

    def __len__(self) -> int:
        if self.even:
            return math.ceil(len(self.sampler) / self.batch_size)
        # Exact when the sampler visits every index once (RandomSampler, SequentialSampler);
        # iterating the sampler here would consume its random generator, so a sampler over a
        # subset (DistributedSampler) gets the usual estimate instead.
        if len(self.sampler) != len(self.group_ids):
            return math.ceil(len(self.sampler) / self.batch_size)
        counts = np.bincount(np.asarray(self.group_ids, dtype=np.int64))
        return int(sum(math.ceil(n / self.batch_size) for n in counts if n))


def mix_seed(*keys: int) -> int:
    """One seed from several integer keys (seed, phase, epoch...), stable across runs and platforms."""
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + int(k)) % (2**63 - 1)
    return seed


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """The training batches of one phase: a new seeded shuffle per epoch (:meth:`set_epoch`), built in
    the main process, so the DataLoader's workers can live for the whole phase.

    Each item is ``(index, sample_seed)`` for ``DetectionDataset[index, seed]``; both depend only on
    ``seed_keys``, the epoch and the index, never on the worker count or on history.

    Args:
        group_ids: aspect-ratio group of each dataset index (:func:`aspect_ratio_groups`).
        batch_size: images per batch.
        seed_keys: e.g. ``(seed, phase)``.
        shard: ``(world_size, rank)`` under torchrun: each rank gets its part of the same permutation
            and the same number of batches; ``None`` for one process.
    """

    def __init__(
        self,
        group_ids: Sequence[int],
        batch_size: int,
        seed_keys: Sequence[int],
        shard: tuple[int, int] | None = None,
    ) -> None:
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self.seed_keys = tuple(seed_keys)
        self.shard = shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> GroupedBatchSampler:
        seed = mix_seed(*self.seed_keys, self.epoch)
        indices = range(len(self.group_ids))
        if self.shard is not None:
            world, rank = self.shard
            sampler = DistributedSampler(indices, world, rank, shuffle=True, seed=seed)
        else:
            sampler = RandomSampler(indices, generator=torch.Generator().manual_seed(seed))
        return GroupedBatchSampler(sampler, self.group_ids, self.batch_size, even=self.shard is not None)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        seed = mix_seed(*self.seed_keys, self.epoch, 1)
        for batch in self._batches():
            yield [(i, mix_seed(seed, i)) for i in batch]

    def __len__(self) -> int:
        return len(self._batches())
