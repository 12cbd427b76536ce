"""tools/engine/checkpoint.py: the file names, plain-data checkpoints written atomically, exact RNG state."""

import hashlib
import os
import random

import numpy as np
import pytest
import torch

from tools.engine.checkpoint import (
    BEST,
    FORMAT,
    LAST,
    MODEL_KEYS,
    CheckpointError,
    RunState,
    best_path,
    checkpoint_of,
    folder_of,
    last_path,
    load_checkpoint,
    read_run,
    read_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
    weights_digest,
)


def test_the_file_names_live_here(tmp_path):
    assert (
        last_path(str(tmp_path))
        == os.path.join(str(tmp_path), "last.pth")
        == os.path.join(str(tmp_path), LAST)
    )
    assert (
        best_path(str(tmp_path))
        == os.path.join(str(tmp_path), "best.pth")
        == os.path.join(str(tmp_path), BEST)
    )
    with pytest.raises(FileNotFoundError, match="no checkpoint; give the output folder"):
        read_run(str(tmp_path))
    save_checkpoint(last_path(str(tmp_path)), {"config": {"K": 4}, "weights": torch.ones(2)})
    assert read_run(str(tmp_path)).config == {"K": 4}  # keys it does not know are left out
    assert not list(tmp_path.glob(".tmp_*"))  # written through a temp file, renamed into place


def test_needed_keys_empty_truncated_and_foreign_files_are_refused(tmp_path):
    path = str(tmp_path / "a.pth")
    save_checkpoint(path, {"model": {}})
    with pytest.raises(CheckpointError, match="no 'optimizer', .*'rng'.*goes to --weights"):
        read_state(path)
    with pytest.raises(CheckpointError, match="no 'config', 'classes', 'label_to_cat_id'.*best.pth"):
        read_state(path, MODEL_KEYS)
    save_checkpoint(path, {"model": {}, "format": FORMAT + 1})
    with pytest.raises(CheckpointError, match=f"newer version of this tool .format {FORMAT + 1}"):
        read_state(path, need=())
    data = open(path, "rb").read()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(str(tmp_path / "cut.pth"))
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(str(tmp_path / "empty.pth"))
    torch.save({"x": random.Random(0)}, tmp_path / "foreign.pth")  # an object, not plain data
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(str(tmp_path / "foreign.pth"))


