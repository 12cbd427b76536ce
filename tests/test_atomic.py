"""datasets/atomic.py: a reader sees the old file or the new one, never half."""

import os
import stat

import pytest

from datasets.atomic import atomic_open, atomic_write_text


def test_a_write_that_fails_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write_text(path, "old")  # the folder is made
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and not list(path.parent.glob(".tmp_*"))
    with atomic_open(path, "wb") as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and not list(path.parent.glob(".tmp_*"))


def test_a_new_file_gets_the_umask_mode_and_a_replaced_one_keeps_its_own(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "new.json", "{}")
        assert (
            stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == 0o640
        )  # 0666 & ~027, not mkstemp's 0600
    finally:
        os.umask(old)
    os.chmod(tmp_path / "new.json", 0o604)
    atomic_write_text(tmp_path / "new.json", "[]")
    assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == 0o604
