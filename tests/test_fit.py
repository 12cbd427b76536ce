"""tools/engine/fit.py on toy models: the optimizer and schedule from a FitConfig, the rollback of one epoch
(non-finite loss, loss spike, divergence), and the evaluation interval of run_epoch."""

import math
import types

import pytest
import torch
from torch import nn

from tools.engine import fit
from tools.engine.early_stop import APShiftStopper
from tools.engine.fit import (
    MAX_ROLLBACKS,
    SPIKE,
    Diverged,
    FitConfig,
    FitContext,
    Phase,
    climbing,
    make_optimizer,
    make_scheduler,
    run_epoch,
    spike_bounds,
    train_epoch_safely,
)
from tools.runtime.logs import RunLog


class _Toy(nn.Module):
    """One weight; the loss of batch k is ``(w - target_k)^2``, times ``scale`` (``inf``: NaN) while
    ``poison`` holds k: a bad step that only the first ``tries`` passes over the epoch see."""

    def __init__(self, poison=(), scale=float("nan"), tries=1):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.poison, self.scale, self.tries, self.passes, self.k = set(poison), scale, tries, 0, 0

    def forward(self, images, targets):
        target = targets[0]["target"]
        loss = ((self.w - target) ** 2).sum()
        if self.k in self.poison and self.passes < self.tries:
            loss = loss * 0 + self.scale if math.isnan(self.scale) else loss * self.scale
        self.k += 1
        return {"loss_a": loss}


class _Batches:
    """A loader of fixed batches whose ``batch_sampler.set_epoch`` starts a new pass."""

    def __init__(self, model, targets):
        self.model, self.targets = model, targets
        self.batch_sampler = self
        self.dataset = targets

    def set_epoch(self, epoch):
        if self.model.k:  # a retry of the epoch
            self.model.passes += 1
        self.model.k = 0

    def __len__(self):
        return len(self.targets)

    def __iter__(self):
        for t in self.targets:
            yield [torch.zeros(3, 2, 2)], [{"target": torch.tensor([t])}]


def _trainer(model, tmp_path, **config):
    cfg = FitConfig(**{"lr": 0.1, "warmup_iters": 0, "momentum": 0.0, **config})
    return FitContext(model, cfg, torch.device("cpu"), "", None, [], RunLog(str(tmp_path), enabled=False))


TARGETS = [1.0, 2.0, 3.0, 2.0]


def _clean_epoch(lr, tmp_path):
    model = _Toy()
    t = _trainer(model, tmp_path, lr=lr)
    optimizer = make_optimizer(model, t.config)
    train_epoch_safely(t, Phase("p", 0, 1), _Batches(model, TARGETS), optimizer)
    return model.w.detach().clone()


def test_optimizer_and_schedule_follow_the_config():
    model = nn.Linear(2, 1)
    sgd = make_optimizer(model, FitConfig(lr=0.5, momentum=0.7, weight_decay=0.01))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.7
    assert isinstance(make_optimizer(model, FitConfig(opt="adamw")), torch.optim.AdamW)
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        make_optimizer(model, FitConfig(opt="lamb"))
    scheduler = make_scheduler(sgd, FitConfig(lr_steps=(0.5, 0.75), lr_gamma=0.1), epochs=8)
    assert sorted(scheduler.milestones) == [4, 6]
    for _ in range(6):
        sgd.step()
        scheduler.step()
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.5 * 0.01)


def test_spike_bounds_floor_small_terms_at_a_share_of_the_total():
    bounds = spike_bounds({"loss": 2.0, "loss_box": 0.001, "loss_cls": 1.5, "lr": 0.1})
    assert bounds["loss"] == SPIKE * 2.0 and bounds["loss_cls"] == SPIKE * 1.5
    assert bounds["loss_box"] == pytest.approx(SPIKE * 0.2)  # 10% of the total, not 20 x 0.001
    assert "lr" not in bounds and spike_bounds(None) == {}


def test_a_nan_step_rolls_the_epoch_back_and_retries_it_at_half_the_rate(tmp_path):
    model = _Toy(poison={2})
    t = _trainer(model, tmp_path)
    optimizer = make_optimizer(model, t.config)
    phase = Phase("p", 0, 3)
    losses = train_epoch_safely(t, phase, _Batches(model, TARGETS), optimizer)
    assert phase.rollbacks == 1 and math.isfinite(losses["loss"])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # kept for the rest of the phase
    # the retry starts from the epoch's weights: the same as one clean epoch at half the rate
    assert torch.allclose(model.w.detach(), _clean_epoch(0.05, tmp_path))
    assert not torch.allclose(model.w.detach(), _clean_epoch(0.1, tmp_path))


