import numpy as np
import pytest
import torch
from torch import nn

from tools.engine.epoch import to_original, train_one_epoch


class _Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, images, targets):
        return {"loss_classifier": self.w * 0 + float("nan"), "loss_box_reg": self.w.sum()}


def test_non_finite_loss_raises_with_the_loss_dict():
    model = _Exploding()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = (
        [torch.zeros(3, 4, 4)],
        [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}],
    )
    with pytest.raises(FloatingPointError, match=r"loss_classifier.*nan.*loss_box_reg"):
        train_one_epoch(model, opt, [batch], torch.device("cpu"), epoch=0)


def test_warmup_ramps_the_learning_rate_then_returns_means():
    model = nn.Linear(1, 1)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, images, targets):
            return {"loss_a": (self.m(torch.ones(1, 1)) ** 2).sum(), "loss_b": torch.tensor(1.0)}

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = ([torch.zeros(3, 2, 2)], [{}])
    out = train_one_epoch(Wrapped(), opt, [batch] * 4, torch.device("cpu"), epoch=0, warmup_iters=2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # warm-up finished
    assert out["loss_b"] == 1.0 and out["loss"] > 1.0 and out["lr"] == pytest.approx(0.1)


def test_predictions_map_backto_original_pixels():
    out = {
        "boxes": torch.tensor([[10.0, 20.0, 30.0, 40.0]]),
        "labels": torch.tensor([2]),
        "scores": torch.tensor([0.9]),
        "masks": torch.ones(1, 1, 50, 100),
    }
    res = to_original(out, (50, 100), torch.tensor([100, 200]))
    np.testing.assert_allclose(res["boxes"], [[20, 40, 60, 80]])
    assert res["masks"].shape == (1, 100, 200) and res["labels"].dtype == np.int64


class _Scripted(nn.Module):
    """A one-weight model whose loss at call k is ``losses[k] * (1 + w^2)`` (NaN/inf/spikes on demand)."""

    def __init__(self, losses):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.losses, self.calls = losses, 0

    def forward(self, images, targets):
        value = self.losses[self.calls]
        self.calls += 1
        return {"loss_a": (value * (1 + self.w**2)).sum()}  # >= value: a spike stays a spike


def _weights_after(losses, bad_at_end=None, **kwargs):
    model = _Scripted(losses)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batch = ([torch.zeros(3, 2, 2)], [{}])
    try:
        train_one_epoch(model, opt, [batch] * len(losses), torch.device("cpu"), epoch=0, **kwargs)
    except FloatingPointError as e:
        return model.w.detach().clone(), str(e)
    return model.w.detach().clone(), None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1000.0])
def test_a_bad_step_never_reaches_the_weights(bad):
    good, error = _weights_after([1.0, 2.0, 3.0])
    assert error is None
    # the bad loss comes last: the weights must be those of the three good steps
    weights, error = _weights_after([1.0, 2.0, 3.0, bad], loss_bound=100.0, check_every=50)
    assert error is not None and "iteration 3" in error
    assert torch.equal(weights, good)


def test_losses_are_read_every_few_iterations_and_the_first_bad_one_is_named():
    weights, error = _weights_after([1.0, float("nan"), 1.0, 1.0, 1.0], check_every=2)
    assert "non-finite loss at epoch 0, iteration 1" in error and "loss_a" in error
    weights, error = _weights_after([1.0, 1.0, 500.0, 1.0], loss_bound=100.0, check_every=3)
    assert "loss spike at epoch 0, iteration 2" in error


class _TwoTerms(nn.Module):
    """Loss terms ``big`` (steady at 100) and ``mask`` (scripted), each times (1 + w^2)."""

    def __init__(self, mask):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.mask, self.calls = mask, 0

    def forward(self, images, targets):
        value = self.mask[self.calls]
        self.calls += 1
        scale = (1 + self.w**2).sum()
        return {"big": 100 * scale, "mask": value * scale}


def test_one_loss_term_that_jumps_is_a_spike_even_when_the_total_is_not():
    from tools.engine.fit import spike_bounds

    bounds = spike_bounds({"big": 20.0, "mask": 11.0, "loss": 31.0, "lr": 0.02})  # the last epoch's means
    assert bounds == pytest.approx({"big": 400.0, "mask": 220.0, "loss": 620.0})
    # a term far below a tenth of the total is bounded by that tenth: it may grow from near zero
    assert spike_bounds({"box": 0.0001, "loss": 1.5})["box"] == pytest.approx(20 * 0.15)
    model = _TwoTerms([6.5, 5.5, 147.5])  # the mask loss x27 its mean; the total far below its bound
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with pytest.raises(FloatingPointError, match="loss spike at epoch 0, iteration 2: mask 295 > 220"):
        train_one_epoch(
            model, opt, [([torch.zeros(3, 2, 2)], [{}])] * 3, torch.device("cpu"), epoch=0, loss_bound=bounds
        )


def test_loss_means_are_exact_without_per_iteration_reads():
    model = _Scripted([1.0, 2.0, 4.0, 8.0, 16.0])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    out = train_one_epoch(
        model, opt, [([torch.zeros(3, 2, 2)], [{}])] * 5, torch.device("cpu"), epoch=0, check_every=2
    )
    assert out["loss_a"] == pytest.approx(62 / 5) and out["loss"] == pytest.approx(62 / 5)  # w stays 1: x2


def test_a_warmup_longer_than_an_epoch_continues_in_the_next_one():
    """5 iterations of warm-up over epochs of 2: the rate of each step, read inside the step, rises as
    torch's LinearLR from 0.001x (0.1 * (0.001 + 0.999 * k / 5)) and then stays at 0.1."""
    model = nn.Linear(1, 1)
    seen = []

    class Recording(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, images, targets):
            return {"loss_a": (self.m(torch.ones(1, 1)) ** 2).sum()}

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    original_step = opt.step

    def step(*a, **k):
        seen.append(opt.param_groups[0]["lr"])
        return original_step(*a, **k)

    opt.step = step
    batch = ([torch.zeros(3, 2, 2)], [{}])
    for epoch in range(4):
        out = train_one_epoch(
            Recording(), opt, [batch] * 2, torch.device("cpu"), epoch, warmup_iters=5, warmup_done=2 * epoch
        )
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1) and out["lr"] == pytest.approx(0.1)
    expected = [0.1 * (0.001 + 0.999 * k / 5) for k in range(5)] + [0.1] * 3
    assert seen == pytest.approx(expected)
