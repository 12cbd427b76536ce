"""Annotation efficiency on real data: human-drawn boxes needed to reach fully supervised AP50.

On BCCD (Pascal VOC layout, 3 classes; pool = ``train``, evaluation = ``val``) and for each seed:

* ``supervised``: every train image, every box drawn by a human (the upper bound);
* ``random`` and ``entropy``: ``tools/al_curve.py`` learning curves, whole images labelled;
* ``v1+`` and ``topk_v2``: ``train_asm_one.py`` rounds, only the AL boxes drawn.

All methods start from the same initial pool (:func:`asm.pools.initial_pool`), add the same number
of images per step/round, fine-tune the previous step's model for ``--step-epochs`` epochs, and use
the same model, input size and optimiser, for a fixed number of epochs (no AP-shift early stopping,
so every method gets the same training budget at each step). Each method runs as its own process and checkpoints, so an
interrupted benchmark continues where it stopped when the command is run again.

    python bench/asm_efficiency.py --weights-backbone ../shared/weights/mobilenet_v2_imagenet_features.pth
    python bench/asm_efficiency.py --quick          # smoke run on a slice, a few minutes

Writes ``curves.json`` (every point), ``efficiency.png``, ``efficiency.md`` (tables) in
``--output-dir``; the last line printed is one JSON object with ``supervised_ap50`` and
``box_fraction_to_100pct`` (per method; null where a method never reaches the supervised AP50).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from asm.pools import image_count  # noqa: E402
from datasets.records import atomic_write_text  # noqa: E402
from tools.al_curve import mean_curve  # noqa: E402
from tools.logs import read_jsonl  # noqa: E402

CLASSES = ("RBC", "WBC", "Platelets")
SAMPLER_METHODS = ("random", "entropy")
ASM_METHODS = ("v1+", "topk_v2", "v1+/pool", "topk_v2/pool")  # "/pool": rounds train on the whole label pool
DEFAULT_METHODS = ("random", "entropy", "v1+", "topk_v2")
LEVELS = (0.9, 0.95, 1.0)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bccd-root", default=os.path.join(ROOT, "..", "shared", "data", "bccd"))
    p.add_argument("--eval-split", default="val", choices=("val", "test"))
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   choices=(*SAMPLER_METHODS, *ASM_METHODS))  # fmt: skip
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--weights-backbone", default=None, help="ImageNet backbone (.pth or torchvision name)")
    p.add_argument("--model", default="fasterrcnn_mobilenet_v2_fpn")
    p.add_argument("--min-size", type=int, default=320)
    p.add_argument("--initial", type=float, default=0.1, help="initial pool: fraction or count")
    p.add_argument("--step", type=float, default=0.1, help="images added per step/round: fraction or count")
    p.add_argument("--steps", type=int, default=6, help="points per curve, the initial pool included")
    p.add_argument("--epochs", type=int, default=20, help="max epochs on the initial pool")
    p.add_argument("--step-epochs", type=int, default=5, help="max epochs of each later step/round")
    p.add_argument("--supervised-epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=4, help="small batches: more iterations on 205 images")
    p.add_argument("--warmup-iters", type=int, default=50)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: a slice of the data, tiny input, one epoch per step")
    p.add_argument("--quick-images", type=int, nargs=2, default=(16, 8), metavar=("TRAIN", "EVAL"))
    p.add_argument("--output-dir", default=os.path.join(ROOT, "outputs", "efficiency"))
    return p


def quick_root(src: str, out: str, n_train: int, n_eval: int, eval_split: str) -> str:
    """A VOC root with the first images of each split: links to the real folders, short split files."""
    root = os.path.join(out, "bccd_slice")
    os.makedirs(os.path.join(root, "ImageSets", "Main"), exist_ok=True)
    for name in ("Annotations", "JPEGImages"):
        link = os.path.join(root, name)
        if not os.path.islink(link):
            os.symlink(os.path.abspath(os.path.join(src, name)), link)
    for split, n in (("train", n_train), (eval_split, n_eval)):
        with open(os.path.join(src, "ImageSets", "Main", f"{split}.txt"), encoding="utf-8") as f:
            ids = [line.strip() for line in f if line.strip()][:n]
        atomic_write_text(os.path.join(root, "ImageSets", "Main", f"{split}.txt"), "\n".join(ids) + "\n")
    return root


def common_flags(args, root: str, seed: int) -> list[str]:
    flags = ["--dataset", "voc", "--voc-roots", root, "--voc-train-split", "train", "--voc-val-split",
             args.eval_split, "--voc-classes", *CLASSES, "--model", args.model, "--min-size", str(args.min_size),
             "--lr", str(args.lr), "--warmup-iters", str(args.warmup_iters), "--seed", str(seed),
             "--ap_shift_pretrain", "0", "--ap_shift_asm", "0"]  # fmt: skip (fixed budgets: no AP-shift early stopping)
    if args.weights_backbone:
        flags += ["--weights-backbone", args.weights_backbone]
    return flags


def run_tool(cmd: list[str], log_path: str) -> str:
    """Run one method's command (its own process); its output goes to ``log_path``; returns stdout."""
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1]} failed with exit code {proc.returncode}; see {log_path}")
    print(f"  done in {time.perf_counter() - t:.0f} s", flush=True)
    return proc.stdout


