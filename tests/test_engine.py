import numpy as np
import pytest
import torch
from torch import nn

from tools.engine import to_original, train_one_epoch


class _Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, images, targets):
        return {"loss_classifier": self.w * 0 + float("nan"), "loss_box_reg": self.w.sum()}


def test_non_finite_loss_raises_with_the_loss_dict():
    model = _Exploding()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = ([torch.zeros(3, 4, 4)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
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
    out = {"boxes": torch.tensor([[10.0, 20.0, 30.0, 40.0]]), "labels": torch.tensor([2]),
           "scores": torch.tensor([0.9]), "masks": torch.ones(1, 1, 50, 100)}
    res = to_original(out, (50, 100), torch.tensor([100, 200]))
    np.testing.assert_allclose(res["boxes"], [[20, 40, 60, 80]])
    assert res["masks"].shape == (1, 100, 200) and res["labels"].dtype == np.int64
