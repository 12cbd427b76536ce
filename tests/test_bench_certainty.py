"""bench/bench_certainty.py: what it refuses before loading any model."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location(
    "bench_certainty", os.path.join(ROOT, "bench", "bench_certainty.py")
)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("value", ["1.0", "0", "1.5", "nan"])
def test_a_precision_a_lower_bound_cannot_reach_is_refused(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        bench.main([str(tmp_path), "--precision", value])
    assert exit_.value.code == 2
    assert (
        f"--precision must be in (0, 1) (a lower bound never reaches 1), got {float(value)}"
        in capsys.readouterr().err
    )


def test_a_folder_without_a_checkpoint_is_named_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        bench.main([str(tmp_path / "empty"), str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and str(tmp_path / "empty") in err and "Traceback" not in err
