"""tools.loop.run.Run over a one-weight model: what a checkpoint holds and gives back, what it refuses,
when best.pth is written, and a phase trained to its end. No detector, a second or less each.

The model's loss is ``(w - 1)^2``, so its weight after an epoch is known by hand; the evaluation
answers a scripted AP per call, so which epoch is the best is known too."""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from asm.pools import ASMState
from datasets.records import Record
from tools.engine import fit
from tools.engine.checkpoint import CheckpointError, RunState, load_checkpoint
from tools.engine.fit import FitContext, Phase
from tools.loop.config import parse_with_config
from tools.loop.options import OPTION_PRESETS, fit_config
from tools.loop.run import Run
from tools.runtime.logs import RunLog, read_jsonl
from tools.runtime.stop import Interrupted
from train_asm_one import get_args_parser


class _One(nn.Module):
    """One weight; the loss of every batch is ``(w - 1)^2`` (its gradient ``2 (w - 1)``)."""

    def __init__(self, width=1):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(width))
        self.batches = 0

    def forward(self, images, targets=None):
        assert len(images) == len(targets) and all(t["boxes"].shape[-1] == 4 for t in targets)
        self.batches += 1
        return {"loss_a": ((self.w - 1) ** 2).sum()}


def _records(root, n=4):
    for i in range(n):
        Image.fromarray(np.full((32, 32, 3), 10 * i, np.uint8)).save(root / f"{i}.png")
    return [Record(str(i), f"{i}.png", 32, 32, [[2, 2, 20, 20]], [1]) for i in range(n)]


def _run(tmp_path, *argv, width=1, name="out", scale=None):
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    args = parse_with_config(get_args_parser(), ["--output-dir", str(out), *argv], OPTION_PRESETS)
    args.lr, args.warmup_iters, args.momentum, args.weight_decay, args.batch_size = 0.25, 0, 0.0, 0.0, 2
    args.workers, args.lr_steps = 0, []  # workers: settled by the entry otherwise; one rate a phase
    model = _One(width)
    trainer = FitContext(
        model, fit_config(args), torch.device("cpu"), str(tmp_path), "val", [], RunLog(str(out))
    )
    if scale is not None:  # an AMP scaler (on the CPU here): saved, restored, reused with the rest
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    train_set = SimpleNamespace(classes=("a",), label_to_cat_id={1: 7})
    run = Run(args, model, trainer, train_set, {"git": "abc"})
    return run


@pytest.fixture
def scripted_ap(monkeypatch):
    """The evaluation answers AP50 from ``aps`` in turn."""
    aps = []

    def evaluate(model, loader, evaluators, device):
        assert isinstance(model, _One) and loader == "val" and evaluators == [] and device.type == "cpu"
        return {"voc/AP50": aps.pop(0), "voc/AP75": 0.0}

    monkeypatch.setattr(fit, "evaluate", evaluate)
    return aps


def test_a_new_run_starts_its_first_phase_from_the_options(tmp_path):
    run = _run(tmp_path, "--epochs", "3", "--ap-shift-pretrain", "0.07")
    assert (run.phase.name, run.phase.index, run.phase.max_epochs, run.phase.epoch) == ("pretrain", 0, 3, 0)
    assert run.training.stopper.threshold == 0.07
    assert run.classes == ["a"] and run.label_to_cat_id == {"1": 7}
    assert run.best_ap == -1.0 and run.epochs_done == 0 and run.round_cache is None
    state = run.state()  # what a checkpoint of it holds for inference and the tools
    assert state.label_to_cat_id == {"1": 7} and state.environment == {"git": "abc"}
    supervised = _run(tmp_path, "--strategy", "none", "--epochs", "2", name="sup")
    assert (supervised.phase.name, supervised.phase.max_epochs) == ("supervised", 2)
    cached = _run(tmp_path, "--round-cache", str(tmp_path / "rounds"), name="cached")
    assert cached.round_cache is not None and cached.round_cache.folder == str(tmp_path / "rounds")


def test_a_phase_trains_to_its_end_with_a_checkpoint_after_every_epoch(tmp_path, scripted_ap):
    run = _run(tmp_path, "--epochs", "3", "--eval-interval", "1")
    run.train_records = _records(tmp_path)
    scripted_ap[:] = [0.2, 0.5, 0.4]
    steps = []
    real = run.trainer.log.scalars
    run.trainer.log.scalars = lambda values, step: steps.append(step) or real(values, step)
    metrics = run.train_phase()
    assert metrics["voc/AP50"] == 0.4 and run.phase.finished and run.epochs_done == 3
    assert steps == [1, 1, 2, 2, 3, 3]  # TensorBoard: losses then AP at the run's epoch count, from 1
    # plain gradient descent on (w - 1)^2 at lr 0.25: w <- w + 0.5 (1 - w), two batches an epoch
    assert run.model.w.item() == pytest.approx(1 - 0.5**6) and run.model.batches == 6
    out = run.args.output_dir
    last, best = (
        load_checkpoint(os.path.join(out, "last.pth")),
        load_checkpoint(os.path.join(out, "best.pth")),
    )
    assert last["epochs_done"] == 3 and last["best_ap"] == 0.5 and best["best_ap"] == 0.5
    assert best["model"]["w"].item() == pytest.approx(1 - 0.5**4)  # the second epoch's weights
    assert [e["epoch"] for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "epoch"] == [
        0,
        1,
        2,
    ]