def sampler_curves(args, root: str, seed: int, names: list[str], n_train: int, supervised: bool) -> list[dict]:
    """``tools/al_curve.py`` curves (or the one-step supervised run); resumes from its checkpoints."""
    out = os.path.join(args.output_dir, f"supervised_seed{seed}" if supervised else f"samplers_seed{seed}")
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, os.path.join(ROOT, "tools", "al_curve.py"), *common_flags(args, root, seed),
           "--seeds", str(seed), "--train-batch-size", str(args.batch_size), "--output-dir", out,
           "--resume_or_load", "continue"]  # fmt: skip
    if supervised:
        cmd += ["--samplers", "random", "--seed_batch", "1.0", "--steps", "1", "--epochs", str(args.supervised_epochs)]
    else:
        cmd += ["--samplers", *names, "--seed_batch", str(args.initial), "--batch_size", str(image_count(args.step, n_train)),
                "--steps", str(args.steps), "--epochs", str(args.epochs), "--step-epochs", str(args.step_epochs)]
    run_tool(cmd, os.path.join(out, "bench.log"))
    with open(os.path.join(out, "curves.json"), encoding="utf-8") as f:
        curves = json.load(f)["curves"]
    return [{"method": "supervised" if supervised else c["sampler"], "seed": seed,
             "points": [{k: s[k] for k in ("images", "human_drawn_boxes", "AP50", "AP75", "AP")} for s in c["steps"]]}
            for c in curves]  # fmt: skip


def asm_curve(args, root: str, seed: int, method: str, n_train: int) -> dict:
    """One ``train_asm_one.py`` run; resumes from its ``last.pth`` when an earlier run was cut off.

    ``method`` is a strategy, or ``strategy/pool`` for rounds that train on the whole label pool
    (``--round-train pool``) instead of K replayed records.
    """
    strategy, _, round_train = method.partition("/")
    out = os.path.join(args.output_dir, f"asm_{method.replace('+', 'plus').replace('/', '_')}_seed{seed}")
    summary_path = os.path.join(out, "summary.json")
    if not os.path.isfile(summary_path):
        cmd = [sys.executable, os.path.join(ROOT, "train_asm_one.py"), *common_flags(args, root, seed),
               "--strategy", strategy, "--K", str(image_count(args.step, n_train)), "--initial", str(args.initial),
               "--max-rounds", str(args.steps - 1), "--epochs", str(args.epochs), "--round-epochs",
               str(args.step_epochs), "--batch_size", str(args.batch_size), "--coco-ap", "true",
               "--round-train", round_train or "replay", "--output-dir", out]  # fmt: skip
        if os.path.isfile(os.path.join(out, "last.pth")):
            cmd += ["--resume", os.path.join(out, "last.pth")]
        os.makedirs(out, exist_ok=True)
        stdout = run_tool(cmd, os.path.join(out, "bench.log"))
        atomic_write_text(summary_path, stdout.strip().splitlines()[-1])
    rounds = {}
    for entry in read_jsonl(os.path.join(out, "log.jsonl")):
        if entry.get("type") == "round":
            rounds[entry["round"]] = entry  # a resumed run may repeat a round's line: keep the last
    points = [{"images": r["labelled_images"], "human_drawn_boxes": r["human_drawn_total"], "AP50": r["AP50"],
               "AP75": r["AP75"], "AP": r.get("AP"), "precision": r.get("precision"), "round": k}
              for k, r in sorted(rounds.items())]  # fmt: skip
    return {"method": method, "seed": seed, "points": points}


