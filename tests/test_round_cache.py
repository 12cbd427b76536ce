"""--round-cache: a round another run trained on the same weights, labels and options is loaded, with
the figures training would have given; any other round trains."""

import logging
import os
import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import plain_state
from tools.engine.checkpoint import load_checkpoint
from tools.loop.config import parse_with_config
from tools.loop.options import OPTION_PRESETS, check_options
from tools.loop.round_cache import SELECTION_ONLY
from tools.runtime.logs import read_jsonl
from train_asm_one import get_args_parser, main

# A tiny deterministic demo run: 2 rounds of 2 epochs each, evaluated every epoch (best.pth can come
# from a round's first epoch).
TINY = [
    *("--demo-train", "20", "--demo-val", "6", "--min-size", "64", "--batch-size", "4"),
    *("--warmup-iters", "2", "--deterministic", "--K", "4", "--initial", "8"),
    *("--epochs", "1", "--round-epochs", "2", "--max-rounds", "2", "--eval-interval", "1"),
]
# v1+ that confirms no box picks what random picks: the same labels every round
NO_SL = ["--certain-thre", "0.99", "--uncertain-thre", "0.98", "--certain-precision", "none"]


def _run(tmp_path, name, *extra):
    out = str(tmp_path / name)
    code = main([*TINY, "--cache-dir", str(tmp_path / "data"), "--output-dir", out, *extra])
    assert code == 0
    return out


def _log(out, kind):
    return [e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == kind]


def _without_seconds(entries):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in entries]


def _state(out, name):
    state = load_checkpoint(os.path.join(out, name))
    return plain_state({k: state[k] for k in ("model", "best_ap") if k in state})


@pytest.mark.slow  # trains: left out of the mutation runs
def test_a_round_another_run_trained_is_loaded_with_the_same_figures(tmp_path, caplog):
    cache = str(tmp_path / "rounds")
    plain = _run(tmp_path, "plain", *NO_SL)  # no cache: the reference
    _run(tmp_path, "random", "--strategy", "random", "--round-cache", cache)
    assert len(os.listdir(cache)) == 2  # its two rounds, stored
    with caplog.at_level(logging.INFO):
        reused = _run(tmp_path, "reused", *NO_SL, "--round-cache", cache)
    assert [e["phase"] for e in _log(reused, "reused")] == ["round1", "round2"]
    assert "its result is reused" in caplog.text
    assert _log(plain, "reused") == []
    # the same rounds, epochs, final weights and best weights as training them here
    assert _without_seconds(_log(reused, "round")) == _without_seconds(_log(plain, "round"))
    assert _without_seconds(_log(reused, "epoch")) == _without_seconds(_log(plain, "epoch"))
    assert _state(reused, "last.pth") == _state(plain, "last.pth")
    assert _state(reused, "best.pth") == _state(plain, "best.pth")
    assert load_checkpoint(os.path.join(reused, "last.pth"))["epochs_done"] == 5
    assert _scalars(reused) == _scalars(plain)  # TensorBoard too


def _scalars(out):
    """Every TensorBoard scalar of a run as (tag, step, value), in order."""
    events = EventAccumulator(os.path.join(out, "tb"))
    events.Reload()
    return [(tag, e.step, e.value) for tag in sorted(events.Tags()["scalars"]) for e in events.Scalars(tag)]


def _from_round0(tmp_path, name, *extra):
    """A run that starts as a copy of one shared initial phase (README, "One initial model, several
    strategies"): the rounds of two such runs start from the same weights whatever their options."""
    r0 = str(tmp_path / "r0")
    if not os.path.isdir(r0):
        _run(tmp_path, "r0", "--max-rounds", "0")
    out = str(tmp_path / name)
    shutil.copytree(r0, out)
    code = main([*TINY, "--cache-dir", str(tmp_path / "data"), "--output-dir", out, "--auto-resume", *extra])
    assert code == 0
    return out


@pytest.mark.slow  # trains: left out of the mutation runs
def test_a_round_with_other_training_options_trains(tmp_path):
    cache = str(tmp_path / "rounds")
    _from_round0(tmp_path, "random", "--strategy", "random", "--round-cache", cache)
    same = _from_round0(tmp_path, "same", *NO_SL, "--round-cache", cache)
    assert len(_log(same, "reused")) == 2
    # another training seed for the rounds: the same start and labels, other batches
    other = _from_round0(tmp_path, "other", *NO_SL, "--round-cache", cache, "--train-seed", "7")
    assert _log(other, "reused") == []
    assert len(os.listdir(cache)) == 4  # random's rounds and the reseeded run's