def test_a_spike_against_the_last_epochs_means_is_rolled_back(tmp_path):
    model = _Toy(poison={1}, scale=1000.0)
    t = _trainer(model, tmp_path)
    t.last_losses = {"loss_a": 1.0, "loss": 1.0}  # the previous phase's means bound a round's first epoch
    phase = Phase("round1", 1, 2)
    train_epoch_safely(t, phase, _Batches(model, TARGETS), make_optimizer(model, t.config))
    assert phase.rollbacks == 1
    unbounded = _Toy(poison={1}, scale=1000.0)
    t2 = _trainer(unbounded, tmp_path)
    train_epoch_safely(
        t2, Phase("round1", 1, 2), _Batches(unbounded, TARGETS), make_optimizer(unbounded, t2.config)
    )
    assert not math.isfinite(unbounded.w.item()) or abs(unbounded.w.item()) > 10  # nothing stopped it


def test_divergence_after_every_rollback_is_raised_and_no_nan_reaches_the_weights(tmp_path):
    model = _Toy(poison={0}, tries=MAX_ROLLBACKS + 1)
    t = _trainer(model, tmp_path)
    phase = Phase("p", 0, 3)
    with pytest.raises(Diverged, match=r"p: training diverged 4 times .*--lr or --clip-grad"):
        train_epoch_safely(t, phase, _Batches(model, TARGETS), make_optimizer(model, t.config))
    assert phase.rollbacks == MAX_ROLLBACKS and math.isfinite(model.w.item())  # on disk: the last checkpoint


