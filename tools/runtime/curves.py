"""Learning curves' results: ``curves.json``, ``curves.csv`` and ``curves.png`` (mean +- std of AP50
over seeds per sampler). ``al_curve.py`` trains the curves."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence

import numpy as np

from datasets.atomic import atomic_write_text
from tools.runtime.logs import read_jsonl

logger = logging.getLogger(__name__)
COLUMNS = (
    "sampler",
    "seed",
    "step",
    "images",
    "human_drawn_boxes",
    "AP50",
    "AP75",
    "AP",
    "segm_AP",
    "segm_AP50",
)


def write_results(out: str, curves: list[dict], x_axis: str = "images", asm_logs: Sequence[str] = ()) -> None:
    """``curves.json``, ``curves.csv`` (one row per step) and ``curves.png`` in ``out``."""
    rows = [s for c in curves for s in c["steps"]]
    atomic_write_text(os.path.join(out, "curves.json"), json.dumps({"curves": curves}, indent=1))
    with open(os.path.join(out, "curves.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in COLUMNS} for row in rows)
    plot(curves, os.path.join(out, "curves.png"), x_axis, asm_logs)


def mean_curve(
    runs: list[list[dict]], x_key: str, y_key: str = "AP50"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeds of one method (each a list of points): mean x, mean and std of ``y_key`` over the common length."""
    length = min(len(r) for r in runs)
    xs = np.array([[p[x_key] for p in r[:length]] for r in runs], dtype=float).mean(0)
    ys = np.array([[p[y_key] for p in r[:length]] for r in runs], dtype=float)
    return xs, ys.mean(0), ys.std(0)


def plot(curves: list[dict], path: str, x_axis: str, asm_logs: Sequence[str] = ()) -> None:
    """Mean +- std of AP50 over seeds per sampler, against images or human-drawn boxes (skipped,
    with a warning, without matplotlib: ``pip install -e ".[plot]"``)."""
    try:
        import matplotlib
    except ImportError:
        logger.warning(
            'matplotlib is not installed: no %s (pip install -e ".[plot]"); curves.json and '
            "curves.csv hold the numbers",
            path,
        )
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "images" if x_axis == "images" else "human_drawn_boxes"
    masks = any(
        s.get("segm_AP50") is not None for c in curves for s in c["steps"]
    )  # Mask R-CNN: a mask panel
    fig, axes = plt.subplots(
        1, 2 if masks else 1, figsize=(12 if masks else 6.4, 4.2), dpi=100, squeeze=False
    )
    for ax, y_key, label in zip(axes[0], ("AP50", "segm_AP50"), ("box AP50 (VOC)", "mask AP50 (COCO segm)")):
        for name in dict.fromkeys(c["sampler"] for c in curves):
            runs = [c["steps"] for c in curves if c["sampler"] == name]
            xs, mean, std = mean_curve(runs, key, y_key)
            ax.plot(xs, mean, marker="o", label=f"{name} ({len(runs)} seeds)")
            ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
        ax.set_xlabel("labelled images" if x_axis == "images" else "human-drawn boxes")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax = axes[0][0]
    for log_path in asm_logs:
        rounds = [e for e in read_jsonl(log_path) if e.get("type") == "round"]
        xk = "labelled_images" if x_axis == "images" else "human_drawn_total"
        ax.plot(
            [r[xk] for r in rounds],
            [r["AP50"] for r in rounds],
            marker="s",
            linestyle="--",
            label=f"ASM {os.path.basename(os.path.dirname(os.path.abspath(log_path)))}",
        )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