def test_best_is_written_only_on_a_better_evaluated_epoch(tmp_path, scripted_ap):
    run = _run(tmp_path, "--epochs", "4", "--eval-interval", "2")
    run.train_records = _records(tmp_path)
    scripted_ap[:] = [0.3, 0.3]  # epochs 2 and 4; the second only equals the first
    run.train_phase()
    best = load_checkpoint(os.path.join(run.args.output_dir, "best.pth"))
    assert best["model"]["w"].item() == pytest.approx(1 - 0.5**4)  # epoch 2's, not epoch 4's
    assert run.best_ap == 0.3


def test_exit_after_epochs_stops_after_the_checkpoint(tmp_path, scripted_ap):
    run = _run(tmp_path, "--epochs", "3", "--exit-after-epochs", "2", "--eval-interval", "1")
    run.train_records = _records(tmp_path)
    scripted_ap[:] = [0.1, 0.2, 0.3]
    with pytest.raises(Interrupted, match="stopped after 2 epochs"):
        run.train_phase()
    assert load_checkpoint(os.path.join(run.args.output_dir, "last.pth"))["epochs_done"] == 2


def test_a_state_loads_back_into_a_new_run(tmp_path, scripted_ap):
    run = _run(tmp_path, "--epochs", "3", "--eval-interval", "1", "--K", "2", scale=512.0)
    records = _records(tmp_path)
    run.asm = ASMState.start("v1+", 2, records, initial=[0, 1], seed=0)
    run.train_records = records[:2]
    scripted_ap[:] = [0.2]
    run.args.exit_after_epochs = 1
    with pytest.raises(Interrupted):
        run.train_phase()
    run.awaiting = "labelling/round1"
    saved = run.state()
    assert isinstance(saved, RunState) and saved.git == "abc" and saved.classes == ["a"]

    again = _run(tmp_path, "--epochs", "3", "--eval-interval", "1", "--K", "2", name="again", scale=4.0)
    torch.manual_seed(123)  # the saved generator state replaces it
    again.load_state(RunState.from_dict(saved.to_dict()))
    assert again.model.w.item() == run.model.w.item() != 0
    assert (again.phase.name, again.phase.epoch, again.phase.max_epochs) == ("pretrain", 1, 3)
    assert again.phase.history == run.phase.history
    assert again.epochs_done == 1 and again.best_ap == 0.2 and again.awaiting == "labelling/round1"
    assert again.trainer.scaler.get_scale() == 512.0
    assert [r.image_id for r in again.train_records] == ["0", "1"]
    assert again.asm.digest() == run.asm.digest()
    assert (
        again.training.optimizer.state_dict()["param_groups"]
        == run.training.optimizer.state_dict()["param_groups"]
    )
    assert again.training.scheduler.state_dict() == run.training.scheduler.state_dict()
    assert torch.equal(torch.get_rng_state(), saved.rng["torch"])
    scripted_ap[:] = [0.6, 0.1, 0.6, 0.1]  # both go on alike
    run.args.exit_after_epochs = again.args.exit_after_epochs = None
    run.train_phase(), again.train_phase()
    assert again.model.w.item() == run.model.w.item() and again.best_ap == run.best_ap == 0.6


def test_a_resume_applies_this_commands_round_rules(tmp_path):
    run = _run(tmp_path, "--K", "2")
    run.asm = ASMState.start("v1+", 2, _records(tmp_path), initial=[0], seed=0)
    saved = RunState.from_dict(run.state().to_dict())
    again = _run(tmp_path, "--K", "3", "--strategy", "topk_v2", name="again")
    again.load_state(saved)
    assert (again.asm.strategy, again.asm.K) == ("topk_v2", 3)


@pytest.mark.parametrize(
    "argv, edit, message",
    [
        (
            ["--strategy", "none"],
            lambda s: None,
            "made with --strategy v1+, this command says --strategy none",
        ),
        (
            [],
            lambda s: setattr(s, "classes", ["a", "b"]),
            "made for the classes ['a', 'b'], this run has ['a']",
        ),
        (
            [],
            lambda s: s.model.update(w=torch.zeros(2)),
            "made for another model or class count than --model",
        ),
        (
            [],
            lambda s: s.optimizer["param_groups"].append(dict(s.optimizer["param_groups"][0])),
            "its optimizer state does not fit --opt sgd",
        ),
    ],
)
def test_checkpoints_of_another_setup_are_refused_with_the_path(tmp_path, argv, edit, message):
    saved = RunState.from_dict(_run(tmp_path).state().to_dict())
    edit(saved)
    with pytest.raises(CheckpointError, match="^my.pth: ") as e:
        _run(tmp_path, *argv, name="again").load_state(saved, "my.pth")
    assert message in str(e.value)


