"""Checkpoints as plain data, written atomically, read with ``weights_only=True``.

A checkpoint holds the model (unwrapped from DDP), optimizer, lr scheduler, AMP scaler, epoch,
the AP history and early-stop state, the RNG states of python/numpy/torch, the resolved config as
a dict, the git revision, and whatever else the caller adds (the ASM state).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from datasets.atomic import atomic_open
from tools.runtime import dist

LAST = "last.pth"  # a run's latest checkpoint, in its output folder
BEST = "best.pth"  # the checkpoint of its best evaluated epoch
FORMAT = 3  # 2: log_lines, per-phase rollbacks; 3: (last batch's outcomes, no longer kept)


@dataclass
class RunState:
    """What a ``train_asm_one.py`` checkpoint holds, saved as a plain dict of these fields.

    The training state (``model`` … ``rng``) restores a run exactly; ``config`` (the resolved options),
    ``classes`` and ``label_to_cat_id`` are what inference and the tools read; ``awaiting`` is the
    labelling folder of a round paused for a human. :meth:`from_dict` checks that the keys a reader
    needs are there; the others take their defaults (a checkpoint older than the field).
    """

    model: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    lr_scheduler: dict[str, Any] | None = None
    phase: dict[str, Any] | None = None  # tools.engine.fit.Phase.state_dict()
    early_stop: dict[str, Any] | None = None  # the phase's AP-shift stopper
    round_stop: dict[str, Any] | None = None  # the stopper across rounds
    epochs_done: int = 0
    rng: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    classes: list[str] | None = None
    label_to_cat_id: dict[str, int] = field(default_factory=dict)
    best_ap: float = -1.0
    scaler: dict[str, Any] | None = None
    asm: dict[str, Any] | None = None  # asm.pools.ASMState.state_dict(); None for the supervised baseline
    train_records: list[dict[str, Any]] = field(default_factory=list)  # what the current phase trains on
    environment: dict[str, Any] = field(default_factory=dict)
    git: str | None = None
    awaiting: str | None = None  # labelling folder of a paused round, relative to the run's folder
    log_lines: int | None = None  # log.jsonl's records when this was saved
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def model_dict(self) -> dict[str, Any]:
        """What ``best.pth`` holds: the model and what reads it (:data:`MODEL_KEYS`), its AP and where
        it came from; no optimizer, schedule or pools (a run resumes from ``last.pth``)."""
        keep = (*MODEL_KEYS, "best_ap", "environment", "git", "format")
        return {name: getattr(self, name) for name in keep}

    @classmethod
    def from_dict(
        cls, state: dict[str, Any], path: str = "checkpoint", need: tuple[str, ...] = ()
    ) -> RunState:
        """Raises:
        CheckpointError: written by a newer version, or lacking one of the keys in ``need``."""
        if state.get("format", 1) > FORMAT:
            raise CheckpointError(
                f"{path}: written by a newer version of this tool (format {state['format']}, this "
                f"one reads up to {FORMAT}); update the code or start a new run"
            )
        missing = [k for k in need if k not in state]
        if missing:
            raise CheckpointError(
                f"{path}: not a train_asm_one.py checkpoint (no {', '.join(repr(k) for k in missing)}); "
                + (
                    "a weights-only file goes to --weights, not --resume"
                    if need == TRAINING_KEYS
                    else "pass the last.pth or best.pth of a run"
                )
            )
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in names} | {"format": state.get("format", 1)})


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
MODEL_KEYS = ("config", "classes", "model", "label_to_cat_id")  # what inference and the tools read


def read_state(path: str, need: tuple[str, ...] = TRAINING_KEYS) -> RunState:
    """The run state in the checkpoint ``path``, with the keys in ``need`` (:data:`TRAINING_KEYS`
    to resume; :data:`MODEL_KEYS` to run the model).

    Raises:
        CheckpointError: unreadable, of a newer format, or lacking a needed key.
    """
    return RunState.from_dict(load_checkpoint(path), path, need)


def last_path(run_dir: str) -> str:
    """The latest checkpoint of the run in ``run_dir``."""
    return os.path.join(run_dir, LAST)


def best_path(run_dir: str) -> str:
    """The best checkpoint of the run in ``run_dir``."""
    return os.path.join(run_dir, BEST)


def checkpoint_of(path: str) -> str:
    """``path`` itself, or for a run's folder its ``best.pth`` (else its ``last.pth``).

    Raises:
        FileNotFoundError: a folder without either, or no such file.
    """
    if os.path.isdir(path):
        found = [p for p in (best_path(path), last_path(path)) if os.path.isfile(p)]
        if not found:
            raise FileNotFoundError(
                f"{path}: a folder without {BEST} or {LAST}; give the output folder of a train_asm_one.py run"
            )
        return found[0]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def folder_of(path: str) -> str:
    """The run's folder of a checkpoint path or of a run's folder."""
    return os.path.abspath(path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)))


def read_run(run_dir: str) -> RunState:
    """The latest state of the run in ``run_dir``.

    Raises:
        FileNotFoundError: ``run_dir`` holds no checkpoint (it is not a run's output folder).
        CheckpointError: its checkpoint is unreadable or not a run's.
    """
    path = last_path(run_dir)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no checkpoint; give the output folder of a train_asm_one.py run")
    return read_state(path, need=())


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


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the model's state dict (names, dtypes, shapes and bytes, in order): equal only for equal weights."""
    h = hashlib.sha256()
    for name, tensor in unwrap(model).state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


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


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (plain data only).

    Raises:
        CheckpointError: missing, empty, truncated or not a torch file; holding objects other than
            plain data (refused, never executed).
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
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        AttributeError,
        IndexError,
        TypeError,
    ) as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint: truncated, or not written by torch.save "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path}: not a checkpoint of this tool (it holds a {type(state).__name__}, not a dict)"
        )
    return state
