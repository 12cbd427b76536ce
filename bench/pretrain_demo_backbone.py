"""Pretrain the demo's MobileNetV2 backbone on synthetic images of its own, never the demo's.

The built-in demo trains a detector in a few minutes on two CPU cores only from a backbone that
already tells shapes from texture. This script makes that backbone from nothing but a seed: it draws
images with the demo's generator under :data:`PRETRAIN_SEED` (the demo uses ``--data-seed``, 0 by
default, so no demo image, training or evaluation, is ever drawn here), cuts a window around each
object at its own scale and windows of background, and trains MobileNetV2 to name what a window
holds (four shapes or background). The ``features`` part goes to ``net/weights`` in half precision
(under 5 MB), with its provenance beside it::

    python bench/pretrain_demo_backbone.py                 # regenerates net/weights/demo_mobilenet_v2.pth
    python train_asm_one.py --weights-backbone none        # the demo without it

The last line is one JSON object: ``accuracy`` (held-out windows), ``seconds``, ``size_mb``, ``sha256``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torchvision
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from datasets.atomic import atomic_write_text  # noqa: E402
from datasets.synthetic import DEMO_CLASSES, render_image  # noqa: E402
from net.models import DEMO_BACKBONE  # noqa: E402

PRETRAIN_SEED = 1000  # the images' seed; the demo's own data use --data-seed (0 unless changed)
WINDOW = 96  # px: the largest demo object (80 px) fits at the scale the detector sees it


def windows(seed: int, images: range, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A window around each object of the images (label 1..C, shifted at random but holding the whole
    object) and one background window per image (label 0) that overlaps no object by more than a
    tenth of the window; uint8 ``[N, 3, WINDOW, WINDOW]`` and int64 labels."""
    crops, labels = [], []
    for index in images:
        image, objects = render_image(seed, index)
        pixels = np.asarray(image)
        height, width = pixels.shape[:2]
        boxes = []
        for label, poly in objects:
            xy = np.reshape(poly, (-1, 2))
            x0, y0 = xy.min(0)
            x1, y1 = xy.max(0)
            boxes.append((x0, y0, x1, y1))
            left, top = _offset(rng, x0, x1, width), _offset(rng, y0, y1, height)
            crops.append(pixels[int(top) : int(top) + WINDOW, int(left) : int(left) + WINDOW])
            labels.append(label)
        for _ in range(10):  # a background window: a few tries to miss every object
            left, top = int(rng.integers(0, width - WINDOW + 1)), int(rng.integers(0, height - WINDOW + 1))
            overlap = max(
                (
                    max(0, min(x1, left + WINDOW) - max(x0, left))
                    * max(0, min(y1, top + WINDOW) - max(y0, top))
                )
                for x0, y0, x1, y1 in boxes or [(0, 0, 0, 0)]
            )
            if overlap <= 0.1 * WINDOW * WINDOW:
                crops.append(pixels[top : top + WINDOW, left : left + WINDOW])
                labels.append(0)
                break
    data = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    return data, torch.tensor(labels, dtype=torch.int64)


def _offset(rng: np.random.Generator, low: float, high: float, size: int) -> float:
    """Where a window starts along one axis: at random, holding ``low..high`` whole; centred on it
    when it is wider than the window (a rotated cross can be)."""
    first, last = max(0.0, high - WINDOW), min(low, size - WINDOW)
    if last < first:
        return float(np.clip((low + high - WINDOW) / 2, 0, size - WINDOW))
    return rng.uniform(first, last)


def as_input(batch: torch.Tensor) -> torch.Tensor:
    """uint8 windows to the detector's input scale (0-1; its transform normalises with ImageNet's)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (batch.float() / 255 - mean) / std


def train(args) -> tuple[nn.Module, float]:
    """MobileNetV2 trained to name the windows; returns it and its held-out accuracy."""
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    x, y = windows(PRETRAIN_SEED, range(args.images), rng)
    x_val, y_val = windows(PRETRAIN_SEED, range(args.images, args.images + args.val_images), rng)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=len(DEMO_CLASSES) + 1)
    steps = args.epochs * math.ceil(len(x) / args.batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=0.9, weight_decay=4e-5, nesterov=True
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps, pct_start=0.15)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x))
        seen = correct = 0
        for start in range(0, len(x), args.batch_size):
            idx = order[start : start + args.batch_size]
            batch = x[idx]
            flip = torch.rand(len(idx)) < 0.5  # shapes keep their class under a mirror
            batch[flip] = batch[flip].flip(-1)
            logits = model(as_input(batch))
            loss = nn.functional.cross_entropy(logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}, train accuracy {correct / seen:.3f}",
            flush=True,
        )
    model.eval()
    with torch.inference_mode():
        predicted = torch.cat(
            [model(as_input(x_val[i : i + 256])).argmax(1) for i in range(0, len(x_val), 256)]
        )
    return model, float((predicted == y_val).float().mean())


def backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ``features`` tensors in torchvision's key layout, floats in half precision (BatchNorm
    counters stay integers)."""
    return {
        f"features.{k}": v.half() if v.is_floating_point() else v
        for k, v in model.features.state_dict().items()
    }


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1500, help="pretraining images (windows: about 3 per image)")
    p.add_argument("--val-images", type=int, default=200, help="held-out images for the accuracy")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0, help="windows' shifts, initialisation and batch order")
    p.add_argument("--out", default=DEMO_BACKBONE)
    args = p.parse_args(argv)
    started = time.perf_counter()
    model, accuracy = train(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    torch.save(backbone_state(model), tmp)
    os.replace(tmp, args.out)
    seconds = round(time.perf_counter() - started, 1)
    result = {
        "accuracy": round(accuracy, 4),
        "seconds": seconds,
        "size_mb": round(os.path.getsize(args.out) / 2**20, 2),
        "sha256": sha256(args.out),
    }
    provenance = {
        **result,
        "what": "MobileNetV2 features trained to classify 96 px windows (4 demo shapes or background) "
        "of synthetic images drawn by datasets.synthetic.render_image",
        "image_seed": PRETRAIN_SEED,
        "images": [0, args.images],
        "held_out_images": [args.images, args.images + args.val_images],
        "never_the_demo": "the demo draws its images with --data-seed (0 by default); these use seed "
        f"{PRETRAIN_SEED}",
        "command": " ".join(
            ["python bench/pretrain_demo_backbone.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "settings": vars(args) | {"out": os.path.relpath(args.out, ROOT)},
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    atomic_write_text(os.path.splitext(args.out)[0] + ".json", json.dumps(provenance, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
