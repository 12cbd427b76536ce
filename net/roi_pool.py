"""RoIAlign over the FPN levels with torchvision's CPU kernels spread over the intra-op threads.

torchvision's CPU ``roi_align`` and its backward run on one thread whatever ``torch.get_num_threads()``
says: on two cores the backward alone was a fifth of a demo training step while the other core
waited. :class:`ThreadedMultiScaleRoIAlign` is torchvision's ``MultiScaleRoIAlign`` (same level
mapping, same kernels, no parameters, so checkpoints are unchanged) that cuts each level's RoIs into
one run per thread and pools the runs side by side; the backward sums each run's input gradient.
Each RoI is pooled alone, so the forward equals the single call exactly; the input gradient equals it
up to the order of the float additions where two runs touch the same feature cell. On another
device, with one thread, under CPU autocast or in TorchScript it is torchvision's module unchanged; with few
RoIs per thread, one call per level.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

MIN_ROIS_PER_RUN = 32  # fewer: one call (threads cost more than they save)


def in_threads(fn, jobs: list, workers: int) -> list:
    """``[fn(job) for job in jobs]`` on up to ``workers`` threads (in order, on this one for 1)."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    with ThreadPoolExecutor(min(workers, len(jobs))) as threads:
        return list(threads.map(fn, jobs))


class _ThreadedRoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, features: Tensor, rois: Tensor, scale: float, size: tuple[int, int], ratio: int, runs: int
    ):
        out = features.new_empty((len(rois), features.shape[1], *size))

        inference = torch.is_inference_mode_enabled()  # grad and inference modes are per thread

        def pool(run: tuple[Tensor, Tensor]) -> None:  # each thread fills its own rows: no joining copy
            r, into = run
            with torch.inference_mode(inference), torch.no_grad():
                into.copy_(
                    torch.ops.torchvision.roi_align(features, r, scale, size[0], size[1], ratio, False)
                )

        in_threads(pool, list(zip(rois.tensor_split(runs), out.tensor_split(runs))), runs)
        ctx.save_for_backward(rois)
        ctx.args = (features.shape, scale, size, ratio, runs)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (rois,) = ctx.saved_tensors
        (batch, channels, height, width), scale, size, ratio, runs = ctx.args

        def run_backward(g: Tensor, r: Tensor) -> Tensor:
            return torch.ops.torchvision._roi_align_backward(
                g.contiguous(), r, scale, size[0], size[1], batch, channels, height, width, ratio, False
            )

        parts = in_threads(
            lambda run: run_backward(*run), list(zip(grad.tensor_split(runs), rois.tensor_split(runs))), runs
        )
        total = parts[0]
        for part in parts[1:]:
            total += part
        return total, None, None, None, None, None


def roi_align_in_runs(
    features: Tensor, rois: Tensor, scale: float, size: tuple[int, int], ratio: int, runs: int
) -> Tensor:
    """``torchvision.ops.roi_align(features, rois, size, scale, ratio)`` (``aligned=False``, as
    ``MultiScaleRoIAlign``) with the RoIs cut into ``runs`` runs pooled on as many threads."""
    runs = max(1, min(runs, len(rois) // MIN_ROIS_PER_RUN))
    if runs == 1:
        return torch.ops.torchvision.roi_align(features, rois, scale, size[0], size[1], ratio, False)
    return _ThreadedRoIAlign.apply(features, rois, scale, size, ratio, runs)


class ThreadedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` whose CPU pooling runs on every intra-op thread."""

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        features = _filter_input(x, self.featmap_names)
        runs = torch.get_num_threads()
        if features[0].device.type != "cpu" or runs < 2 or torch.jit.is_scripting():
            return super().forward(x, boxes, image_shapes)
        if torch.is_autocast_enabled("cpu"):  # torchvision's autocast casts for the op; threads would not
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                features, image_shapes, self.canonical_scale, self.canonical_level
            )
        dtype = features[0].dtype
        rois = _convert_to_roi_format(boxes).to(dtype)
        levels = self.map_levels(boxes) if len(features) > 1 else torch.zeros(len(rois), dtype=torch.int64)
        size = tuple(self.output_size)
        used = levels.unique().tolist()
        if len(used) == 1:  # every box on one level (small objects): its pooling is the output
            return roi_align_in_runs(
                features[used[0]], rois, self.scales[used[0]], size, self.sampling_ratio, runs
            )
        out = rois.new_zeros((len(rois), features[0].shape[1], *size))
        for level in used:
            index = torch.where(levels == level)[0]
            out[index] = roi_align_in_runs(
                features[level], rois[index], self.scales[level], size, self.sampling_ratio, runs
            ).to(dtype)
        return out
