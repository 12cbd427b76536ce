"""tools/loop/run_dir.py: one run per folder, --overwrite clears what a run wrote, stale locks are taken over."""

import os

import pytest

from tools.engine.checkpoint import LAST
from tools.loop import run_dir


def test_a_folder_holding_a_run_is_refused_unless_resumed_or_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in (LAST, "log.jsonl"):
        (out / name).write_text("x")
    (out / "splits").mkdir()
    (out / "splits" / "train.txt").write_text("a\n")
    (out / "mine.txt").write_text("the user's own file")
    with pytest.raises(run_dir.OutputDirError, match="holds another run .*pass --resume to continue it"):
        with run_dir.claim(str(out), resume=False, overwrite=False):
            pass
    with run_dir.claim(str(out), resume=True, overwrite=False):
        assert (out / ".lock").exists()
    assert not (out / ".lock").exists() and (out / LAST).exists()
    with run_dir.claim(str(out), resume=False, overwrite=True):
        pass
    assert sorted(os.listdir(out)) == ["mine.txt"]  # the run's files and its splits/ went, nothing else


def test_a_run_without_a_checkpoint_starts_again_and_a_refused_run_leaves_no_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text("x")  # stopped before its first checkpoint
    with run_dir.claim(str(out), resume=False, overwrite=False):
        assert not (out / "log.jsonl").exists()
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        with run_dir.claim(str(fresh), resume=False, overwrite=False):
            raise RuntimeError("the data did not load")
    assert not fresh.exists()


@pytest.mark.parametrize("content", ["", "not a lock", f"{os.uname().nodename} 4194000"])
def test_empty_unreadable_or_dead_locks_are_stale(tmp_path, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(content)
    with run_dir.claim(str(out), resume=False, overwrite=False):
        assert (out / ".lock").read_text() != content


def test_a_lock_of_another_machine_is_respected(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("another-host 123")  # a shared disk: that process may be alive
    with pytest.raises(run_dir.OutputDirError, match="in use by process 123 on another-host"):
        with run_dir.claim(str(out), resume=False, overwrite=False):
            pass
