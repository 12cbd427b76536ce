"""Render the measured figures: ``BENCHMARKS.md`` and the documentation site's results page
(``docs/results.md``), both from the benchmark JSON files in ``docs/`` that the scripts wrote.

One short row per benchmark: its current figure, its goal, the command that measures it, and when
and where it was measured; the plots beside. Nothing here is typed by hand but the goals and the
commands: a figure on those pages is the one in its JSON.

    python bench/render_results.py            # write both files
    python bench/render_results.py --check    # exit 1 when either differs from what the JSON gives

The last line printed is one JSON object: ``benchmarks`` (rows rendered), ``missing`` (JSON files
named here but absent), ``changed`` (files that differed; with ``--check`` nothing is written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
CPU = "2 CPU cores (x86_64), no GPU"


def _pct(v: float | None) -> str:
    return "never" if v is None else f"{100 * v:.0f}%"


def _reaches(who: str, v: float | None) -> str:
    return f"{who} never does" if v is None else f"{who} with {100 * v:.0f}% of the boxes"


def _efficiency(d: dict) -> str:
    method = d["default_method"]
    sup = d["supervised_ap50"]
    sup_text = f"{sup['mean']:.3f} (n {sup['n']})" if isinstance(sup, dict) else f"{sup:.3f} (one run)"
    frac = d["box_fraction_to_95pct"]
    text = (
        f"supervised AP50 {sup_text}; {_reaches(method + ' reaches 95% of it', frac.get(method))}, "
        f"{_reaches('random', frac.get('random'))}"
    )
    vs = (d.get("vs_random") or {}).get(method)
    if vs and vs.get("ci95"):  # protocol v3
        lo, hi = vs["ci95"]
        text += (
            f"; margin over random {vs['mean_margin_ap50']:+.3f} AP50 (95% CI [{lo:+.3f}, {hi:+.3f}], "
            f"{vs['n']} readings: {vs['above_noise']} above the noise, {vs['within_noise']} within, "
            f"{vs['below_noise']} below)"
        )
    else:  # the earlier protocol: one margin per seed
        old = d["asm_vs_random"][method]
        text += (
            f"; smallest margin over random {old['min_margin_ap50']:+.4f} AP50, the noise of round 2 alone "
            f"{old['noise_floor_ap50']:.4f} (protocol v2: too few readings to judge)"
        )
    return text


def _demo(d: dict) -> str:
    return (
        f"{d['demo_s']:.0f} s, AP50 {d['ap50']:.3f}, {d['sl_confirmed']} boxes confirmed at precision "
        f"{d['sl_precision']:.3f}, {100 * d['human_saved_fraction']:.0f}% of the pool's boxes not drawn"
    )


def _mutation(d: dict) -> str:
    wall = "wall time not recorded" if d["wall_s"] is None else f"{d['wall_s']:.0f} s"
    if d.get("setup_s") is not None:
        wall += f" ({d['setup_s']:.0f} s of it before the first mutant)"
    unread = d.get("reasons", {}).get("not examined", 0)
    return (
        f"{d['killed']} of {d['mutants']} mutants killed ({d['killed_fraction']:.3f}), {wall}; "
        f"{unread} survivors not examined ({unread / d['mutants']:.1%})"
    )


def _frozen_bn(d: dict) -> str:
    return (
        f"training step {d['step_time_ratio']:.3f}x torchvision's time (in one process "
        f"{d['step_time_ratio_in_process']:.3f}x, evaluation {d['eval_time_ratio_in_process']:.3f}x); "
        f"bit-identical: {d['bit_identical']}"
    )


def _malloc(d: dict) -> str:
    return (
        f"training {d['train_speedup']:.3f}x, evaluation {d['eval_speedup']:.3f}x faster, RSS "
        f"{d['rss_ratio']:.3f}x; the same losses: {d['same_losses']}"
    )


def _learns(d: dict) -> str:
    return (
        f"AP50 {d['ap50_first']:.3f} after the first epoch, best {d['ap50_best']:.3f} in {d['epochs']}; "
        f"loss ratio {d['loss_ratio']:.3f}"
    )


def _pisa(d: dict) -> str:
    return (
        f"AP50 {d['ap50_pisa']:.3f} with PISA against {d['ap50_baseline']:.3f}; step time "
        f"{d['step_time_ratio']:.3f}x (512 RoIs: {d['step_time_ratio_512']:.3f}x); PISA wins: {d['pisa_wins']}"
    )


def _load(d: dict) -> str:
    return (
        f"{d['load_time_ratio']:.2f}x the time of `COCO()` ({d['load_s']:.1f} s against "
        f"{d['baseline_load_s']:.1f} s, best of {d['repeat']}), peak memory {d['peak_rss_gb']:.2f} GB "
        f"against {d['baseline_peak_rss_gb']:.2f} GB"
    )


def _stability(d: dict) -> str:
    return f"{d['runs']} initial phases, {d['diverged']} diverged, {d['rollbacks']} rollbacks"


@dataclass(frozen=True)
class Benchmark:
    name: str
    json: str  # under docs/
    figure: Callable[[dict], str]
    goal: str
    command: str
    measured: str  # when and on what
    plot: str | None = None  # under docs/


BENCHMARKS = (
    Benchmark(
        "Human work saved on BCCD (efficiency study)",
        "efficiency_bccd_cpu.json",
        _efficiency,
        "the default's 95% CI of the margin over random above 0; 95% of the supervised AP50 with <= 40% of "
        "the boxes",
        "python bench/asm_efficiency.py --cpu --jobs 3 --json-out docs/efficiency_bccd_cpu.json",
        f"2026-12-07, {CPU}",
        "efficiency_bccd_cpu.png",
    ),
    Benchmark(
        "The default command on the demo",
        "bench_demo_cpu.json",
        _demo,
        "<= 300 s, AP50 >= 0.8, boxes confirmed at precision >= 0.8",
        "python bench/bench_demo.py --json-out docs/bench_demo_cpu.json --sheet-out docs/demo_round1.png",
        f"2026-12-07, {CPU}",
        "demo_round1.png",
    ),
    Benchmark(
        "Tests that notice a broken rule (mutation score)",
        "mutation.json",
        _mutation,
        ">= 0.85 of the mutants killed, <= 5% not examined, <= 900 s",
        "python bench/mutation.py",
        f"2026-12-07, {CPU}",
    ),
    Benchmark(
        "Frozen BatchNorm against torchvision's",
        "bench_frozen_bn_cpu.json",
        _frozen_bn,
        "faster, bit-identical",
        "python bench/bench_frozen_bn.py --data bccd --min-size 416 --json-out docs/bench_frozen_bn_cpu.json",
        f"2026-12-06, {CPU}",
    ),
    Benchmark(
        "Freed memory kept (glibc malloc)",
        "bench_malloc_cpu.json",
        _malloc,
        "faster, the same losses",
        "python bench/bench_malloc.py --jobs 3 --json-out docs/bench_malloc_cpu.json",
        f"2026-12-07, {CPU}",
    ),
    Benchmark(
        "Training from scratch learns",
        "bench_learns_cpu.json",
        _learns,
        "AP50 rises over the first epoch's",
        "python bench/bench_learns.py --json-out docs/bench_learns_cpu.json",
        f"2026-12-06, {CPU}",
    ),
    Benchmark(
        "PISA as MMDetection defines it, 3 seeds on BCCD",
        "pisa_bccd_cpu.json",
        _pisa,
        "AP50 above the standard head in every seed at <= 1.2x the step time",
        "python bench/bench_pisa.py --jobs 2 --json-out docs/pisa_bccd_cpu.json",
        f"2026-12-06, {CPU}",
    ),
    Benchmark(
        "COCO annotations loaded against pycocotools",
        "bench_load_cpu.json",
        _load,
        "load_time_ratio <= 1.5 (a train2017-sized JSON: 118,287 images, 860,001 boxes)",
        "python bench/bench_load.py --repeat 3 --json-out docs/bench_load_cpu.json",
        f"2026-12-07, {CPU}",
    ),
    Benchmark(
        "Initial phases without divergence",
        "stability_cpu.json",
        _stability,
        "none diverges",
        "python bench/bench_stability.py --json-out docs/stability_cpu.json",
        f"2026-12-03, {CPU}",
    ),
)
# The scripts that print a ratio against a baseline run in the same process (no JSON kept in docs/).
SCRIPTS = (
    ("bench/bench_train.py", "`train_one_epoch` vs a bare forward/backward loop", "train_overhead_ratio, train_images_per_s"),
    ("bench/bench_asm.py", "merge time per image against detection time per image", "merge_fraction_of_detect, detect_vs_forward"),
    ("bench/bench_scale.py", "streaming evaluation's memory against dataset size; a round at COCO size", "eval_rss_growth, coco_round_s"),
    ("bench/bench_dist.py --nproc 2", "the detection pass under torchrun, N processes vs 1", "detect_nproc_vs_1"),
)  # fmt: skip


def rows(docs: str | None = None) -> tuple[list[tuple[Benchmark, str]], list[str]]:
    """Each benchmark with its figure, and the JSON files that are missing (``docs``: default DOCS)."""
    docs = docs or DOCS
    found, missing = [], []
    for b in BENCHMARKS:
        path = os.path.join(docs, b.json)
        if not os.path.isfile(path):
            missing.append(b.json)
            continue
        with open(path, encoding="utf-8") as f:
            found.append((b, b.figure(json.load(f))))
    return found, missing


def render(found: list[tuple[Benchmark, str]], link_prefix: str) -> str:
    """The results as Markdown; ``link_prefix``: where ``docs/`` is seen from the page."""
    lines = [
        "# Benchmarks",
        "",
        "Rendered by `python bench/render_results.py` from the JSON files in `docs/`, which the scripts "
        "wrote; a figure here is the one in its JSON. How each figure was reached, and the runs it "
        "replaced, are in the changelog (`CHANGELOG.md`).",
        "",
        "| benchmark | current figure | goal | measured |",
        "| --- | --- | --- | --- |",
    ]
    for b, figure in found:
        lines.append(f"| {b.name} ([{b.json}]({link_prefix}{b.json})) | {figure} | {b.goal} | {b.measured} |")
    lines += ["", "## Commands", "", "| benchmark | command |", "| --- | --- |"]
    lines += [f"| {b.name} | `{b.command}` |" for b, _ in found]
    plots = [(b, b.plot) for b, _ in found if b.plot and os.path.isfile(os.path.join(DOCS, b.plot))]
    for b, plot in plots:
        lines += ["", f"## {b.name}", "", f"![{b.name}]({link_prefix}{plot})"]
    lines += [
        "",
        "## Ratios measured in one process",
        "",
        "These scripts print one JSON object on their last line, a ratio against a baseline run in the "
        "same process; run them on your machine.",
        "",
        "| command | measures | last line |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `python {cmd}` | {what} | `{keys}` |" for cmd, what, keys in SCRIPTS]
    return "\n".join(lines) + "\n"


def targets(found: list[tuple[Benchmark, str]]) -> dict[str, str]:
    return {
        os.path.join(ROOT, "BENCHMARKS.md"): render(found, "docs/"),
        os.path.join(DOCS, "results.md"): render(found, ""),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 when a file differs from the JSON's figures")
    args = p.parse_args(argv)
    found, missing = rows()
    changed = []
    for path, text in targets(found).items():
        old = open(path, encoding="utf-8").read() if os.path.isfile(path) else None
        if old != text:
            changed.append(os.path.relpath(path, ROOT))
            if not args.check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
    if args.check and changed:
        print(f"out of date: {', '.join(changed)}; run python bench/render_results.py", file=sys.stderr)
    print(json.dumps({"benchmarks": len(found), "missing": missing, "changed": changed}))
    return 1 if (args.check and changed) or missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