@pytest.mark.slow  # trains: left out of the mutation runs
def test_a_torn_cache_file_is_trained_again_and_replaced(tmp_path, caplog):
    cache = str(tmp_path / "rounds")
    first = _run(tmp_path, "first", "--strategy", "random", "--round-cache", cache)
    for name in os.listdir(cache):
        with open(os.path.join(cache, name), "wb") as f:
            f.write(b"torn")
    with caplog.at_level(logging.WARNING):
        again = _run(tmp_path, "again", "--strategy", "random", "--round-cache", cache)
    assert _log(again, "reused") == [] and "training the round" in caplog.text
    assert _state(again, "last.pth") == _state(first, "last.pth")
    assert all(os.path.getsize(os.path.join(cache, n)) > 1000 for n in os.listdir(cache))


def test_a_cache_path_that_is_a_file_is_refused(tmp_path, caplog):
    path = tmp_path / "rounds.pth"
    path.write_bytes(b"")
    code = main([*TINY, "--output-dir", str(tmp_path / "out"), "--round-cache", str(path)])
    assert code == 2
    assert f"--round-cache {path} is a file" in caplog.text


def test_selection_options_are_left_out_of_the_key_and_training_options_kept_in():
    options = {a.dest for a in get_args_parser()._actions}
    assert SELECTION_ONLY <= options  # every name is an option of the entry
    for kept in ("lr", "batch_size", "epochs", "round_epochs", "seed", "train_seed", "min_size", "model"):
        assert kept not in SELECTION_ONLY


def _edit_entries(cache, edit):
    for name in os.listdir(cache):
        path = os.path.join(cache, name)
        state = load_checkpoint(path)
        edit(state)
        torch.save(state, path)


def _first_epoch_best(state, best_model):
    """The stored round's first epoch made its best (AP50 0.99), with ``best_model`` as its weights."""
    state["phase"]["history"][0]["metrics"]["voc/AP50"] = 0.99
    state["phase"]["history"][0]["evaluated"] = True
    state["best_model"] = best_model


@pytest.mark.slow  # trains: left out of the mutation runs
def test_a_stored_round_whose_best_epoch_was_not_kept_trains(tmp_path):
    cache = str(tmp_path / "rounds")
    _run(tmp_path, "random", "--strategy", "random", "--round-cache", cache)
    _edit_entries(cache, lambda state: _first_epoch_best(state, None))
    again = _run(tmp_path, "again", *NO_SL, "--round-cache", cache)
    assert _log(again, "reused") == []  # best.pth would need that epoch's weights: trained instead


@pytest.mark.slow  # trains: left out of the mutation runs
def test_a_stored_best_epoch_before_the_last_becomes_best_pth(tmp_path):
    cache = str(tmp_path / "rounds")
    _run(tmp_path, "random", "--strategy", "random", "--round-cache", cache)
    marked = {}

    def mark(state):  # the kept best weights: the end weights, one bias shifted
        weights = dict(state["model"])
        name = next(k for k in weights if k.endswith("bias"))
        weights[name] = weights[name] + 1.0
        marked[state["phase"]["name"]] = (name, weights[name])
        _first_epoch_best(state, weights)

    _edit_entries(cache, mark)
    again = _run(tmp_path, "again", *NO_SL, "--round-cache", cache)
    assert [e["phase"] for e in _log(again, "reused")] == ["round1", "round2"]
    best = load_checkpoint(os.path.join(again, "best.pth"))
    assert best["best_ap"] == 0.99
    name, value = marked["round1"]  # round 1 set the best (0.99); round 2 only equals it
    assert torch.equal(best["model"][name], value)
    assert best["config"]["strategy"] == "v1+"  # this run's options, not the stored run's
    assert load_checkpoint(os.path.join(again, "last.pth"))["best_ap"] == 0.99


def test_the_cache_is_refused_under_torchrun(tmp_path, monkeypatch):
    argv = [*TINY, "--output-dir", str(tmp_path / "out"), "--round-cache", str(tmp_path / "rounds")]
    args = parse_with_config(get_args_parser(), argv, OPTION_PRESETS)
    check_options(args)  # one process: accepted
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="--round-cache works in a single process"):
        check_options(args)