def test_run_epoch_evaluates_every_interval_and_at_the_phases_end(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(fit, "evaluate", lambda *a: calls.append(1) or {"voc/AP50": 0.5, "voc/AP75": 0.2})
    model = _Toy()
    t = _trainer(model, tmp_path, eval_interval=2)
    optimizer = make_optimizer(model, t.config)
    scheduler = make_scheduler(optimizer, t.config, 5)
    phase = Phase("p", 0, 5)
    loader = _Batches(model, TARGETS)
    stopper = APShiftStopper(4, 0.0)
    while not phase.finished:
        run_epoch(t, phase, loader, stopper, optimizer, scheduler, step=phase.epoch)
    assert [h["evaluated"] for h in phase.history] == [False, True, False, True, True]
    assert len(calls) == 3 and phase.epoch == 5 and phase.done
    assert phase.history[0]["metrics"] == {} and phase.history[2]["metrics"]["voc/AP50"] == 0.5


def test_a_slow_climb_is_caught_on_its_second_rising_epoch():
    """Epoch means 2.03, 2.04 (a rise of 0.5%), then 2.06 and 2.50: no step spikes, yet the loss rose
    twice in a row to 2.50 >= 1.2 x 2.03, above the first epoch's 2.30. Two rises to 2.06 (1.01x), a
    single big rise, and a rise that stays below the phase's start (the demo's pretrain phase: its box
    head's loss grows as the RPN learns) are not a climb."""
    assert climbing([2.03, 2.04], 2.06) is None  # rising, but 1.015 x the lowest
    assert climbing([2.03], 2.90) is None  # one rise only
    assert climbing([2.5, 2.03, 2.9], 2.6) is None  # fell back
    assert climbing([1.62, 0.781, 0.957], 1.066) is None  # 1.36 x the lowest, still below the start
    why = climbing([2.30, 2.03, 2.04], 2.50)
    assert why is not None and "2.040 -> 2.500" in why and "lowest 2.030" in why


class _Climbing(nn.Module):
    """One weight; every batch of epoch ``e`` has the loss ``losses[e] * (1 + w^2)`` while ``w`` stays
    near 0 (its gradient is tiny), so the epoch means follow the script; a retry of an epoch (after a
    rollback) gets ``retry`` instead."""

    def __init__(self, losses, retry):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.losses, self.retry, self.epoch, self.tries, self.k = losses, retry, -1, 0, 0

    def forward(self, images, targets):
        value = self.retry if self.tries > 1 else self.losses[self.epoch]
        return {"loss_a": value * (1 + self.w**2).sum()}


class _EpochBatches(_Batches):
    def set_epoch(self, epoch):
        self.model.tries = self.model.tries + 1 if epoch == self.model.epoch else 1
        self.model.epoch = epoch


def test_a_slow_climb_rolls_the_epoch_back_at_half_the_rate_for_the_rest_of_the_phase(tmp_path, monkeypatch):
    model = _Climbing([2.30, 2.03, 2.04, 2.50, 1.9], retry=2.0)
    t = _trainer(model, tmp_path)
    optimizer = make_optimizer(model, t.config)
    phase = Phase("pretrain", 0, 5)
    loader = _EpochBatches(model, TARGETS)
    scheduler = make_scheduler(optimizer, FitConfig(lr_steps=(2.0,)), 5)  # no decay within the phase
    stopper = APShiftStopper(4, 0.0)
    monkeypatch.setattr(fit, "evaluate", lambda *a: {"voc/AP50": 0.0, "voc/AP75": 0.0})
    while not phase.finished:
        run_epoch(t, phase, loader, stopper, optimizer, scheduler, step=phase.epoch)
    means = [round(h["losses"]["loss"], 3) for h in phase.history]
    assert phase.rollbacks == 1 and means == [2.3, 2.03, 2.04, 2.0, 1.9]  # epoch 3 retried
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # kept after the retry


class _Drifting(_Climbing):
    """:class:`_Climbing` whose weight also drifts by ``lr x drift`` per batch (a ``drift x w`` term),
    so each epoch ends on other weights; ``starts`` records the weight at each try's first batch."""

    def __init__(self, losses, retry, drift=1.0):
        super().__init__(losses, retry)
        self.drift, self.starts, self.last = drift, [], None

    def forward(self, images, targets):
        if (self.epoch, self.tries) != self.last:
            self.starts.append((self.epoch, self.tries, self.w.item()))
            self.last = (self.epoch, self.tries)
        out = super().forward(images, targets)
        return {"loss_a": out["loss_a"] + self.drift * self.w.sum()}


def test_a_slow_climb_restarts_from_the_end_of_the_phases_lowest_epoch(tmp_path, monkeypatch, caplog):
    """Epoch means 2.30, 2.03 (the low), 2.04, 2.50: the climb began after epoch 1, so epoch 3's
    retry starts from the weights epoch 1 ended on (those epoch 2 started from), not epoch 3's start.
    A spike rolls back one epoch only (the epoch's own start)."""
    model = _Drifting([2.30, 2.03, 2.04, 2.50, 1.9], retry=2.0)
    t = _trainer(model, tmp_path)
    optimizer = make_optimizer(model, t.config)
    phase = Phase("pretrain", 0, 5)
    loader = _EpochBatches(model, TARGETS)
    scheduler = make_scheduler(optimizer, FitConfig(lr_steps=(2.0,)), 5)
    monkeypatch.setattr(fit, "evaluate", lambda *a: {"voc/AP50": 0.0, "voc/AP75": 0.0})
    while not phase.finished:
        run_epoch(t, phase, loader, APShiftStopper(4, 0.0), optimizer, scheduler, step=phase.epoch)
    starts = {(e, k): w for e, k, w in model.starts}
    assert phase.rollbacks == 1 and (3, 2) in starts
    assert starts[(2, 1)] != starts[(3, 1)]  # the weights moved during epoch 2
    assert starts[(3, 2)] == starts[(2, 1)]  # the retry began where epoch 2 began: the low's end
    assert "rolled back to the end of epoch 1 (the phase's lowest loss)" in caplog.text
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # half the rate, for the phase


class _Recorded:
    """A log that keeps what it is given: TensorBoard scalars by step, and log.jsonl records."""

    def __init__(self):
        self.scalar_calls, self.records = [], []

    def scalars(self, values, step):
        self.scalar_calls.append((step, values))

    def jsonl(self, record):
        self.records.append(record)


@pytest.mark.parametrize("evaluated", [True, False])
def test_an_epoch_is_logged_with_its_figures_to_the_record_and_tensorboard(tmp_path, evaluated, caplog):
    stopper = APShiftStopper(2, 0.0)
    stopper.history, stopper.ap_shift = [(2, 0.4), (3, 0.5)], 0.0125  # best epoch 3
    phase = Phase("round2", 2, 5, rollbacks=1)
    metrics = {"voc/AP50": 0.5, "voc/AP75": 0.25, "voc/AP50_ci95_lo": 0.41234, "voc/AP50_ci95_hi": 0.6}
    metrics["voc/eval_images"] = 12.0
    losses = {"loss": 1.5, "loss_box": 0.5}
    phase.history.append(
        {"epoch": 4, "metrics": metrics if evaluated else {}, "losses": losses, "evaluated": evaluated}
    )
    t = _trainer(_Toy(), tmp_path)
    t.log = _Recorded()
    with caplog.at_level("INFO", logger="tools.engine.fit"):
        fit.log_epoch(t, phase, stopper, 17, 8, 2.0, evaluated)
    (record,) = t.log.records
    expected = {"type": "epoch", "phase": "round2", "epoch": 4, "images": 8, "losses": losses}
    expected |= (
        {"AP50": 0.5, "AP75": 0.25, "ap50_ci95": [0.4123, 0.6], "eval_images": 12} if evaluated else {}
    )
    expected |= {"AP50": None, "AP75": None} if not evaluated else {}
    expected |= {"ap_shift": 0.0125, "rollbacks": 1, "seconds": 2.0, "stop": evaluated}
    assert record == expected
    train = (17, {"Train/loss": 1.5, "Train/loss_box": 0.5, "Train/rollbacks": 1})
    accuracy = {"Accuracy/AP_50": 0.5, "Accuracy/AP_75": 0.25, "Accuracy/AP_shift": 0.0125}
    accuracy |= {"Accuracy/AP_50_ci95_lo": 0.4123, "Accuracy/AP_50_ci95_hi": 0.6}
    assert t.log.scalar_calls == ([train, (17, accuracy)] if evaluated else [train])
    line = caplog.records[-1].getMessage()
    if evaluated:
        assert (
            line
            == "round2 epoch 4: loss 1.500 AP50 0.500 AP75 0.250 ap_shift 0.0125 (2s); AP settled, best epoch 3"
        )
    else:
        assert line == "round2 epoch 4: loss 1.500 (not evaluated) (2s)"


@pytest.mark.parametrize(
    "metrics, expected",
    [
        ({}, {"ap50_ci95": None, "eval_images": None}),
        ({"voc/AP50_ci95_lo": 0.2, "voc/AP50_ci95_hi": math.nan}, {"ap50_ci95": None, "eval_images": None}),
        ({"voc/AP50_ci95_lo": 0.2}, {"ap50_ci95": None, "eval_images": None}),
        (
            {"voc/AP50_ci95_lo": 0.123456, "voc/AP50_ci95_hi": 0.9, "voc/eval_images": 3.0},
            {"ap50_ci95": [0.1235, 0.9], "eval_images": 3},
        ),
    ],
)
def test_ap50_bounds_are_rounded_or_none(metrics, expected):
    out = fit.ap50_bounds(metrics)
    assert out == expected and type(out["eval_images"]) is type(expected["eval_images"])


@pytest.mark.parametrize(
    "history, loss, climbs",
    [
        ([1.0, 1.1], 1.3, True),  # two rising epochs are enough
        ([1.0], 1.3, False),  # one is not
        ([1.0, 1.2, 1.1], 1.3, False),  # the last two epochs did not both rise
        ([1.0, 1.3], 1.3, False),  # level is not rising
        ([1.0, 1.1], 1.2, True),  # exactly CLIMB times the lowest
        ([1.3, 1.0, 1.1], 1.3, False),  # back where the phase began, not above it
        ([1.0, 1.1], float("inf"), False),  # a non-finite loss is a spike's business
    ],
)
def test_a_slow_climb_at_its_boundaries(history, loss, climbs):
    assert (climbing(history, loss) is not None) is climbs


def test_two_bad_tries_retry_at_a_quarter_of_the_rate_and_halve_the_amp_scale_each(tmp_path):
    model = _Toy(poison={2}, tries=2)  # the first two passes over the epoch hit a NaN
    t = _trainer(model, tmp_path)
    t.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    optimizer = make_optimizer(model, t.config)
    phase = Phase("p", 0, 3)
    train_epoch_safely(t, phase, _Batches(model, TARGETS), optimizer)
    assert phase.rollbacks == 2 and optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.25)
    # each bad step backs the AMP scale off by half (GradScaler's own rule), each rollback halves it again
    assert t.scaler.get_scale() == 1024.0 / 2**4
    assert torch.allclose(model.w.detach(), _clean_epoch(0.025, tmp_path))