def test_rng_state_round_trip_repeats_every_generator(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    save_checkpoint(str(tmp_path / "r.pth"), {"rng": rng_state()})
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(str(tmp_path / "r.pth"))["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_a_run_state_round_trips_and_older_checkpoints_take_the_defaults(tmp_path):
    state = RunState(model={"w": torch.ones(2)}, epochs_done=3, config={"K": 4}, awaiting="labelling/round2")
    path = str(tmp_path / "s.pth")
    save_checkpoint(path, state.to_dict())
    back = read_state(path, need=())
    assert (
        back.epochs_done == 3
        and back.awaiting == "labelling/round2"
        and torch.equal(back.model["w"], torch.ones(2))
    )
    save_checkpoint(path, {k: v for k, v in state.to_dict().items() if k not in ("log_lines", "format")})
    old = read_state(path, need=())  # format 1 had neither, nor the key
    assert old.log_lines is None and old.format == 1


def test_older_checkpoints_with_the_last_batch_outcomes_load_without_them(tmp_path):
    """Formats 2 and 3 kept the last batch's detection outcomes (``held_out``, ``last_outcomes``) for
    --certain-precision, which now calibrates on the validation set: they load, and are dropped."""
    outcomes = {"scores": [0.9], "tp": [True], "labels": [1]}
    for fmt, key in ((2, "held_out"), (3, "last_outcomes")):
        path = str(tmp_path / f"f{fmt}.pth")
        save_checkpoint(path, {"model": {"w": torch.ones(1)}, key: outcomes, "epochs_done": 4, "format": fmt})
        state = read_state(path, need=())
        assert state.format == fmt and state.epochs_done == 4 and key not in state.to_dict()


def test_checkpoint_of_a_folder_prefers_best_and_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"a folder without {BEST} or {LAST}; give the output folder"):
        checkpoint_of(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*none.pth"):
        checkpoint_of(str(tmp_path / "none.pth"))
    save_checkpoint(last_path(str(tmp_path)), {})
    assert checkpoint_of(str(tmp_path)) == last_path(str(tmp_path))
    save_checkpoint(best_path(str(tmp_path)), {})
    assert checkpoint_of(str(tmp_path)) == best_path(str(tmp_path))
    assert checkpoint_of(last_path(str(tmp_path))) == last_path(str(tmp_path))  # a file: itself
    assert folder_of(str(tmp_path)) == folder_of(last_path(str(tmp_path))) == str(tmp_path)


def test_best_holds_the_model_and_what_reads_it_and_nothing_to_resume_with():
    state = RunState(
        model={"w": 1}, optimizer={"lr": 1}, config={"K": 3}, classes=["a"], best_ap=0.5, git="abc"
    )
    saved = state.model_dict()
    assert sorted(saved) == sorted([*MODEL_KEYS, "best_ap", "environment", "git", "format"])
    assert (saved["model"], saved["config"], saved["classes"], saved["best_ap"], saved["git"]) == (
        {"w": 1},
        {"K": 3},
        ["a"],
        0.5,
        "abc",
    )


def test_weights_digest_sees_every_weight_name_and_shape_and_unwraps_a_wrapper():
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    b = torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert weights_digest(a) == weights_digest(b)
    wrapped = torch.nn.Module()
    wrapped.module = b
    assert unwrap(wrapped) is b and unwrap(b) is b and weights_digest(wrapped) == weights_digest(a)
    with torch.no_grad():
        b.bias[1] += 1e-6
    assert weights_digest(a) != weights_digest(b)
    reshaped = torch.nn.Linear(2, 3)  # same number of weights, another shape
    with torch.no_grad():
        reshaped.weight.copy_(a.weight.reshape(3, 2)), reshaped.bias.zero_()
    a.bias.data.zero_()
    assert weights_digest(a) != weights_digest(reshaped)
    half = torch.nn.Linear(3, 2).to(torch.bfloat16)
    assert len(weights_digest(half)) == 64  # bfloat16 has no numpy type: read as its bits
    expected = hashlib.sha256()
    for name, t in a.state_dict().items():  # the documented recipe, by hand
        expected.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        expected.update(t.detach().numpy().tobytes())
    assert weights_digest(a) == expected.hexdigest()


def test_every_unreadable_checkpoint_is_named_with_its_cause(tmp_path):
    with pytest.raises(CheckpointError, match=r"^checkpoint not found: .*nowhere.pth$"):
        load_checkpoint(str(tmp_path / "nowhere.pth"))
    (tmp_path / "one.pth").write_bytes(b"x")  # one byte: not empty, so not called empty
    with pytest.raises(CheckpointError, match=r"one.pth: (refused|not a readable checkpoint)"):
        load_checkpoint(str(tmp_path / "one.pth"))
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04" + b"\0" * 40)  # a zip header cut short
    with pytest.raises(
        CheckpointError,
        match=r"cut.pth: not a readable checkpoint: truncated, or not written by torch.save \(\w+: .+\)$",
    ):
        load_checkpoint(str(tmp_path / "cut.pth"))
    torch.save({"x": random.Random(0)}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(str(tmp_path / "foreign.pth"))
    message = str(e.value)
    assert message.startswith(
        f"{tmp_path / 'foreign.pth'}: refused: it holds objects other than plain data, so it"
    )
    reason = message[message.index("(") + 1 : -1]
    assert reason and "\n" not in reason and len(reason) <= 160  # the first line of torch's reason, cut
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(
        CheckpointError, match=r"list.pth: not a checkpoint of this tool \(it holds a list, not a dict\)$"
    ):
        load_checkpoint(str(tmp_path / "list.pth"))
    save_checkpoint(str(tmp_path / "ok.pth"), {"t": torch.ones(2)})
    assert load_checkpoint(str(tmp_path / "ok.pth"), map_location="cpu")["t"].device.type == "cpu"


def test_rng_state_keeps_numpys_cached_normal():
    np.random.seed(3)
    np.random.standard_normal()  # Box-Muller: the second value of the pair is cached (has_gauss)
    saved = rng_state()
    assert saved["numpy"]["has_gauss"] == 1
    expected = np.random.standard_normal(3).tolist()
    np.random.seed(99)  # another state, no cached value
    set_rng_state(saved)
    assert np.random.standard_normal(3).tolist() == expected