def first_reaching(points: list[dict], target: float) -> int | None:
    """Human-drawn boxes at the first point whose AP50 reaches ``target`` (None if none does)."""
    return next((p["human_drawn_boxes"] for p in points if p["AP50"] >= target - 1e-12), None)


def analyse(curves: list[dict], total_boxes: int, methods: list[str]) -> dict:
    """Supervised AP, box fractions to reach 90/95/100% of it, and ASM against random per budget."""
    sup = {c["seed"]: c["points"][-1] for c in curves if c["method"] == "supervised"}
    result = {"supervised_ap50": _mean_std([p["AP50"] for p in sup.values()]),
              "supervised_ap": _mean_std([p["AP"] for p in sup.values()]), "total_boxes": total_boxes,
              "box_fraction": {}, "vs_random": {}}  # fmt: skip
    for m in methods:
        runs = [c for c in curves if c["method"] == m]
        result["box_fraction"][m] = {}
        for level in LEVELS:
            drawn = [first_reaching(c["points"], level * sup[c["seed"]]["AP50"]) for c in runs]
            # a level counts as reached only when every seed reaches it; the mean over seeds otherwise
            frac = None if None in drawn else round(float(np.mean(drawn)) / total_boxes, 4)
            result["box_fraction"][m][f"{round(level * 100)}pct"] = frac
    randoms = {c["seed"]: c["points"] for c in curves if c["method"] == "random"}
    for m in (m for m in methods if m in ASM_METHODS):
        margins = []
        for c in (c for c in curves if c["method"] == m and c["seed"] in randoms):
            ref = randoms[c["seed"]]
            xs, ys = [p["human_drawn_boxes"] for p in ref], [p["AP50"] for p in ref]
            # random's AP50 at the same human budget (linear between its points, flat beyond them);
            # the shared initial pool is left out: there the two differ only by their random init
            margins += [p["AP50"] - float(np.interp(p["human_drawn_boxes"], xs, ys)) for p in c["points"][1:]]
        result["vs_random"][m] = {"min_margin_ap50": round(min(margins), 4) if margins else None,
                                  "at_or_above_everywhere": bool(margins) and min(margins) >= -1e-9}  # fmt: skip
    return result


def _mean_std(values: list[float]) -> dict:
    return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4)} if values else None