def test_the_optimizers_take_every_value_of_the_config_and_fuse_nothing_on_the_cpu():
    model = nn.Linear(2, 1)
    sgd = make_optimizer(model, FitConfig(lr=0.5, momentum=0.7, weight_decay=0.01))
    adamw = make_optimizer(model, FitConfig(opt="adamw", lr=0.002, weight_decay=0.03))
    assert (sgd.defaults["lr"], sgd.defaults["weight_decay"]) == (0.5, 0.01)
    assert (adamw.defaults["lr"], adamw.defaults["weight_decay"]) == (0.002, 0.03)
    assert not sgd.defaults.get("fused") and not adamw.defaults.get("fused")  # fused kernels: CUDA only


def test_the_schedule_steps_at_its_fractions_never_before_the_first_epoch_and_by_gamma():
    sgd = make_optimizer(nn.Linear(2, 1), FitConfig(lr=1.0))
    scheduler = make_scheduler(sgd, FitConfig(lr=1.0, lr_steps=(0.1,), lr_gamma=0.5), epochs=4)
    assert sorted(scheduler.milestones) == [1]  # 0.1 of 4 epochs rounds to 0: the first epoch's end
    sgd.step()
    scheduler.step()
    assert sgd.param_groups[0]["lr"] == 0.5


