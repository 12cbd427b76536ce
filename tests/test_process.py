"""tools/runtime/process.py: the device, seeds, allocator and worker counts a run starts with."""

import ctypes
import json
import os
import platform
import random
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import tools.runtime.process as process
from tests.conftest import BCCD, ROOT
from tools.runtime.process import choose_device, default_workers, seed_everything


def test_the_device_is_the_one_named_or_the_cpu_without_a_gpu():
    assert choose_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device("auto").type == expected


def test_seeding_repeats_every_generator():
    seed_everything(3)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    seed_everything(4)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != first


def test_gpu_workers_leave_a_core_for_the_main_process_and_stay_at_most_8(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_workers() == 8
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert default_workers() == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_workers() == 1


# In a fresh process after ``{setup}`` (which sets ``kept``): the bytes of a 64 MiB tensor that glibc's
# malloc serves from a mapping of its own (mallinfo2's hblkhd), and the free memory it keeps at the
# heap's top after a 64 MiB block there is freed (keepcost).
_MAPPED_BYTES = """
import ctypes, json, torch
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
{setup}
before = libc.mallinfo2().hblkhd
x = torch.ones(16 << 20)
mapped = libc.mallinfo2().hblkhd - before
libc.free(libc.malloc(64 << 20))  # nothing allocated after it: it joins the heap's top
print(json.dumps({{"kept": kept, "mapped": mapped, "top": libc.mallinfo2().keepcost}}))
"""
_TUNED = "from tools.runtime.process import keep_freed_memory; kept = keep_freed_memory()"
_GLIBC = platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL(None), "mallinfo2")


def _mapped(setup: str, **env) -> dict:
    script = _MAPPED_BYTES.format(setup=setup)
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not _GLIBC, reason="glibc's malloc (mallinfo2, glibc >= 2.33) only")
def test_freed_memory_is_kept_for_the_next_tensor_unless_the_user_chose_glibcs_settings():
    mib64 = 64 << 20
    default = _mapped("kept = None")
    assert default["mapped"] >= mib64  # glibc maps a block this large alone and unmaps it when freed
    tuned = _mapped(_TUNED)
    assert tuned["kept"] is True and tuned["mapped"] == 0  # from the heap,
    assert tuned["top"] >= mib64  # whose freed memory stays for the next tensor
    for env in (
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"},
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
    ):
        chosen = _mapped(_TUNED, **env)
        assert chosen["kept"] is False and chosen["mapped"] >= mib64, env


@pytest.mark.skipif(not _GLIBC, reason="glibc's malloc (mallinfo2, glibc >= 2.33) only")
def test_the_entry_keeps_freed_memory_from_its_start(tmp_path):
    voc = ["--dataset", "voc", "--voc-roots", BCCD, "--voc-classes", "RBC", "WBC", "Platelets"]
    setup = (
        "from train_asm_one import get_args_parser; from tools.loop.setup import start\n"
        f"start(get_args_parser().parse_args({voc + ['--output-dir', str(tmp_path)]!r}))\n"
        "kept = None"
    )
    assert _mapped(setup)["mapped"] == 0


@pytest.mark.skipif(not _GLIBC, reason="glibc's malloc (mallinfo2, glibc >= 2.33) only")
@pytest.mark.parametrize("script", ["infer", "visualize"])
def test_the_detecting_scripts_keep_freed_memory(tmp_path, script):
    # a missing checkpoint: the script stops with exit code 2 right after its start
    argv = [
        "--checkpoint",
        str(tmp_path / "missing.pth"),
        "--images",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    setup = f"import {script}\nassert {script}.main({argv!r}) == 2\nkept = None"
    assert _mapped(setup)["mapped"] == 0


class _Mallopt:
    """glibc's mallopt stood in: records each call; ``refuse``: the M_MMAP_THRESHOLD values it refuses
    (an older glibc caps the threshold lower)."""

    def __init__(self, refuse=()):
        self.calls, self.refuse = [], set(refuse)

    def __call__(self, option, value):
        self.calls.append((option, value))
        return 0 if (option == process._M_MMAP_THRESHOLD and value in self.refuse) else 1


@pytest.fixture
def libc(monkeypatch):
    """A glibc process with no user settings, whose mallopt is stood in."""
    for name in (*process._USER_MALLOC_ENV, "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(process.platform, "libc_ver", lambda: ("glibc", "2.36"))
    mallopt = _Mallopt()
    monkeypatch.setattr(process.ctypes, "CDLL", lambda name: types.SimpleNamespace(mallopt=mallopt))
    return mallopt


def test_glibc_gets_both_thresholds(libc):
    assert process.keep_freed_memory()
    assert libc.calls == [
        (process._M_MMAP_THRESHOLD, process.MMAP_THRESHOLD),
        (process._M_TRIM_THRESHOLD, process.TRIM_THRESHOLD),
    ]


def test_an_older_glibc_gets_the_lower_mmap_threshold(libc):
    libc.refuse = {process.MMAP_THRESHOLD}
    assert process.keep_freed_memory()
    assert [v for o, v in libc.calls if o == process._M_MMAP_THRESHOLD] == [
        process.MMAP_THRESHOLD,
        process.MMAP_THRESHOLD_OLD_GLIBC,
    ]


def test_another_c_library_is_left_alone(libc, monkeypatch):
    monkeypatch.setattr(process.platform, "libc_ver", lambda: ("", ""))  # musl, macOS, Windows
    assert not process.keep_freed_memory() and libc.calls == []
    assert process.malloc_left_alone() == "the C library is not glibc"


@pytest.mark.parametrize("lib", ["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "libtcmalloc_minimal.so.4"])
def test_a_preloaded_allocator_is_left_alone(libc, monkeypatch, lib):
    monkeypatch.setenv("LD_PRELOAD", f"/lib/other.so {lib}")
    assert not process.keep_freed_memory() and libc.calls == []
    assert process.malloc_left_alone() == f"another allocator is preloaded ({os.path.basename(lib)})"
