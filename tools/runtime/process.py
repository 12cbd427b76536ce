"""Process setup and facts: logging, the device, seeds, deterministic kernels, the C allocator, DataLoader
worker counts, and what a run's numbers depend on besides its options (git revision, libraries,
processor, threads).

Nothing here reads command-line options; :func:`tools.loop.setup.start` passes their values.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib
import logging
import os
import platform
import random
import subprocess
import sys
from typing import Any

import numpy as np
import torch

from tools.runtime import dist


def configure_logging(level: str = "INFO") -> None:
    """One line per record on stdout; sets the level also when logging was configured before."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    logging.getLogger().setLevel(level)


def choose_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when there is a GPU, else the CPU; under torchrun, this process's GPU."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    return dist.init(device)  # a no-op unless launched by torchrun


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; each torchrun rank gets its own augmentations (DDP syncs the
    initial weights)."""
    seed += dist.rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def deterministic_mode() -> None:
    """Same command, same seed, same machine and thread count -> the same numbers, bit for bit.

    Besides torch's deterministic algorithms and oneDNN's deterministic mode, this asks Intel MKL for
    conditional numerical reproducibility (``MKL_CBWR=AUTO,STRICT``): without it MKL picks kernels
    by the memory alignment of its inputs on Intel CPUs, and two runs differ in the last bits, which
    training turns into different detections. MKL reads the variable at its first call, so it must be
    set before any matrix product (the entry scripts call this first thing; tests set it in conftest).
    Nothing here makes runs agree across processors, thread counts or GPU kinds.
    """
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    torch.use_deterministic_algorithms(True)
    torch.backends.mkldnn.deterministic = True
    torch.backends.cudnn.benchmark = False


# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 256 << 20  # blocks below this come from the heap, not from their own mmap
MMAP_THRESHOLD_OLD_GLIBC = 32 << 20  # the most older glibc releases accept (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top kept before any is given back
_USER_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def malloc_left_alone() -> str | None:
    """Why :func:`keep_freed_memory` leaves the C allocator as it is here, or None when it sets it."""
    if platform.libc_ver()[0] != "glibc":
        return "the C library is not glibc"
    preloaded = [p for p in os.environ.get("LD_PRELOAD", "").replace(":", " ").split() if "malloc" in p]
    if preloaded:  # jemalloc, tcmalloc, mimalloc ...: glibc's malloc options would not reach them
        return f"another allocator is preloaded ({os.path.basename(preloaded[0])})"
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets glibc's malloc options"
    chosen = [k for k in _USER_MALLOC_ENV if k in os.environ]
    return f"{chosen[0]} is set" if chosen else None


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory of freed tensors for the ones allocated after them.

    By default glibc gives every large freed block back to the system (its own ``mmap``, or a trim of
    the heap's top), and the next tensor of that size faults each of its pages in again, zeroed by the
    kernel. A CPU training step allocates and frees the same activation sizes over and over: on the
    efficiency study's protocol (BCCD at 416 px, batch 2, three one-thread processes on 2 cores) steps
    ran 1.2x faster and evaluation 1.45x with this (``bench/bench_malloc.py``). The numbers stay the
    same bit for bit under ``--deterministic`` (MKL's CBWR makes its kernels independent of alignment);
    the peak memory grew 1%.

    Called by :func:`tools.loop.setup.start`, ``infer.py`` and ``visualize.py``. Does nothing off glibc
    (macOS, Windows, musl), where another allocator is preloaded (``LD_PRELOAD``), and where the user set glibc's malloc options (``MALLOC_*_`` variables or
    ``GLIBC_TUNABLES``): theirs stand. Returns whether it set them.
    """
    if malloc_left_alone():
        return False
    mallopt = ctypes.CDLL(None).mallopt  # this process's C library
    mmap_set = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(
        _M_MMAP_THRESHOLD, MMAP_THRESHOLD_OLD_GLIBC
    )
    return bool(mmap_set and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def default_workers() -> int:
    """DataLoader workers per process on a GPU: the cores this process may use, shared among the
    local torchrun processes, less one for the main process; at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // max(dist.local_world_size(), 1) - 1))


def git_revision() -> str | None:
    """The project's git commit, or ``None`` outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# What training reads of the project: a round (tools.loop.round_cache) or a run (--deterministic) repeats only
# where these files are the same, committed or not.
SOURCE_DIRS = ("asm", "datasets", "net", "tools")
SOURCE_FILES = ("train_asm_one.py",)
LIBRARIES = ("torch", "torchvision", "numpy", "PIL")


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 of the project's Python sources that training reads (:data:`SOURCE_DIRS`,
    :data:`SOURCE_FILES`), names and bytes: an uncommitted edit changes it, and it is defined outside
    a git checkout too. Read once per process."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/runtime/..
    paths = [os.path.join(root, f) for f in SOURCE_FILES]
    for folder in SOURCE_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder)):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            paths += [os.path.join(dirpath, f) for f in filenames if f.endswith(".py")]
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def library_versions() -> dict[str, str | None]:
    """The versions of the libraries whose kernels and decoders give a run its numbers."""
    versions = {}
    for name in LIBRARIES:
        module = sys.modules.get(name) or importlib.import_module(name)
        versions[name] = getattr(module, "__version__", None)
    return versions


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_environment() -> dict[str, Any]:
    """What a run's numbers depend on besides its options: code, libraries, processor, threads.

    A ``--deterministic`` run repeats exactly only where all of these are the same.
    """
    cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "git": git_revision(),
        "torch": str(torch.__version__),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "gpu": cuda,
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
    }
