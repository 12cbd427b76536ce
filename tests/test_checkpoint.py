"""tools/checkpoint.py: the file names, plain-data checkpoints written atomically, exact RNG state."""

import random

import numpy as np
import pytest
import torch

from tools.checkpoint import (
    BEST,
    FORMAT,
    LAST,
    MODEL_KEYS,
    CheckpointError,
    RunState,
    best_path,
    last_path,
    load_checkpoint,
    read_run,
    read_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def test_the_file_names_live_here(tmp_path):
    assert last_path(str(tmp_path)).endswith(LAST) and best_path(str(tmp_path)).endswith(BEST)
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
    save_checkpoint(
        path, {k: v for k, v in state.to_dict().items() if k not in ("last_outcomes", "log_lines", "format")}
    )
    old = read_state(path, need=())  # format 1 had neither, nor the key
    assert old.last_outcomes is None and old.log_lines is None and old.format == 1


def test_a_format_2_checkpoint_reads_its_held_out_as_last_outcomes(tmp_path):
    path = str(tmp_path / "f2.pth")
    outcomes = {"scores": [0.9], "tp": [True], "labels": [1]}
    save_checkpoint(path, {"model": {}, "held_out": outcomes, "format": 2})
    state = read_state(path, need=())
    assert state.last_outcomes == outcomes and state.format == 2
    assert "held_out" not in state.to_dict() and state.to_dict()["last_outcomes"] == outcomes
