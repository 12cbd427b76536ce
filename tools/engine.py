"""Training, evaluation and detection loops (kept small, as torchvision's reference engine)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tools import dist
from tools.checkpoint import unwrap


def to_device(images, targets, device: torch.device):
    images = [img.to(device, non_blocking=True) for img in images]
    if targets is not None:
        targets = [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
                   for t in targets]  # fmt: skip
    return images, targets


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    device: torch.device,
    epoch: int,
    warmup_iters: int = 0,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad: float | None = None,
    desc: str = "train",
    loss_bound: float | None = None,
) -> dict[str, float]:
    """Train for one pass over ``loader``.

    Args:
        warmup_iters: linear learning-rate warm-up from 0.001x over this many iterations (used in
            the first epoch only; pass 0 afterwards).
        scaler: a ``torch.amp.GradScaler`` to train in mixed precision (CUDA); ``None`` = fp32.
        clip_grad: max gradient norm, or ``None``.
        loss_bound: a total loss above this is a spike, raised like a non-finite loss (``None``: no bound).

    Returns:
        Mean of each loss over the epoch, plus ``loss`` (their sum) and the last ``lr``.

    Raises:
        FloatingPointError: a non-finite loss or one above ``loss_bound``, before it reaches the
            weights; the message holds the loss dict.
    """
    model.train()
    warmup = None
    if warmup_iters > 0:
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 0.001, 1.0, total_iters=warmup_iters)
    sums: dict[str, float] = defaultdict(float)
    count = 0
    bar = tqdm(loader, desc=f"{desc} epoch {epoch}", leave=False, dynamic_ncols=True, disable=progress_off())
    for images, targets in bar:
        images, targets = to_device(images, targets, device)
        with torch.autocast(device.type, enabled=scaler is not None):
            loss_dict = model(images, targets)
            loss = sum(loss_dict.values())
        values = {k: v.item() for k, v in loss_dict.items()}
        total = loss.item()
        if not math.isfinite(total):
            raise FloatingPointError(f"non-finite loss at epoch {epoch}, iteration {count}: {values}")
        if loss_bound is not None and total > loss_bound:
            raise FloatingPointError(f"loss spike at epoch {epoch}, iteration {count}: {total:.3g} > {loss_bound:.3g}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if clip_grad:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            optimizer.step()
        if warmup is not None and count < warmup_iters:
            warmup.step()
        for k, v in values.items():
            sums[k] += v
        sums["loss"] += loss.item()
        count += 1
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    means = {k: v / max(count, 1) for k, v in sums.items()}
    means["lr"] = optimizer.param_groups[0]["lr"]
    return means


@torch.inference_mode()
def detect(model: nn.Module, loader: Iterable, device: torch.device, desc: str = "detect") -> list[dict]:
    """Run the model over ``loader`` (targets carry ``image_id`` = dataset index).

    Under torchrun each rank runs its share of the loader's batches and the outputs are gathered
    on every rank (:mod:`tools.dist`), so the result is the same as one process's.

    Returns:
        One dict per image in dataset order: ``boxes`` float32 ``[N, 4]`` xyxy in the pixels of the
        original image, ``labels`` int64, ``scores`` float32, and ``masks`` float32 ``[N, H, W]``
        probabilities for Mask R-CNN; all numpy.
    """
    model = unwrap(model)  # DDP's forward would sync buffers: ranks run different batch counts here
    model.eval()
    found: dict[int, dict] = {}
    bar = tqdm(dist.shard_loader(loader), desc=desc, leave=False, dynamic_ncols=True, disable=progress_off())
    for images, targets in bar:
        images, _ = to_device(images, None, device)
        outputs = model(images)
        for image, target, out in zip(images, targets, outputs):
            found[int(target["image_id"])] = to_original(out, image.shape[-2:], target["orig_size"])
    found = dist.gather_by_index(found)
    return [found[i] for i in sorted(found)]


def progress_off() -> bool | None:
    """tqdm's ``disable``: bars on rank 0 only, and only on a terminal (``None``)."""
    return None if dist.is_main() else True


def to_original(out: dict, size, orig_size) -> dict:
    """Predictions (on the model's input image) as numpy in the original image's pixels."""
    res = {k: v.float().cpu() if k != "labels" else v.cpu() for k, v in out.items()}
    h, w = (int(v) for v in size)
    oh, ow = (int(v) for v in orig_size)
    if (h, w) != (oh, ow):  # the dataset transform resized the image
        scale = torch.tensor([ow / w, oh / h, ow / w, oh / h])
        res["boxes"] = res["boxes"] * scale
        if "masks" in res:
            res["masks"] = nn.functional.interpolate(res["masks"], size=(oh, ow), mode="bilinear")
    if "masks" in res:
        res["masks"] = res["masks"][:, 0]
    return {k: v.numpy().astype(np.int64 if k == "labels" else np.float32) for k, v in res.items()}


def evaluate(model: nn.Module, loader: Iterable, evaluators: list, device: torch.device) -> dict[str, float]:
    """Detect over ``loader`` and feed every evaluator; return their merged summaries."""
    outputs = detect(model, loader, device, desc="eval")
    records = loader.dataset.records
    results: dict[str, float] = {}
    for evaluator in evaluators:
        evaluator.reset()
        evaluator.process(records, outputs)
        results.update(evaluator.summarize())
    return results
