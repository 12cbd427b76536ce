"""bench/mutation.py's summary: each mutant counted under the module it mutated."""

import importlib.util
import os
import platform
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("bench_mutation", os.path.join(ROOT, "bench", "mutation.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_mutants_of_modules_in_packages_count_under_their_own_file():
    assert bench.module_of("asm.pools.xǁASMStateǁcheck__mutmut_23") == "asm/pools.py"
    assert bench.module_of("tools.loop.rounds.x_start_round__mutmut_4") == "tools/loop/rounds.py"
    assert bench.module_of("tools.engine.fit.xǁPhaseTrainingǁtrain__mutmut_2") == "tools/engine/fit.py"


def test_the_summary_counts_each_status_per_module():
    results = {
        "tools.loop.rounds.x_a__mutmut_1": "killed",
        "tools.loop.rounds.x_a__mutmut_2": "survived",
        "tools.loop.run.x_b__mutmut_1": "timeout",
        "datasets.coco.x_c__mutmut_1": "no tests",
    }
    reasons = {"tools.loop.rounds.x_a__mutmut_2": "equivalent: by hand", "datasets.coco.x_c__mutmut_1": "x"}
    out = bench.summarise(results, reasons)
    assert out["killed_fraction"] == 0.5 and out["mutants"] == 4
    assert out["modules"]["tools/loop/rounds.py"] == {
        "mutants": 2,
        "killed": 1,
        "survived": 1,
        "no_tests": 0,
        "other": 0,
    }
    assert (
        out["modules"]["tools/loop/run.py"]["killed"] == 1
        and out["modules"]["datasets/coco.py"]["no_tests"] == 1
    )
    assert out["not_killed"]["tools.loop.rounds.x_a__mutmut_2"] == {
        "status": "survived",
        "reason": "equivalent: by hand",
    }


WAS = """def f(x, logger):
    if x > 1:
        raise ValueError(f"{x} is too big; at most {1}", x)
    logger.warning("%s: kept", x[:3])
    report.add("clipped_box", f"{x}: box 0", "detail")
    _bad(report, "bad_shape", x, "a polygon")
    shapes.append(Shape(x, "polygon", x[1:], f"{x}: shape 2", 7))
    self.fates[x] = "v1: trained on this round only"
    HEARTBEAT.set(epoch=x, rounds=3)
    self.pool[x] = "kept"
    return x
"""


def _swap(old, new):
    out = WAS.replace(old, new)
    assert out != WAS, old  # the case changes the function
    return out


def test_a_change_inside_an_errors_or_a_log_lines_arguments_is_message_only():
    assert bench.message_only(WAS, _swap("at most {1}", "at most {2}"))
    assert bench.message_only(WAS, _swap('{1}", x)', '{1}", None)'))
    assert bench.message_only(WAS, _swap("x[:3]", "x[:4]"))
    assert bench.message_only(WAS, _swap('"%s: kept", x[:3]', '"%s: kept"'))
    assert bench.message_only(WAS, _swap('f"{x}: box 0"', "None"))  # a report entry's place
    assert bench.message_only(WAS, _swap('"a polygon"', '"XXa polygonXX"'))  # and its detail
    assert bench.message_only(WAS, _swap('f"{x}: shape 2"', "None"))  # a shape's place
    assert bench.message_only(WAS, _swap('"v1: trained on this round only"', "None"))  # an image's fate
    assert bench.message_only(WAS, _swap("rounds=3", "rounds=None"))  # the progress line
    assert bench.message_only(WAS, _swap('"detail")', ")"))  # a report entry's detail dropped
    assert bench.message_only(WAS, _swap('f"{x}: box 0", ', ""))  # its place dropped: the detail moves up


def test_a_change_of_whether_or_what_is_raised_or_returned_is_not():
    assert not bench.message_only(WAS, _swap("x > 1", "x >= 1"))
    assert not bench.message_only(WAS, _swap("raise ValueError", "raise TypeError"))
    assert not bench.message_only(WAS, _swap("return x", "return None"))
    assert not bench.message_only(WAS, _swap("logger.warning", "print"))
    assert not bench.message_only(WAS, _swap('"clipped_box"', '"XXclipped_boxXX"'))  # its reason
    assert not bench.message_only(WAS, _swap('"bad_shape"', "None"))
    assert not bench.message_only(WAS, _swap('"clipped_box", ', ""))  # the reason dropped: others move in
    assert not bench.message_only(WAS, _swap('shape 2", 7)', 'shape 2")'))  # the group dropped
    assert not bench.message_only(WAS, _swap('shape 2", 7)', 'shape 2", None)'))  # its group
    assert not bench.message_only(WAS, _swap('"polygon", x[1:]', '"XXpolygonXX", x[1:]'))  # its kind
    assert not bench.message_only(WAS, _swap('"kept"', "None"))  # what another mapping holds
    assert not bench.message_only(WAS, WAS)  # no change at all is no message change
    assert not bench.message_only(WAS, "def f(:")  # a mutant that does not parse


def test_the_first_changed_lines_are_the_diff():
    assert bench.diff_of(WAS, WAS.replace("x > 1", "x >= 1")) == ("if x > 1:", "if x >= 1:")


def test_a_reason_given_for_a_line_covers_every_mutant_of_that_line(monkeypatch):
    monkeypatch.setattr(bench, "sources_of", lambda m: (WAS, WAS.replace("x > 1", "x >= 1")))
    hand = {"asm.a.x_f | if x > 1:": "equivalent: by hand", "asm.a.x_f__mutmut_9": "named"}
    assert bench.reason_of("asm.a.x_f__mutmut_3", hand) == "equivalent: by hand"
    assert bench.reason_of("asm.a.x_f__mutmut_9", hand) == "named"
    assert bench.reason_of("asm.a.x_g__mutmut_3", hand) == "not examined"  # another function's line
    exact = {"asm.a.x_f | if x > 1: => if x >= 1:": "this change", "asm.a.x_f | if x > 1:": "the line"}
    assert bench.reason_of("asm.a.x_f__mutmut_3", exact) == "this change"
    assert (
        bench.reason_of("asm.a.x_f__mutmut_3", {"asm.a.x_f | if x > 1: => if x > 2:": "other"})
        == "not examined"
    )


def _rule(minus, plus):
    return next((reason for test, reason in bench.RULES if test(minus, plus)), None)


def test_the_rules_take_only_their_exact_substitution():
    assert _rule("b = x.reshape(-1, 4)", "b = x.reshape(-2, 4)").startswith(
        "equivalent: numpy reads any negative"
    )
    assert _rule("b = x.reshape(-1, 4)[-1]", "b = x.reshape(-1, 4)[-2]") is None  # an index, not a size
    assert _rule('open(p, encoding="utf-8")', 'open(p, encoding="UTF-8")').startswith(
        "equivalent: codec names"
    )
    assert _rule('raw.decode("utf-8-sig")', 'raw.decode("UTF-8-SIG")').startswith("equivalent: codec names")
    assert _rule('raw.decode("utf-8-sig")', 'raw.decode("utf-8")') is None  # another codec: the BOM kept
    assert _rule('open(p, encoding="utf-8")', "open(p, )").startswith("equivalent where the locale")
    assert _rule('open(p, encoding="utf-8")', "open(p, encoding=None)").startswith(
        "equivalent where the locale"
    )
    assert _rule('open(p, encoding="utf-8")', 'open(None, encoding="utf-8")') is None
    assert _rule("if a > b:", "if a >= b:") is None
    assert _rule("s = np.asarray(x, np.float64)", "s = np.asarray(x, )").startswith(
        "by rule: an explicit dtype"
    )
    assert _rule("s = np.asarray(x, dtype=np.float64)", "s = np.asarray(x, dtype=None)").startswith("by rule")
    keep = "keep = np.asarray(d, np.float64) >= floor"  # a condition on a line that also names a dtype
    assert _rule(keep, "keep = np.asarray(d, np.float64) > floor") is None
    assert _rule('o = np.argsort(-s, kind="stable")', "o = np.argsort(-s, )").startswith(
        "by rule: the stable"
    )


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc (Linux)")
def test_processes_mutants_left_behind_are_stopped_and_running_ones_are_not(tmp_path):
    import subprocess
    import sys
    import time

    code = "import setproctitle, time; setproctitle.setproctitle('mutmut: {}'); time.sleep(120)"
    pid_file = tmp_path / "pid"
    # an orphan (its parent gone, as a leftover worker is) and a child of this process
    subprocess.run(
        ["sh", "-c", f'{sys.executable} -c "{code.format("left")}" & echo $! > {pid_file}'], check=True
    )
    running = subprocess.Popen([sys.executable, "-c", code.format("running")])
    orphan = int(pid_file.read_text())
    deadline = time.time() + 20
    while time.time() < deadline and not all(
        open(f"/proc/{p}/cmdline", "rb").read().startswith(b"mutmut: ") for p in (orphan, running.pid)
    ):
        time.sleep(0.1)
    try:
        if open(f"/proc/{orphan}/stat", "rb").read().rpartition(b")")[2].split()[1] != b"1":
            pytest.skip("orphans are adopted by a subreaper here, not by init")
        assert bench.kill_leftovers() >= 1
        time.sleep(0.2)
        gone = not os.path.exists(f"/proc/{orphan}")
        assert gone or open(f"/proc/{orphan}/stat", "rb").read().rpartition(b")")[2].split()[0] == b"Z"
        assert running.poll() is None  # a running run's own worker is left alone
    finally:
        running.kill()
        running.wait()
        if os.path.exists(f"/proc/{orphan}"):
            os.kill(orphan, 9)


def test_the_unexamined_survivors_are_grouped_by_the_key_a_reason_takes(monkeypatch):
    changes = {
        "asm.a.x_f__mutmut_3": "x >= 1",
        "asm.a.x_f__mutmut_4": "x > 2",
        "asm.a.x_g__mutmut_1": "x < 1",
    }
    monkeypatch.setattr(bench, "sources_of", lambda m: (WAS, WAS.replace("x > 1", changes[m])))
    not_killed = {m: {"status": "survived", "reason": "not examined"} for m in changes}
    not_killed["asm.a.x_h__mutmut_1"] = {"status": "survived", "reason": "equivalent: by hand"}
    assert bench.unexamined_lines(not_killed).splitlines() == [
        "2 asm.a.x_f | if x > 1:",
        "    3: if x >= 1:",
        "    4: if x > 2:",
        "1 asm.a.x_g | if x > 1:",
        "    1: if x < 1:",
    ]


def test_the_set_up_time_ends_where_mutmut_says_it_tests_mutants(capfd):
    """The mark is found though it comes in two writes; without it the set-up time is unknown; a
    failing run raises."""
    script = (
        "import sys, time; w = sys.stdout.buffer; w.write(b'Generating mutants\\n'); w.flush(); "
        "time.sleep(0.2); w.write(b'Running mutation'); w.flush(); time.sleep(0.2); "
        "w.write(b' testing\\n'); w.flush(); time.sleep(0.2)"
    )
    times = bench.run_mutmut(2, [sys.executable, "-c", script])
    # the mark is whole after two sleeps of 0.2 s, and a third follows it (lower bounds only)
    assert times["setup_s"] >= 0.35 and times["wall_s"] - times["setup_s"] >= 0.15
    assert "Generating mutants\nRunning mutation testing\n" in capfd.readouterr().out  # passed through
    assert bench.run_mutmut(2, [sys.executable, "-c", "print('nothing')"])["setup_s"] is None
    with pytest.raises(subprocess.CalledProcessError):
        bench.run_mutmut(2, [sys.executable, "-c", "raise SystemExit(3)"])


def test_a_leftover_process_holding_the_output_does_not_hold_the_run(capfd):
    """mutmut has exited; a process it left behind still holds its output open (a hung DataLoader
    worker): the run returns while that process lives."""
    script = (
        "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('leftover', p.pid, flush=True); print('Running mutation testing', flush=True)"
    )
    times = bench.run_mutmut(2, [sys.executable, "-c", script])
    pid = int(capfd.readouterr().out.split("leftover ")[1].split()[0])
    try:
        os.kill(pid, 0)  # still alive: the run did not wait for it
        assert times["setup_s"] is not None
    finally:
        os.kill(pid, signal.SIGKILL)


def test_a_mutant_run_keeps_its_tmp_folders_to_itself(tmp_path):
    """With MUTANT_UNDER_TEST set, as mutmut sets it, tests/conftest.py takes in bench/mutant_pytest.py:
    the run's tmp_path folders live in a folder of its own, removed when the run ends. Without it,
    pytest leaves its numbered folders in pytest-of-<user> (a forked mutant never cleans them up)."""
    temp = tmp_path / "temp"
    temp.mkdir()
    one_test = "tests/test_bench_mutation.py::test_the_first_changed_lines_are_the_diff"  # tmp_path: autouse
    env = {k: v for k, v in os.environ.items() if k not in ("MUTANT_UNDER_TEST", "PYTEST_XDIST_WORKER")}

    def run(**extra):
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
        ]
        done = subprocess.run(
            [*cmd, one_test], cwd=ROOT, env=env | {"TMPDIR": str(temp)} | extra, capture_output=True
        )
        assert done.returncode == 0, done.stdout[-2000:]
        return [n.split("-")[0] for n in os.listdir(temp)]

    assert run(MUTANT_UNDER_TEST="asm.pools.x_image_count__mutmut_1") == []  # made and removed
    assert run() == ["pytest"]  # pytest-of-<user>, left behind


@pytest.mark.parametrize(
    "under, gives", [("stats", True), ("", True), ("fail", True), ("asm.a.x_f__mutmut_1", False)]
)
def test_only_mutmuts_own_runs_give_memory_back(monkeypatch, under, gives):
    """mutmut's own runs (tracing, unmutated, the forced failure) end by giving back freed memory,
    as it forks after them; a forked mutant's run does not (it exits at once)."""
    import types

    import bench.mutant_pytest as hooks

    calls = []
    monkeypatch.setattr(hooks, "give_back_freed_memory", lambda: calls.append(under))
    monkeypatch.setenv("MUTANT_UNDER_TEST", under)
    hooks.pytest_unconfigure(types.SimpleNamespace(stash={}))
    assert calls == ([under] if gives else [])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_memory_goes_back_to_the_system():
    """About 290 MB in 96 KB arrays (under glibc's mmap threshold: in the heap), all freed but the
    last, which pins the heap's top: the process keeps the pages until malloc_trim returns them."""
    import numpy as np

    from bench.mutant_pytest import give_back_freed_memory

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    arrays = [np.ones(12_000) for _ in range(3_000)]
    last = arrays[-1]
    del arrays
    before = rss_mb()
    assert give_back_freed_memory() is True
    assert before - rss_mb() > 150 and last.sum() == 12_000