def _reused_after(tmp_path, change):
    """random's rounds stored, ``change(tmp_path)`` applied, then v1+ that confirms no box (the same
    labels): the names of the rounds it loaded."""
    cache = str(tmp_path / "rounds")
    _run(tmp_path, "random", "--strategy", "random", "--round-cache", cache)
    change(tmp_path)
    again = _run(tmp_path, "again", *NO_SL, "--round-cache", cache)
    return [e["phase"] for e in _log(again, "reused")]


@pytest.mark.slow  # trains: left out of the mutation runs
def test_the_control_loads_both_rounds(tmp_path):
    assert _reused_after(tmp_path, lambda _: None) == ["round1", "round2"]


@pytest.mark.slow  # trains: left out of the mutation runs
def test_an_uncommitted_source_edit_trains_again(tmp_path, monkeypatch):
    def edit(_):  # what source_digest gives after an edit (its own test below reads real files)
        monkeypatch.setattr("tools.loop.round_cache.source_digest", lambda: "edited")

    assert _reused_after(tmp_path, edit) == []


def test_the_source_digest_follows_the_files_outside_git(tmp_path, monkeypatch):
    import tools.runtime.process as process

    root = tmp_path / "clone"  # a copy of the sources without .git
    for name in (*process.SOURCE_DIRS, *process.SOURCE_FILES):
        src = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(process.__file__))), name)
        copy = shutil.copytree if os.path.isdir(src) else shutil.copy
        copy(src, root / name)
    monkeypatch.setattr(process, "__file__", str(root / "tools" / "runtime" / "process.py"))
    process.source_digest.cache_clear()
    try:
        before = process.source_digest()
        (root / "asm" / "merge.py").write_text((root / "asm" / "merge.py").read_text() + "\n# edited\n")
        process.source_digest.cache_clear()
        edited = process.source_digest()
        (root / "tools" / "notes.txt").write_text("not a source")
        process.source_digest.cache_clear()
        assert process.source_digest() == edited  # only Python sources count
    finally:
        process.source_digest.cache_clear()
    assert len(before) == 64 and before != edited


@pytest.mark.slow  # trains: left out of the mutation runs
def test_a_replaced_image_trains_again(tmp_path):
    def replace(tmp):  # each image written again under its name: same bytes, a new modification time
        images = sorted((tmp / "data").rglob("*.jpg"))
        assert images
        for path in images:
            path.write_bytes(path.read_bytes())
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    assert _reused_after(tmp_path, replace) == []


@pytest.mark.slow  # trains: left out of the mutation runs
def test_another_library_version_trains_again(tmp_path, monkeypatch):
    import numpy

    assert _reused_after(tmp_path, lambda _: monkeypatch.setattr(numpy, "__version__", "0.0.1")) == []


@pytest.mark.slow  # trains: left out of the mutation runs
def test_a_stored_round_without_a_key_trains_again_with_one_line(tmp_path, caplog):
    def drop(tmp):
        _edit_entries(str(tmp / "rounds"), lambda state: state.pop("scaler"))

    with caplog.at_level(logging.WARNING):
        assert _reused_after(tmp_path, drop) == []
    assert "lacks scaler; training the round" in caplog.text


# -- the key and the stored best epoch, without training (fast: the mutation runs read these) --------
def _keyed(tmp_path):
    """What round_key reads of a run, with a tiny model, two training images and one to evaluate."""
    import dataclasses
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from datasets.records import Record

    @dataclasses.dataclass
    class Fit:
        lr: float = 0.01

    for name in ("a.png", "b.png", "v.png"):  # the same bytes and times each call: only a change counts
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
        os.utime(tmp_path / name, ns=(10**18, 10**18))
    records = [Record(n[0], n, 8, 8, [[1, 1, 5, 5]], [1]) for n in ("a.png", "b.png")]
    val = SimpleNamespace(image_root=str(tmp_path), records=[Record("v", "v.png", 8, 8, [[2, 2, 6, 6]], [1])])
    args = parse_with_config(get_args_parser(), [], OPTION_PRESETS)
    torch.manual_seed(0)
    return SimpleNamespace(
        model=torch.nn.Linear(2, 1),
        train_records=records,
        trainer=SimpleNamespace(
            val_loader=SimpleNamespace(dataset=val), image_root=str(tmp_path), config=Fit(),
            last_losses={"loss": 1.0}, device=torch.device("cpu"),
        ),
        phase=SimpleNamespace(name="round1", index=1, max_epochs=3),
        args=args,
        environment={"cpu": "x"},
    )  # fmt: skip


