"""Training entry: resume equivalence, logs, checkpoints (whether training learns: bench/bench_learns.py)."""

import contextlib
import io
import json
import os

import pytest
import torch

from tools.engine.checkpoint import load_checkpoint
from tools.runtime.logs import read_jsonl
from train_asm_one import main

TINY = [
    "--demo-train",
    "16",
    "--demo-val",
    "8",
    "--min-size",
    "64",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--warmup-iters",
    "2",
    "--deterministic",
    "--strategy",
    "none",
    "--ap-range",
    "10",
]


def _run(tmp_path, name, *extra):
    out = str(tmp_path / name)
    code = main([*TINY, "--cache-dir", str(tmp_path / "cache"), "--output-dir", out, *extra])
    return code, out


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """A 3-epoch supervised run that several tests compare against (read, never written): its output
    folder and what it printed."""
    root, printed = tmp_path_factory.mktemp("clean"), io.StringIO()
    with contextlib.redirect_stdout(printed):
        code, out = _run(root, "clean", "--epochs", "3")
    assert code == 0
    return out, printed.getvalue()


def _epochs(out):
    """The epoch lines of a run's log.jsonl (a supervised run ends with its learning-curve point)."""
    return [e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "epoch"]


def test_resume_is_exact(tmp_path, clean_run):
    full, _ = clean_run
    code, part = _run(tmp_path, "part", "--epochs", "3", "--exit-after-epochs", "1")
    assert code == 3 and load_checkpoint(os.path.join(part, "last.pth"))["phase"]["epoch"] == 1
    code, _ = _run(tmp_path, "part", "--epochs", "3", "--resume", os.path.join(part, "last.pth"))
    assert code == 0
    a, b = _epochs(full), _epochs(part)
    assert [e["epoch"] for e in b] == [0, 1, 2]
    assert [e["losses"] for e in a] == [e["losses"] for e in b]
    assert [e["AP50"] for e in a] == [e["AP50"] for e in b]
    wa = load_checkpoint(os.path.join(full, "last.pth"))
    wb = load_checkpoint(os.path.join(part, "last.pth"))
    for k in wa["model"]:
        assert torch.equal(wa["model"][k], wb["model"][k]), k
    assert wa["optimizer"]["param_groups"][0]["lr"] == wb["optimizer"]["param_groups"][0]["lr"]
    assert torch.equal(wa["rng"]["torch"], wb["rng"]["torch"])
    assert wa["phase"]["epoch"] == 3 and wa["config"]["epochs"] == 3 and "git" in wa


def test_resume_and_weights_never_mix(tmp_path, caplog):
    code, _ = _run(tmp_path, "x", "--resume", "a.pth", "--weights", "b.pth")
    assert code == 2 and "do not combine" in caplog.text


def test_outputs_logs_and_tensorboard(clean_run):
    out, printed = clean_run
    summary = json.loads(printed.strip().splitlines()[-1])
    assert {"rounds", "ap50", "human_drawn_boxes", "wall_s"} <= set(summary)
    assert os.path.isfile(os.path.join(out, "best.pth")) and os.path.isfile(os.path.join(out, "last.pth"))
    assert os.listdir(os.path.join(out, "tb"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(out, "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"Train/loss", "Train/lr", "Accuracy/AP_50", "Accuracy/AP_75"} <= tags
    assert not [f for f in os.listdir(out) if f.startswith(".tmp_")]


def test_best_pth_holds_the_model_alone_and_a_run_resumes_from_last(clean_run, tmp_path, caplog):
    out, _ = clean_run
    best, last = (load_checkpoint(os.path.join(out, n)) for n in ("best.pth", "last.pth"))
    assert set(best) == {
        "config",
        "classes",
        "model",
        "label_to_cat_id",
        "best_ap",
        "environment",
        "git",
        "format",
    }
    assert best["model"].keys() == last["model"].keys() and "optimizer" in last
    assert os.path.getsize(os.path.join(out, "best.pth")) < 0.75 * os.path.getsize(
        os.path.join(out, "last.pth")
    )
    code = main([*TINY, "--cache-dir", str(tmp_path / "cache"), "--resume", os.path.join(out, "best.pth")])
    assert code == 2 and "a weights-only file goes to --weights, not --resume" in caplog.text


def _poison_epochs(monkeypatch, bad_calls):
    """Make chosen calls of train_one_epoch start from NaN weights: the real loss check must fire."""
    import tools.engine.fit

    real, calls = tools.engine.fit.train_one_epoch, []

    def poisoned(model, *args, **kwargs):
        calls.append(kwargs.get("loss_bound"))
        if len(calls) in bad_calls:
            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(tools.engine.fit, "train_one_epoch", poisoned)
    return calls


def test_a_non_finite_loss_rolls_back_and_the_run_finishes(tmp_path, monkeypatch, clean_run):
    clean, _ = clean_run
    calls = _poison_epochs(monkeypatch, bad_calls={2})  # epoch 1, first try
    code, out = _run(tmp_path, "nan", "--epochs", "3")
    assert code == 0 and len(calls) == 4  # epoch 1 ran twice
    log, ref = _epochs(out), _epochs(clean)
    assert [e["rollbacks"] for e in log] == [0, 1, 1]
    assert log[0]["losses"] == ref[0]["losses"]  # the epoch before is untouched
    assert log[1]["losses"]["lr"] == pytest.approx(ref[1]["losses"]["lr"] * 0.5)  # retried at half the LR
    ckpt = load_checkpoint(os.path.join(out, "last.pth"))
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    # spike bounds from the epoch before, for the total and for each loss term
    assert calls[1]["loss"] > 0 and calls[1]["loss_classifier"] > 0 and "lr" not in calls[1]


def test_training_that_keeps_diverging_stops_cleanly(tmp_path, monkeypatch, caplog):
    _poison_epochs(monkeypatch, bad_calls={2, 3, 4, 5})
    code, out = _run(tmp_path, "diverge", "--epochs", "3")
    assert code == 5
    assert "diverged 4 times" in caplog.text and "lower --lr" in caplog.text
    ckpt = load_checkpoint(os.path.join(out, "last.pth"))
    assert ckpt["phase"]["epoch"] == 1  # the last good state: after epoch 0
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_eval_interval_evaluates_every_e_epochs_and_at_the_end(tmp_path):
    code, out = _run(tmp_path, "interval", "--epochs", "3", "--eval-interval", "2")
    assert code == 0
    log = _epochs(out)
    assert [e["AP50"] is not None for e in log] == [False, True, True]  # epoch 1, then the phase's last
    ckpt = load_checkpoint(os.path.join(out, "last.pth"))
    assert [h["evaluated"] for h in ckpt["phase"]["history"]] == [False, True, True]
    assert [e for e, _ in ckpt["early_stop"]["history"]] == [1, 2]  # AP-shift sees evaluated epochs only