def plot(curves: list[dict], summary: dict, methods: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=90)
    sup = summary["supervised_ap50"]["mean"]
    for ax, key, label in ((axes[0], "human_drawn_boxes", "human-drawn boxes (% of all train boxes)"),
                           (axes[1], "images", "labelled images")):  # fmt: skip
        for m in methods:
            xs, mean, std = mean_curve([c["points"] for c in curves if c["method"] == m], key)
            if key == "human_drawn_boxes":
                xs = 100 * xs / summary["total_boxes"]
            ax.plot(xs, mean, marker="s" if m in ASM_METHODS else "o", label=m)
            ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
        ax.axhline(sup, color="k", linestyle="--", linewidth=1, label=f"supervised {sup:.3f}")
        ax.axhline(0.9 * sup, color="k", linestyle=":", linewidth=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("AP50 (val)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    seeds = sorted({c["seed"] for c in curves})
    fig.suptitle(f"BCCD: AP50 against human effort (seeds {seeds}; mean +- std)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def tables(curves: list[dict], summary: dict, methods: list[str]) -> str:
    """Markdown: box fractions per method and level; every point; ASM precision per round."""
    lines = [f"Supervised upper bound: AP50 {summary['supervised_ap50']['mean']:.3f} +- "
             f"{summary['supervised_ap50']['std']:.3f}, AP {summary['supervised_ap']['mean']:.3f} +- "
             f"{summary['supervised_ap']['std']:.3f} ({summary['total_boxes']} train boxes, all drawn).", "",
             "| method | boxes to 90% | boxes to 95% | boxes to 100% of supervised AP50 |", "|---|---|---|---|"]  # fmt: skip
    for m in methods:
        cells = [("never" if v is None else f"{100 * v:.1f}%") for v in summary["box_fraction"][m].values()]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "| method | seed | point | images | human-drawn boxes | % boxes | AP50 | AP | precision |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in curves:
        for k, p in enumerate(c["points"]):
            prec = "-" if p.get("precision") is None else f"{p['precision']:.3f}"
            ap = "-" if p.get("AP") is None else f"{p['AP']:.3f}"
            lines.append(f"| {c['method']} | {c['seed']} | {k} | {p['images']} | {p['human_drawn_boxes']} | "
                         f"{100 * p['human_drawn_boxes'] / summary['total_boxes']:.1f}% | {p['AP50']:.3f} | {ap} | {prec} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.quick:
        args.min_size, args.epochs, args.step_epochs, args.supervised_epochs = 128, 1, 1, 1
        args.initial, args.step, args.steps = 4, 4, 2
    if not os.path.isdir(os.path.join(args.bccd_root, "Annotations")):
        print(f"error: {args.bccd_root} is not a VOC root (no Annotations/); pass --bccd-root", file=sys.stderr)
        return 2
    os.makedirs(args.output_dir, exist_ok=True)
    root = os.path.abspath(args.bccd_root)
    if args.quick:
        root = quick_root(root, args.output_dir, *args.quick_images, args.eval_split)
    from datasets.voc import load_voc

    train = load_voc(root, "train", CLASSES, cache_dir=False)
    n_train, total_boxes = len(train), train.num_boxes()
    start = time.perf_counter()
    curves: list[dict] = []
    samplers = [m for m in args.methods if m in SAMPLER_METHODS]
    for seed in args.seeds:
        curves += sampler_curves(args, root, seed, ["random"], n_train, supervised=True)
        if samplers:
            curves += sampler_curves(args, root, seed, samplers, n_train, supervised=False)
        curves += [asm_curve(args, root, seed, m, n_train) for m in args.methods if m in ASM_METHODS]
    summary = analyse(curves, total_boxes, args.methods)
    atomic_write_text(os.path.join(args.output_dir, "curves.json"),
                      json.dumps({"settings": vars(args), "curves": curves, "summary": summary}, indent=1))  # fmt: skip
    plot(curves, summary, args.methods, os.path.join(args.output_dir, "efficiency.png"))
    table = tables(curves, summary, args.methods)
    atomic_write_text(os.path.join(args.output_dir, "efficiency.md"), table)
    print(table)
    print(json.dumps({"supervised_ap50": summary["supervised_ap50"]["mean"],
                      "supervised_ap": summary["supervised_ap"]["mean"],
                      "box_fraction_to_100pct": {m: summary["box_fraction"][m]["100pct"] for m in args.methods},
                      "box_fraction_to_90pct": {m: summary["box_fraction"][m]["90pct"] for m in args.methods},
                      "asm_vs_random": summary["vs_random"], "seeds": args.seeds,
                      "wall_s": round(time.perf_counter() - start, 1)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
