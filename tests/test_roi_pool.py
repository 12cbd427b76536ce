"""net/roi_pool.py: torchvision's multi-level RoIAlign with its CPU kernels run on every thread."""

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

import net.roi_pool as roi_pool
from net.models import build_model
from net.roi_pool import ThreadedMultiScaleRoIAlign


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _inputs():
    g = torch.Generator().manual_seed(0)
    features = {
        str(i): torch.randn(2, 16, 56 >> i, 64 >> i, generator=g, requires_grad=True) for i in range(3)
    }
    boxes = []
    for n in (90, 70):  # per image: small boxes (level 0) and large ones (sides 230-440 px: levels 1, 2)
        xy = torch.rand(2 * n, 2, generator=g) * 60
        wh = torch.cat([8 + torch.rand(n, 2, generator=g) * 90, 230 + torch.rand(n, 2, generator=g) * 210])
        boxes.append(torch.cat([xy, xy + wh], 1))
    return features, boxes, [(448, 512)] * 2


class CountingPool(roi_pool.ThreadPoolExecutor):
    opened = 0

    def __init__(self, *args, **kwargs):
        CountingPool.opened += 1
        super().__init__(*args, **kwargs)


def test_threaded_pooling_equals_torchvisions_forward_and_backward(two_threads, monkeypatch):
    monkeypatch.setattr(roi_pool, "ThreadPoolExecutor", CountingPool)
    features, boxes, shapes = _inputs()
    reference = MultiScaleRoIAlign(["0", "1", "2"], 7, 2)
    threaded = ThreadedMultiScaleRoIAlign(["0", "1", "2"], 7, 2)
    expected, out = reference(features, boxes, shapes), threaded(features, boxes, shapes)
    levels = threaded.map_levels(boxes)
    assert (levels == 0).sum() >= 64 and (levels == 1).sum() >= 64  # two levels pooled in runs
    assert CountingPool.opened >= 1  # the forward ran in threads
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)  # each RoI pooled alone: its values
    grad = torch.randn_like(expected)
    inputs = list(features.values())
    want = torch.autograd.grad(expected, inputs, grad)
    opened = CountingPool.opened
    got = torch.autograd.grad(out, inputs, grad, allow_unused=True, materialize_grads=True)
    assert CountingPool.opened > opened  # and so did the backward
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)  # sums in another order at most


def test_one_thread_or_few_rois_is_torchvisions_own_call(monkeypatch):
    monkeypatch.setattr(roi_pool, "ThreadPoolExecutor", CountingPool)
    CountingPool.opened = 0
    features, boxes, shapes = _inputs()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = ThreadedMultiScaleRoIAlign(["0", "1", "2"], 7, 2)(features, boxes, shapes)
    finally:
        torch.set_num_threads(before)
    assert CountingPool.opened == 0
    assert torch.equal(out, MultiScaleRoIAlign(["0", "1", "2"], 7, 2)(features, boxes, shapes))
    few = [b[::30] for b in boxes]  # under MIN_ROIS_PER_RUN per run: one call per level
    torch.set_num_threads(2)
    try:
        ThreadedMultiScaleRoIAlign(["0", "1", "2"], 7, 2)(features, few, shapes)
    finally:
        torch.set_num_threads(before)
    assert CountingPool.opened == 0


def test_models_pool_with_it_and_keep_their_state_dict():
    model = build_model("maskrcnn_resnet50_fpn", 3, min_size=64)
    assert type(model.roi_heads.box_roi_pool) is ThreadedMultiScaleRoIAlign
    assert type(model.roi_heads.mask_roi_pool) is ThreadedMultiScaleRoIAlign
    assert model.roi_heads.mask_roi_pool.output_size == (14, 14)
    assert not any("roi_pool" in k for k in model.state_dict())


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_threaded_pooling_under_no_grad_and_inference_mode(two_threads, mode):
    features, boxes, shapes = _inputs()
    with mode():  # detection and evaluation: the worker threads must not track what the caller does not
        features = {k: v.detach().clone() for k, v in features.items()}
        out = ThreadedMultiScaleRoIAlign(["0", "1", "2"], 7, 2)(features, boxes, shapes)
        expected = MultiScaleRoIAlign(["0", "1", "2"], 7, 2)(features, boxes, shapes)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert not out.requires_grad


def test_under_cpu_autocast_it_is_torchvisions_own_call(two_threads, monkeypatch):
    monkeypatch.setattr(roi_pool, "ThreadPoolExecutor", CountingPool)
    CountingPool.opened = 0
    features, boxes, shapes = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ThreadedMultiScaleRoIAlign(["0", "1", "2"], 7, 2)(features, boxes, shapes)
        expected = MultiScaleRoIAlign(["0", "1", "2"], 7, 2)(features, boxes, shapes)
    assert CountingPool.opened == 0 and torch.equal(out, expected)