def test_warmup_and_spike_bounds_by_hand():
    assert fit.warmup_length(100, 2000) == 100 and fit.warmup_length(100, 500) == 50  # a tenth of the phase
    assert fit.warmup_length(100, 5) == 0
    bounds = spike_bounds({"loss": 2.0, "loss_box": 0.0, "loss_cls": 1.0})
    assert bounds == {"loss": SPIKE * 2.0, "loss_cls": SPIKE * 1.0}  # a zero term has no mean to bound
    assert spike_bounds({"loss_cls": 0.01}) == {"loss_cls": SPIKE * 0.01}  # no total: no floor


def test_each_epoch_draws_from_its_own_seed(tmp_path):
    """The augmentation's random draws of an epoch depend on the seed, the phase and the epoch (and
    are repeated exactly on a retry): a model that records torch's first draw of each epoch."""

    class _Draws(_Toy):
        def forward(self, images, targets):
            if self.k == 0:
                self.draws.append(torch.rand(1).item())
            return super().forward(images, targets)

    def first_draw(seed=0, index=0, epoch=0):
        model = _Draws()
        model.draws = []
        t = _trainer(model, tmp_path, seed=seed)
        phase = Phase("p", index, 5, epoch=epoch)
        train_epoch_safely(t, phase, _Batches(model, TARGETS), make_optimizer(model, t.config))
        return model.draws[0]

    base = first_draw()
    assert first_draw() == base
    assert len({base, first_draw(seed=1), first_draw(index=1), first_draw(epoch=1)}) == 4


def test_run_epoch_logs_its_step_its_images_its_seconds_and_its_stop(tmp_path, monkeypatch):
    """run_epoch hands log_epoch the caller's step, the loader's image count, the epoch's seconds
    rounded to hundredths (a clock read 100.0 at the start and 102.345678 after) and the stopper's
    verdict: a window of two evaluations, 0.4 then 0.5, shifts by 0.05 (< 0.1): it stops."""
    reads = iter([100.0])
    monkeypatch.setattr(fit, "time", types.SimpleNamespace(perf_counter=lambda: next(reads, 102.345678)))
    monkeypatch.setattr(fit, "evaluate", lambda *a: {"voc/AP50": 0.5, "voc/AP75": 0.25})
    model = _Toy()
    t = _trainer(model, tmp_path, eval_interval=1)
    t.log = _Recorded()
    optimizer = make_optimizer(model, t.config)
    phase = Phase("p", 0, 5)
    stopper = APShiftStopper(2, 0.1)
    stopper.history = [(0, 0.4)]
    run_epoch(
        t, phase, _Batches(model, TARGETS), stopper, optimizer, make_scheduler(optimizer, t.config, 5), 7
    )
    (record,) = t.log.records
    assert (record["images"], record["seconds"], record["stop"]) == (len(TARGETS), 2.35, True)
    assert [step for step, _ in t.log.scalar_calls] == [7, 7]


def test_an_epoch_is_trained_with_the_phases_warm_up_clip_name_and_seed(tmp_path, monkeypatch):
    """Epoch 3 of a 6-epoch phase over 4 batches: the warm-up spans at most 10% of the phase's 24
    iterations (2 of the 100 asked) and 12 of them are done; the clip and the phase's name are
    passed on; the global generator is seeded from (seed, phase index, epoch, rank 0)."""
    from datasets.torch_data import mix_seed

    seen = {}

    def fake(model, optimizer, loader, device, epoch, **kw):
        seen.update(kw, epoch=epoch, seed=torch.initial_seed())
        return {"loss": 1.0}

    monkeypatch.setattr(fit, "train_one_epoch", fake)
    model = _Toy()
    t = _trainer(model, tmp_path, warmup_iters=100, clip_grad=5.0, seed=7)
    train_epoch_safely(
        t, Phase("round2", 2, 6, epoch=3), _Batches(model, TARGETS), make_optimizer(model, t.config)
    )
    assert (seen["epoch"], seen["warmup_iters"], seen["warmup_done"]) == (3, 2, 12)
    assert (seen["clip_grad"], seen["desc"], seen["seed"]) == (5.0, "round2", mix_seed(7, 2, 3, 0))