def test_the_key_follows_everything_training_reads_and_nothing_that_only_selects(tmp_path):
    import dataclasses

    from datasets.records import Record
    from tools.loop.round_cache import round_key

    run = _keyed(tmp_path)
    base = round_key(run)
    assert round_key(run) == base  # a digest, not a draw
    changes = {
        "weights": lambda r: r.model.bias.data.add_(1.0),
        "a record": lambda r: r.train_records.__setitem__(0, Record("a", "a.png", 8, 8, [[1, 1, 6, 5]], [1])),
        "an image replaced": lambda r: (
            (tmp_path / "b.png").write_bytes((tmp_path / "b.png").read_bytes() + b"\0"),
            os.utime(tmp_path / "b.png", ns=(10**18, 10**18)),  # the same time: its size tells
        ),
        "the evaluation": lambda r: r.trainer.val_loader.dataset.records.append(Record("w", "v.png", 8, 8)),
        "an evaluation box": lambda r: r.trainer.val_loader.dataset.records.__setitem__(
            0, Record("v", "v.png", 8, 8, [[2, 2, 7, 6]], [1])
        ),
        "the device": lambda r: setattr(r.trainer, "device", torch.device("cuda")),
        "the phase": lambda r: setattr(r.phase, "max_epochs", 4),
        "the fit values": lambda r: setattr(
            r.trainer, "config", dataclasses.replace(r.trainer.config, lr=0.02)
        ),
        "the last losses": lambda r: r.trainer.last_losses.update(loss=2.0),
        "a training option": lambda r: setattr(r.args, "batch_size", r.args.batch_size + 1),
        "the environment": lambda r: r.environment.update(cpu="y"),
    }
    for what, change in changes.items():
        run = _keyed(tmp_path)
        change(run)
        assert round_key(run) != base, what
    run = _keyed(tmp_path)
    for name in ("certain_thre", "K", "strategy", "output_dir", "max_rounds"):
        assert name in SELECTION_ONLY
    run.args.certain_thre, run.args.K, run.args.max_rounds = 0.5, 7, 3
    assert round_key(run) == base  # selection only: the records a round trains on say it all


@pytest.mark.parametrize(
    "aps, evaluated, before, expected",
    [
        ([0.3, 0.5, 0.4], None, 0.2, (1, 0.5)),  # an earlier epoch is the phase's best and beats the run's
        ([0.3, 0.4, 0.5], None, 0.2, None),  # the last epoch is best: best.pth ends with the last weights
        ([0.3, 0.5, 0.4], None, 0.6, None),  # the run's best before the phase stays best
        ([0.5, 0.5, 0.4], None, 0.2, (0, 0.5)),  # ties: the first epoch with the highest AP
        ([0.9, 0.5, 0.4], [False, True, True], 0.2, (1, 0.5)),  # an epoch not evaluated does not count
        ([0.9], [False], 0.2, None),  # nothing evaluated
        ([0.3, 0.5, 0.4], None, 0.5, None),  # only equal to the run's best before the phase
    ],
)
def test_the_best_epoch_before_the_last_is_found_as_best_pth_saves_it(aps, evaluated, before, expected):
    from types import SimpleNamespace

    from tools.loop.round_cache import _earlier_best

    run = SimpleNamespace(args=SimpleNamespace(ap="ap_50"))
    flags = evaluated or [True] * len(aps)
    history = [{"metrics": {"voc/AP50": a}, "evaluated": e} for a, e in zip(aps, flags)]
    assert _earlier_best(run, history, before) == expected


