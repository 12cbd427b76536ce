"""The efficiency study's plot and tables (``bench/asm_efficiency.py`` writes them; ``--replot`` draws
them again from a study's JSON)."""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.efficiency_analysis import ASM_METHODS, BASELINE  # noqa: E402
from tools.runtime.curves import mean_curve  # noqa: E402


def plot(curves: list[dict], summary: dict, methods: list[str], total_boxes: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=90)
    sup = summary["supervised"]["mean"]
    for ax, key, label in (
        (axes[0], "human_drawn_boxes", "human-drawn boxes (% of all train boxes)"),
        (axes[1], "cost", "weighted cost (% of drawing every box)"),
    ):
        for i, m in enumerate(methods):
            runs = [c["points"] for c in curves if c["method"] == m]
            if not runs:
                continue
            xs, mean, std = mean_curve(runs, key)
            xs = 100 * xs / total_boxes
            # each later line thinner, so that a curve another one equals still shows around it
            width = 1.2 + 1.0 * (len(methods) - 1 - i)
            ax.plot(xs, mean, marker="s" if m in ASM_METHODS else "o", markersize=3, linewidth=width, label=m)
            ax.fill_between(xs, mean - std, mean + std, alpha=0.15)
        ax.axhline(sup, color="k", linestyle="--", linewidth=1, label=f"supervised {sup:.3f}")
        ax.set_xlabel(label)
        ax.set_ylabel("AP50 (evaluation split)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    seeds = sorted({c["seed"] for c in curves})
    fig.suptitle(
        f"AP50 against human effort (seeds {seeds}; mean +- std; {BASELINE}: same trainer, every box drawn)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _lead_line(method: str, by_lead: dict) -> str:
    """``v1+: lead 0: 1 margin(s), min -0.036 (0 / 1 / 0); lead 1: ...`` (above / below / equal)."""
    parts = [
        f"lead {lead}: {v['n']} margin(s), min {v['min']:+.3f} ({' / '.join(map(str, v['above_below_equal']))})"
        for lead, v in by_lead.items()
    ]
    return f"{method}: " + "; ".join(parts)


def tables(curves: list[dict], summary: dict, per_class: dict, methods: list[str], total_boxes: int) -> str:
    """Markdown: the summary per method, per class, and every point."""
    pct = lambda v: "never" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    sup = summary["supervised"]
    lines = [
        f"Supervised upper bound: AP50 {sup['mean']:.3f} +- {sup['std']:.3f} ({total_boxes} train boxes, all drawn).",
        "",
        "| method | boxes to 90% | 95% | 100% of supervised AP50 | cost to 100% | AUC AP50 "
        "| min margin vs random after round 1 | above / below / equal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in (m for m in methods if m in summary["box_fraction"]):
        b, vs = summary["box_fraction"][m], summary["vs_random"].get(m, {})
        margin = vs.get("min_margin_ap50")
        lines.append(
            f"| {m} | {pct(b['90pct'])} | {pct(b['95pct'])} | {pct(b['100pct'])} | "
            f"{pct(summary['cost_fraction'][m]['100pct'])} | {summary['auc'][m]:.3f} | "
            f"{'-' if margin is None else f'{margin:+.3f}'} | "
            f"{' / '.join(map(str, vs.get('above_below_equal', []))) or '-'} |"
        )
    leads = [
        _lead_line(m, vs["margins_by_lead"])
        for m, vs in summary["vs_random"].items()
        if vs.get("margins_by_lead")
    ]
    if leads:
        lines += ["", "Margins by how many rounds ASM's point is ahead of random's (lead 0: the same round):"]
        lines += [f"- {line}" for line in leads]
    noise = summary.get("training_noise")
    if noise:
        per_round = ", ".join(f"round {k}: {v:.3f}" for k, v in noise["per_round"].items())
        lines += ["", f"Training noise (same labels, another training seed; mean AP50 gap): {per_round}."]
    lines += [
        "",
        "| class | supervised AP50 | " + " | ".join(f"{m}: boxes to 100% / AUC" for m in methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for cls, s in per_class.items():
        cells = [
            f"{pct(s['box_fraction'][m]['100pct'])} / {s['auc'][m]:.3f}" if m in s["auc"] else "-"
            for m in methods
        ]
        lines.append(f"| {cls} | {s['supervised']['mean']:.3f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| method | seed | point | images | drawn | % boxes | cost | AP50 | precision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in curves:
        for k, p in enumerate(c["points"]):
            prec = "-" if p.get("precision") is None else f"{p['precision']:.3f}"
            lines.append(
                f"| {c['method']} | {c['seed']} | {k} | {p['images']} | {p['human_drawn_boxes']} | "
                f"{100 * p['human_drawn_boxes'] / total_boxes:.1f}% | {p['cost']:.0f} | {p['AP50']:.3f} | {prec} |"
            )
    return "\n".join(lines) + "\n"


def readings_table(taken: list[dict], refused: list[dict]) -> str:
    """Markdown: every reading of protocol v3, and the points refused for want of random on one side."""
    lines = [
        "| method | seed | round | ASM boxes | random boxes | random AP50 | margin | margin (interpolated) "
        "| noise max at round | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in taken:
        noise = "-" if r["noise_max_at_round"] is None else f"{r['noise_max_at_round']:.3f}"
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['asm_round']} | {r['asm_boxes']} | {r['random_boxes']} | "
            f"{r['random_ap50_at_boxes']:.3f} | {r['margin_ap50']:+.3f} | {r['margin_interpolated_ap50']:+.3f} | "
            f"{noise} | {r['verdict'].replace('_', ' ')} |"
        )
    lines += [
        f"- refused: {r['method']} seed {r['seed']} round {r['asm_round']} ({r['why']})" for r in refused
    ]
    return "\n".join(lines) + "\n"


def replot(path: str) -> int:
    """``--replot``: the plot and tables of a finished study, from the JSON it wrote."""
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    methods, total = result["settings"]["methods"], result["settings"]["total_boxes"]
    plot(result["curves"], result["summary"], methods, total, os.path.splitext(path)[0] + ".png")
    print(tables(result["curves"], result["summary"], result["per_class"], methods, total))
    print(readings_table(result.get("readings", []), result.get("refused_readings", [])))
    return 0
