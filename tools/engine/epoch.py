"""Training, evaluation and detection loops (kept small, as torchvision's reference engine)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tools.engine.checkpoint import unwrap
from tools.runtime import dist
from tools.runtime.progress import HEARTBEAT
from tools.runtime.stop import STOP


def to_device(images, targets, device: torch.device):
    images = [img.to(device, non_blocking=True) for img in images]
    if targets is not None:
        targets = [
            {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
            for t in targets
        ]
    return images, targets


CHECK_EVERY = 25  # iterations between reads of the on-device loss sums (the only host syncs of the loop)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    device: torch.device,
    epoch: int,
    warmup_iters: int = 0,
    warmup_done: int = 0,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad: float | None = None,
    desc: str = "train",
    loss_bound: float | dict[str, float] | None = None,
    check_every: int = CHECK_EVERY,
) -> dict[str, float]:
    """Train for one pass over ``loader``.

    The loss sums and the finiteness check stay on the device (read every ``check_every``
    iterations and at the end). A non-finite loss, or one above ``loss_bound``, makes the step's
    gradients non-finite, the ``GradScaler`` (fp32 or AMP) skips it on the device, and the next read raises.

    Args:
        warmup_iters: linear LR warm-up from 0.001x over this many iterations of the phase (0: none).
        warmup_done: iterations of the warm-up run in earlier epochs (the phase's iterations so far).
        scaler: a ``torch.amp.GradScaler`` to train in mixed precision (CUDA); ``None`` = fp32.
        clip_grad: max gradient norm, or ``None``.
        loss_bound: a bound on the total loss, or per named term (:class:`LossTally`); ``None``: none.
        check_every: iterations between host reads of the loss sums.

    Returns:
        Mean of each loss over the epoch, plus ``loss`` (their sum) and the last ``lr``.

    Raises:
        FloatingPointError: a non-finite or out-of-bound loss (its first iteration and loss dict).
    """
    model.train()
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # the epoch's rate, after warm-up
    # fp32 gets a scaler at a constant 1.0 (exact): its on-device skip of non-finite steps is the guard
    guard = scaler or torch.amp.GradScaler(device.type, init_scale=1.0, growth_interval=2**30)
    tally = LossTally(loss_bound, device)
    count = seen = 0
    steps, started = len(loader), time.monotonic()
    bar = tqdm(loader, desc=f"{desc} epoch {epoch}", leave=False, dynamic_ncols=True, disable=progress_off())
    for images, targets in STOP.batches(bar):  # a stop waits for the batch being received
        images, targets = to_device(images, targets, device)
        with torch.autocast(device.type, enabled=scaler is not None):
            loss_dict = model(images, targets)
        loss = tally.add(loss_dict, count)
        set_warmup_lr(optimizer, base_lrs, warmup_done + count, warmup_iters)
        _step(model, optimizer, guard, loss, clip_grad)
        count += 1
        seen += len(images)
        HEARTBEAT.tick("train", count, steps, seen, started)
        if count % check_every == 0:
            tally.check(epoch)
            bar.set_postfix(loss=f"{tally.mean_loss(count):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    set_warmup_lr(optimizer, base_lrs, 0, 0)  # the schedule goes on from the epoch's own rate
    if not count:
        return {"loss": 0.0, "lr": optimizer.param_groups[0]["lr"]}
    tally.check(epoch)
    return {**tally.means(count), "lr": optimizer.param_groups[0]["lr"]}


def _step(model: nn.Module, optimizer, guard: torch.amp.GradScaler, loss: torch.Tensor, clip_grad) -> None:
    """Backward and optimizer step through the scaler, which skips a step of non-finite gradients."""
    optimizer.zero_grad(set_to_none=True)
    guard.scale(loss).backward()
    if clip_grad:
        guard.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    guard.step(optimizer)
    guard.update()


class LossTally:
    """An epoch's loss sums and its first bad iteration, kept on the device (no host sync per step).

    ``loss_bound``: a bound on the total loss, or a dict bounding named terms (``"loss"``: the
    total); ``None``: finiteness only.
    """

    def __init__(self, loss_bound: float | dict[str, float] | None, device: torch.device):
        self.bounds = (
            loss_bound if isinstance(loss_bound, dict) else {} if loss_bound is None else {"loss": loss_bound}
        )
        self.device = device
        self.keys: list[str] = []
        self.sums = self.bad_at = self.bad_values = self.bound = None

    def add(self, loss_dict: dict[str, torch.Tensor], index: int) -> torch.Tensor:
        """Count iteration ``index``'s losses; returns the total to back-propagate, made infinite
        when any value is bad, so that its gradients are too and the scaler skips the step."""
        if self.sums is None:
            self.keys = list(loss_dict)
            self.sums = torch.zeros(len(self.keys) + 1, dtype=torch.float64, device=self.device)
            self.bad_at = torch.full((), -1, dtype=torch.int64, device=self.device)
            self.bad_values = torch.zeros_like(self.sums)
            limits = [self.bounds.get(k, math.inf) for k in [*self.keys, "loss"]]
            self.bound = torch.tensor(limits, dtype=torch.float64, device=self.device)
        loss = sum(loss_dict[k] for k in self.keys)
        values = torch.stack(
            [loss_dict[k].detach().float().sum() for k in self.keys] + [loss.detach().float().sum()]
        )
        values = values.double()
        ok = (torch.isfinite(values) & (values <= self.bound)).all()
        first = (self.bad_at < 0) & ~ok
        self.bad_at = torch.where(first, index, self.bad_at)
        self.bad_values = torch.where(first, values, self.bad_values)
        self.sums += torch.where(ok, values, 0.0)
        return loss / ok.float()

    def check(self, epoch: int) -> None:
        """Raise FloatingPointError for the first bad iteration so far (one host read)."""
        _check(self.bad_at, self.bad_values, self.keys, epoch, self.bounds)

    def mean_loss(self, count: int) -> float:
        return self.sums[-1].item() / count

    def means(self, count: int) -> dict[str, float]:
        return dict(zip([*self.keys, "loss"], (self.sums / count).tolist()))


WARMUP_START = 0.001  # the warm-up's first factor of the rate


def set_warmup_lr(optimizer: torch.optim.Optimizer, base_lrs: list[float], step: int, total: int) -> None:
    """Set each group's rate for the phase's iteration ``step``: ``base`` times a factor rising
    linearly from :data:`WARMUP_START` at step 0 to 1 at step ``total`` (as torch's ``LinearLR``),
    and ``base`` from then on."""
    factor = WARMUP_START + (1.0 - WARMUP_START) * step / total if step < total else 1.0
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor


def _check(
    bad_at: torch.Tensor, bad_values: torch.Tensor, keys: list[str], epoch: int, bounds: dict[str, float]
) -> None:
    """Raise for the first bad iteration recorded on the device, if any (one host sync)."""
    at = int(bad_at.item())
    if at < 0:
        return
    values = dict(zip([*keys, "loss"], bad_values.tolist()))
    if not all(map(math.isfinite, values.values())):
        raise FloatingPointError(f"non-finite loss at epoch {epoch}, iteration {at}: {values}")
    name = next(k for k, v in values.items() if v > bounds.get(k, math.inf))
    raise FloatingPointError(
        f"loss spike at epoch {epoch}, iteration {at}: {name} {values[name]:.3g} > {bounds[name]:.3g}"
    )


@torch.inference_mode()
def predictions(
    model: nn.Module, loader: Iterable, device: torch.device, desc: str = "detect", masks: bool = True
) -> Iterator[tuple[list[int], list[dict]]]:
    """Run the model over this rank's share of ``loader`` (targets carry ``index``, the position in the dataset).

    Yields per batch the dataset indices and their predictions in original pixels
    (:func:`to_original`); ``masks=False`` drops Mask R-CNN's masks on the device.
    """
    model = unwrap(model)  # DDP's forward would sync buffers: ranks run different batch counts here
    model.eval()
    loader = dist.shard_loader(loader)
    steps, seen, started = len(loader), 0, time.monotonic()
    bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=progress_off())
    for step, (images, targets) in enumerate(STOP.batches(bar), 1):
        images, _ = to_device(images, None, device)
        outputs = model(images)
        seen += len(images)
        HEARTBEAT.tick(desc, step, steps, seen, started)
        sizes = [(image.shape[-2:], target["orig_size"]) for image, target in zip(images, targets)]
        yield [int(t["index"]) for t in targets], to_original_batch(outputs, sizes, masks)


def detect(
    model: nn.Module, loader: Iterable, device: torch.device, desc: str = "detect", masks: bool = True
) -> list[dict]:
    """All predictions over ``loader``, in dataset order.

    Under torchrun each rank runs its share of the loader's batches and the outputs are gathered
    on every rank (:mod:`tools.runtime.dist`), so the result is the same as one process's.

    Returns:
        One dict per image: ``boxes`` float32 ``[N, 4]`` xyxy in the pixels of the original image,
        ``labels`` int64, ``scores`` float32, and (with ``masks``) ``masks`` float32 ``[N, H, W]``
        probabilities for Mask R-CNN; all numpy.
    """
    found: dict[int, dict] = {}
    for indices, outputs in predictions(model, loader, device, desc, masks):
        found.update(zip(indices, outputs))
    found = dist.gather_by_index(found)
    return [found[i] for i in sorted(found)]


def progress_off() -> bool | None:
    """tqdm's ``disable``: bars on rank 0 only, and only on a terminal (``None``)."""
    return None if dist.is_main() else True


def to_original(out: dict, size, orig_size, masks: bool = True) -> dict:
    """Predictions (on the model's input image) as numpy in the original image's pixels."""
    return to_original_batch([out], [(size, orig_size)], masks)[0]


def to_original_batch(outputs: list[dict], sizes: list[tuple], masks: bool = True) -> list[dict]:
    """:func:`to_original` for a batch: rescaled on the model's device, then one host copy per key."""
    scaled = []
    for out, (size, orig_size) in zip(outputs, sizes):
        res = {k: v for k, v in out.items() if masks or k != "masks"}
        h, w = (int(v) for v in size)
        oh, ow = (int(v) for v in orig_size)
        res["boxes"] = res["boxes"].float()
        if (h, w) != (oh, ow):  # the dataset transform resized the image
            res["boxes"] = res["boxes"] * torch.tensor(
                [ow / w, oh / h, ow / w, oh / h], device=res["boxes"].device
            )
            if "masks" in res:
                res["masks"] = nn.functional.interpolate(res["masks"].float(), size=(oh, ow), mode="bilinear")
        if "masks" in res:
            res["masks"] = res["masks"][:, 0]
        scaled.append(res)
    if not scaled:
        return []
    counts = [len(res["boxes"]) for res in scaled]
    host = {}
    for key in scaled[0]:
        if key == "masks":  # sizes differ per image: one copy each
            host[key] = [res[key].float().cpu().numpy() for res in scaled]
            continue
        dtype = np.int64 if key == "labels" else np.float32
        flat = torch.cat([res[key] for res in scaled]).cpu().numpy().astype(dtype)
        host[key] = np.split(flat, np.cumsum(counts)[:-1])
    return [{key: host[key][i] for key in host} for i in range(len(scaled))]


def evaluate(model: nn.Module, loader: Iterable, evaluators: list, device: torch.device) -> dict[str, float]:
    """Detect over ``loader``, feeding every evaluator batch by batch; return their merged summaries."""
    records = loader.dataset.records
    for evaluator in evaluators:
        evaluator.reset()
    for indices, outputs in predictions(model, loader, device, desc="eval"):
        batch = [records[i] for i in indices]
        for evaluator in evaluators:
            evaluator.process(batch, outputs, indices)
    results: dict[str, float] = {}
    for evaluator in evaluators:
        results.update(evaluator.summarize())
    return results