def test_a_supervised_checkpoint_resumes_a_supervised_run(tmp_path):
    saved = RunState.from_dict(_run(tmp_path, "--strategy", "none").state().to_dict())
    again = _run(tmp_path, "--strategy", "none", name="again")
    again.load_state(saved)
    assert again.phase.name == "supervised" and again.asm is None


def test_log_records_written_after_the_checkpoint_are_dropped_on_load(tmp_path):
    run = _run(tmp_path)
    run.trainer.log.jsonl({"type": "epoch", "epoch": 0})
    saved = RunState.from_dict(run.state().to_dict())
    run.trainer.log.jsonl({"type": "epoch", "epoch": 1, "stale": True})  # after the save
    again = _run(tmp_path)  # the same folder
    again.load_state(saved)
    assert [e["epoch"] for e in read_jsonl(os.path.join(run.args.output_dir, "log.jsonl"))] == [0]


def test_an_earlier_best_becomes_best_pth(tmp_path):
    run = _run(tmp_path)
    run.best_ap = 0.9
    run.save((({"w": torch.tensor([0.5])}), 0.4))  # a cached round's best epoch, below the run's best
    best = load_checkpoint(os.path.join(run.args.output_dir, "best.pth"))
    assert best["model"]["w"].item() == 0.5 and best["best_ap"] == 0.4 and run.best_ap == 0.4
    assert load_checkpoint(os.path.join(run.args.output_dir, "last.pth"))["best_ap"] == 0.4


def test_a_phase_without_evaluation_writes_no_best(tmp_path):
    run = _run(tmp_path)
    run.phase.history.append({"epoch": 0, "metrics": {"voc/AP50": 0.9}, "evaluated": False})
    run.save()
    assert not os.path.exists(os.path.join(run.args.output_dir, "best.pth"))
    assert os.path.exists(os.path.join(run.args.output_dir, "last.pth")) and run.best_ap == -1.0


def test_new_phase_restarts_the_optimizer_and_the_stopper(tmp_path):
    run = _run(tmp_path)
    old = run.training
    run.new_phase(Phase("round1", 1, 5), 0.03)
    assert run.training is not old and run.phase.name == "round1" and run.training.stopper.threshold == 0.03
    assert run.training.scheduler.state_dict()["last_epoch"] == 0


def test_a_round_stored_by_one_run_is_restored_in_the_next_as_if_it_had_trained(
    tmp_path, scripted_ap, monkeypatch
):
    cache = tmp_path / "rounds"
    records = _records(tmp_path)

    def round_run(name, scale=1024.0):
        run = _run(
            tmp_path,
            "--epochs",
            "3",
            "--eval-interval",
            "1",
            "--round-cache",
            str(cache),
            name=name,
            scale=scale,
        )
        val = SimpleNamespace(image_root=str(tmp_path), records=records[:1])
        run.trainer.val_loader = SimpleNamespace(dataset=val)  # what the round's key reads of it
        fit_evaluate = fit.evaluate
        monkeypatch.setattr(fit, "evaluate", lambda m, loader, e, d: fit_evaluate(m, "val", e, d))
        run.train_records, run.best_ap = records, 0.1
        run.new_phase(Phase("round1", 1, 3), 0.0)
        return run

    first = round_run("first")
    scripted_ap[:] = [0.2, 0.7, 0.4]  # the round's best epoch is its second, before its last
    first.train_phase()
    (stored,) = cache.iterdir()
    second = round_run("second", scale=8.0)  # another AMP scale: the stored one replaces it
    assert second.train_phase()["voc/AP50"] == 0.4 and second.model.batches == 0  # nothing trained
    assert second.model.w.item() == first.model.w.item() == pytest.approx(1 - 0.5**6)
    assert second.phase.history == first.phase.history and second.phase.finished
    assert second.epochs_done == 3 and second.best_ap == 0.7
    assert second.training.scheduler.state_dict() == first.training.scheduler.state_dict()
    assert second.trainer.scaler.get_scale() == first.trainer.scaler.get_scale() == 1024.0
    assert torch.equal(torch.get_rng_state(), load_checkpoint(str(stored))["rng"]["torch"])
    out = second.args.output_dir
    best = load_checkpoint(os.path.join(out, "best.pth"))
    assert best["best_ap"] == 0.7 and best["model"]["w"].item() == pytest.approx(1 - 0.5**4)  # epoch 2's
    assert load_checkpoint(os.path.join(out, "last.pth"))["epochs_done"] == 3
    log = read_jsonl(os.path.join(out, "log.jsonl"))
    assert [e["epoch"] for e in log if e["type"] == "epoch"] == [0, 1, 2]
    assert [(e["phase"], e["source"]) for e in log if e["type"] == "reused"] == [
        ("round1", first.args.output_dir)
    ]
    # a round resumed part-way is neither reused nor stored
    third = round_run("third")
    third.phase.epoch = 1
    assert third.round_cache.begin(third) is None
