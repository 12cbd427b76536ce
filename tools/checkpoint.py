"""Checkpoints as plain data, written atomically, read with ``weights_only=True``.

A checkpoint holds the model (unwrapped from DDP), optimizer, lr scheduler, AMP scaler, epoch,
the AP history and early-stop state, the RNG states of python/numpy/torch, the resolved config as
a dict, the git revision, and whatever else the caller adds (the ASM state).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import platform
import random
import subprocess
from typing import Any

import numpy as np
import torch
from torch import nn

from datasets.records import atomic_open
from tools import dist

LAST = "last.pth"  # a run's latest checkpoint, in its output folder
BEST = "best.pth"  # the checkpoint of its best evaluated epoch
FORMAT = 2  # 2: held_out, log_lines, per-phase rollbacks
TRAINING_KEYS = (
    "model",
    "optimizer",
    "lr_scheduler",
    "phase",
    "early_stop",
    "round_stop",
    "epochs_done",
    "rng",
)
RUN_KEYS = ("config", "classes", "model", "label_to_cat_id")  # what inference and the tools read


def last_path(run_dir: str) -> str:
    """The latest checkpoint of the run in ``run_dir``."""
    return os.path.join(run_dir, LAST)


def best_path(run_dir: str) -> str:
    """The best checkpoint of the run in ``run_dir``."""
    return os.path.join(run_dir, BEST)


def read_run(run_dir: str) -> dict[str, Any]:
    """The latest checkpoint of the run in ``run_dir``.

    Raises:
        FileNotFoundError: ``run_dir`` holds no checkpoint (it is not a run's output folder).
    """
    path = last_path(run_dir)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no checkpoint; give the output folder of a train_asm_one.py run")
    return load_checkpoint(path)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / DataParallel."""
    return model.module if hasattr(model, "module") else model


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU and CUDA) as plain data."""
    py = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names, dtypes, shapes and bytes, in order): equal only for equal weights."""
    h = hashlib.sha256()
    for name, tensor in unwrap(model).state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


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


def save_checkpoint(path: str, state: dict[str, Any]) -> None:
    """``torch.save`` to a temp file in the same folder, then ``os.replace``: never a torn file.

    Under torchrun only rank 0 writes (every rank holds the same state).
    """
    if not dist.is_main():
        return
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong with it."""


def load_checkpoint(
    path: str, map_location: str | torch.device = "cpu", required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (plain data only).

    Raises:
        CheckpointError: missing, empty, truncated or not a torch file; holding objects other than
            plain data (refused, never executed); or lacking one of the ``required`` keys.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the file is empty (a copy cut short?)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refused: it holds objects other than plain data, so it was not written by "
            f"this tool ({reason})"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint: truncated, or not written by torch.save "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: not a checkpoint of this tool (it holds a {type(state).__name__}, not a dict)"
        )
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: not a checkpoint of this tool: missing {missing} (a weights-only file? "
            f"pass it as --weights instead of --resume)"
        )
    return state
