"""Detection transforms on ``torchvision.transforms.v2`` with ``tv_tensors``.

Boxes and masks are ``tv_tensors`` in the target dict, so every geometric transform moves them
with the image. After the geometric steps, boxes are clamped to the image and any box left
degenerate (smaller than 1 px) is dropped together with its label, flags and mask.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2 as T

# Scale-jitter factors around the base size used in training.
TRAIN_SCALES = (0.8, 0.9, 1.0, 1.1, 1.2)


def _per_box_fields(inputs):
    """Per-box tensors that SanitizeBoundingBoxes must filter along with the boxes."""
    target = inputs[1]
    return tuple(target[k] for k in ("labels", "iscrowd", "difficult") if k in target)


def build_transforms(train: bool, min_size: int | None = None, max_size: int | None = None) -> T.Compose:
    """Transforms for ``(image, target)`` pairs of :class:`datasets.torch_data.DetectionDataset`.

    Args:
        train: training pipeline (scale jitter, horizontal flip, photometric jitter) or the
            evaluation one (resize only).
        min_size: shorter-side size in pixels; ``None`` keeps the image size (the model resizes).
        max_size: cap on the longer side; default ``round(min_size * 1333 / 800)``.

    Returns:
        A ``v2.Compose`` that yields a float image in ``[0, 1]`` and a target with the same keys.
    """
    steps: list = []
    if min_size is not None:
        max_size = max_size or round(min_size * 1333 / 800)
        scales = [round(min_size * f) for f in TRAIN_SCALES] if train else [min_size]
        steps.append(T.RandomShortestSize(min_size=scales, max_size=max_size, antialias=True))
    if train:
        steps += [T.RandomHorizontalFlip(0.5), T.RandomPhotometricDistort(p=0.5)]
    steps += [
        T.ClampBoundingBoxes(),
        T.SanitizeBoundingBoxes(labels_getter=_per_box_fields),
        T.ToDtype(torch.float32, scale=True),
    ]
    return T.Compose(steps)