def test_only_a_round_at_its_first_epoch_is_keyed_and_a_missing_or_torn_file_trains(tmp_path, caplog):
    from types import SimpleNamespace

    from tools.loop.round_cache import RoundCache

    cache = RoundCache(str(tmp_path / "cache"))
    assert cache.path("k") == str(tmp_path / "cache" / "round_k.pth")
    run = _keyed(tmp_path)
    run.trainer.log, run.best_ap = SimpleNamespace(lines=5), 0.4
    for index, epoch, history in ((0, 0, []), (1, 1, []), (1, 0, [{}])):  # the first phase; part-way
        run.phase = SimpleNamespace(name="p", index=index, epoch=epoch, history=history, max_epochs=3)
        assert cache.begin(run) is None
    run.phase = SimpleNamespace(name="round1", index=1, epoch=0, history=[], max_epochs=3)
    key, lines, best = cache.begin(run)
    assert (lines, best) == (5, 0.4) and len(key) == 64
    assert cache.load(run, (key, lines, best)) is False  # nothing stored
    open(cache.path(key), "wb").write(b"not a checkpoint")
    with caplog.at_level(logging.WARNING):
        assert cache.load(run, (key, lines, best)) is False
    assert "training the round" in caplog.text
    torch.save({"model": {}}, cache.path(key))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert cache.load(run, (key, lines, best)) is False
    assert "lacks training, phase" in caplog.text


def test_a_stored_round_is_restored_as_if_this_run_had_trained_it():
    """Run.restore_round, with stand-ins for what it writes into: the weights, the training state,
    the phase's fields, the losses, the log records (epochs counted), the RNG, and best.pth."""
    from types import SimpleNamespace

    from tools.engine.checkpoint import rng_state
    from tools.loop.run import Run

    class Log:
        def __init__(self):
            self.records, self.scalars_seen = [], []

        def jsonl(self, record):
            self.records.append(record)

        def scalars(self, values, step):
            self.scalars_seen.append(step)

    torch.manual_seed(5)
    rng = rng_state()
    expected = torch.rand(3)
    loaded, saved = [], []
    run = Run.__new__(Run)
    run.model = torch.nn.Linear(2, 1)
    run.training = SimpleNamespace(
        load_state_dict=loaded.append, phase=SimpleNamespace(name="round1", epoch=0)
    )
    run.trainer = SimpleNamespace(last_losses=None, scaler=None, log=Log())
    run.epochs_done = 4
    run.save = lambda earlier=None: saved.append(earlier)
    weights = {"weight": torch.full((1, 2), 3.0), "bias": torch.full((1,), -1.0)}
    epoch = {"type": "epoch", "losses": {"loss": 1.0}, "rollbacks": 0, "AP50": None}
    stored = {
        "model": weights,
        "training": {"optimizer": "o"},
        "phase": {"epoch": 2, "done": True},
        "last_losses": {"loss": 0.5},
        "scaler": None,
        "log": [epoch, {"type": "note"}, epoch],
        "rng": rng,
        "source": "/elsewhere/run",
        "best_model": {"w": 1},
    }
    torch.manual_seed(99)  # restoring puts the stored generator back
    run.restore_round(stored, (1, 0.7))
    assert torch.equal(run.model.weight, weights["weight"]) and torch.equal(run.model.bias, weights["bias"])
    assert loaded == [{"optimizer": "o"}] and (run.phase.epoch, run.phase.done) == (2, True)
    assert run.trainer.last_losses == {"loss": 0.5} and run.epochs_done == 6
    assert run.trainer.log.scalars_seen == [5, 6]  # each epoch at its own step
    assert run.trainer.log.records[-1] == {"type": "reused", "phase": "round1", "source": "/elsewhere/run"}
    assert torch.equal(torch.rand(3), expected)
    assert saved == [({"w": 1}, 0.7)]
    run.restore_round({**stored, "log": []}, None)
    assert saved[-1] is None  # best.pth follows the last epoch: nothing earlier to write


def test_history_written_before_epochs_were_marked_counts_every_epoch_as_evaluated():
    from types import SimpleNamespace

    from tools.loop.round_cache import _earlier_best

    run = SimpleNamespace(args=SimpleNamespace(ap="ap_50"))
    history = [{"metrics": {"voc/AP50": a}} for a in (0.3, 0.6, 0.4)]  # no "evaluated" key
    assert _earlier_best(run, history, 0.1) == (1, 0.6)


def test_the_digest_ignores_key_order_and_reads_values_json_cannot(tmp_path):
    import pathlib

    from tools.loop.round_cache import RoundCache, _digest

    assert _digest({"a": 1, "b": [2, 3]}) == _digest({"b": [2, 3], "a": 1})
    assert _digest({"p": pathlib.Path("x")}) == _digest({"p": "x"}) != _digest({"p": "y"})
    RoundCache(str(tmp_path / "rounds"))
    RoundCache(str(tmp_path / "rounds"))  # a folder that exists is the cache of an earlier run
