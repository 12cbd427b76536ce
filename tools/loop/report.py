"""What the user reads about a run: the metric keys, the round report and its record in log.jsonl,
the summary table, the closing story, the next steps, and the final JSON line.

Everything here reads a run (:class:`tools.loop.run.Run`) and writes text or plain records; nothing here
trains or changes the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
from operator import itemgetter
from typing import Any

from datasets.atomic import atomic_write_text
from datasets.build import data_actions
from tools.engine.evaluator import AP50
from tools.engine.fit import ap50_bounds
from tools.runtime import dist
from tools.runtime.logs import read_jsonl

logger = logging.getLogger(__name__)


def ap_summary(metrics: dict[str, float]) -> dict[str, float | None]:
    """A learning-curve point's accuracy: VOC AP50 with its 95% bootstrap interval over the
    evaluation images (``ap50_ci95``, ``[lo, hi]``; None where none was computed) and their number
    (``eval_images``), AP75, COCO-style box AP (None if not evaluated), mask AP and AP50
    (``segm_AP``, ``segm_AP50``: Mask R-CNN with COCO evaluation), and VOC AP50 per class
    (``AP50/<class>``)."""
    per_class = {k[len("voc/") :]: v for k, v in metrics.items() if k.startswith("voc/AP50/")}
    masks = {f"segm_{k}": metrics[f"segm/{k}"] for k in ("AP", "AP50") if f"segm/{k}" in metrics}
    return {
        "AP50": metrics[AP50],
        **ap50_bounds(metrics),
        "AP75": metrics["voc/AP75"],
        "AP": metrics.get("bbox/AP"),
        **masks,
        **per_class,
    }


def fmt_interval(bounds: list[float] | None) -> str:
    return "-" if bounds is None else f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


def fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def human_work(run) -> dict:
    """What the human has done so far: boxes drawn (the initial pool's included), confirmed, deleted
    and moved, the weighted cost, and the share of the label pool's boxes confirmed from the model
    rather than drawn (``saved_fraction``)."""
    cost, (pool_boxes, confirmed_in_pool) = run.asm.cost, run.asm.pool_boxes()
    return {
        "drawn": run.initial_boxes + cost.drawn,
        "confirmed": cost.confirmed,
        "deleted": cost.deleted,
        "moved": cost.moved,
        "weighted_cost": round(
            run.initial_boxes + cost.weighted(run.args.review_cost, run.args.move_cost), 2
        ),
        "saved_fraction": round(confirmed_in_pool / pool_boxes, 4) if pool_boxes else 0.0,
    }


def initial_record(labelled_images: int, drawn: int, metrics: dict[str, float]) -> dict[str, Any]:
    """log.jsonl's round-0 record: the start of the learning curve (or the supervised point), in the
    shape of :func:`round_record` (every box of the initial pool drawn by the human)."""
    human = {"drawn": drawn, "confirmed": 0, "deleted": 0, "moved": 0, "weighted_cost": float(drawn)}
    return {
        "type": "round",
        "round": 0,
        "labelled_images": labelled_images,
        **ap_summary(metrics),
        "human_drawn_total": drawn,
        "human": {**human, "saved_fraction": 0.0},
    }


def round_record(run, digests: list[str]) -> dict[str, Any]:
    """log.jsonl's record of a finished round: its costs and AP, the human's work so far, and every
    rank's pool digest."""
    human = human_work(run)
    return {
        "type": "round",
        **run.asm.rounds[-1],
        "human_drawn_total": human["drawn"],
        "human": human,
        "pool_digests": digests,
    }


def write_round_report(run, results) -> str:
    """``<output>/rounds/round<r>.json``: every image detected this round, its AL ratio and boxes
    (confirmed, drawn, moved, deleted), whether it joined the label pool, and why."""
    asm = run.asm
    images = [
        {
            "image_id": r.sa.image_id,
            "file_name": r.sa.file_name,
            "al_ratio": round(float(r.ratio), 4),
            "confirmed": r.confirmed,
            "drawn": r.drawn,
            "moved": 0 if r.moved is None else int(r.moved.sum()),
            "deleted": r.deleted,
            "joined_pool": asm.labelled.get(r.sa.image_id) is r.sa,
            "reason": asm.fates.get(r.sa.image_id, ""),
        }
        for r in results
    ]
    report = {
        "round": asm.round,
        "strategy": asm.strategy,
        "K": asm.K,
        "rules": dataclasses.asdict(run.rules),
        "summary": asm.rounds[-1],
        "human_so_far": human_work(run),
        "images": images,
    }
    path = os.path.join(run.args.output_dir, "rounds", f"round{asm.round}.json")
    atomic_write_text(path, json.dumps(report, indent=1))
    return path


def no_certain_reason(info: dict, certain_thre: float) -> str:
    """Why a round confirmed nothing: every score below the bar (``--certain-thre``, or with
    ``--certain-precision`` each class's calibrated threshold, ``info["thresholds"]``; ``max_score``
    is then on the calibrated scale, where a class's threshold lands on ``certain_thre``), or every
    box above it demoted (by another class's box, or by the mirrored view)."""
    thresholds = info.get("thresholds")
    if thresholds and all(t >= 1.0 for t in thresholds.values()):
        return "--certain-precision certified no class on the validation set (every threshold 1.0)"
    contested = "was contested by an overlapping box of another class"
    if thresholds:
        if info["max_score"] < certain_thre:
            shown = ", ".join(f"{c} {t:.3f}" for c, t in thresholds.items())
            return f"no box reached its class's calibrated threshold ({shown})"
        why = f"every box at or above its class's calibrated threshold {contested}"
    else:
        best = f"the model's best score was {info['max_score']:.3f}"
        if info["max_score"] < certain_thre:
            return f"{best}, below --certain-thre {certain_thre}"
        why = f"{best}, but every box at or above --certain-thre {contested}"
    if info.get("disagreed"):
        why += f" or not drawn again by the mirrored view ({info['disagreed']} boxes)"
    return why


def log_round(run) -> None:
    """The line a round's start writes: what the human did, the pseudo-label precision (or why there
    is none), and what the round trains on."""
    asm, info = run.asm, run.asm.rounds[-1]
    human = human_work(run)
    why = ""
    if info["precision"] is None and "max_score" in info:  # say why the precision column shows "-"
        why = f" (no certain boxes: {no_certain_reason(info, run.rules.certain_thre)})"
    logger.info(
        "round %d: detected %d, drew %d, confirmed %d, moved %d, deleted %d boxes, precision %s%s; "
        "label pool %d (%.0f%% of its boxes confirmed, not drawn), training on %d",
        asm.round,
        info["images"],
        info["drawn"],
        info["confirmed"],
        info["moved"],
        info["deleted"],
        fmt(info["precision"]),
        why,
        len(asm.labelled),
        100 * human["saved_fraction"],
        len(run.train_records),
    )


def round_scalars(run) -> dict[str, float | None]:
    """TensorBoard's ASM scalars of the round that just started."""
    asm, info = run.asm, run.asm.rounds[-1]
    return {
        "ASM/images_joined": info["images_joined"],
        "ASM/images_held": info["images_held"],
        "ASM/mean_al_ratio": info["ratio_sum"] / max(info["images"], 1),
        "ASM/precision": info["precision"],
        "ASM/round/drawn": info["drawn"],
        "ASM/round/confirmed": info["confirmed"],
        "ASM/round/deleted": info["deleted"],
        "ASM/round/moved": info["moved"],
        **{f"ASM/human/{k}": v for k, v in human_work(run).items()},
        "ASM/label_pool": len(asm.labelled),
    }


def summary_table(run) -> str:
    """Per-round table: label pool, the human's boxes, pseudo-label precision, AP."""
    lines = ["round  labelled  drawn  confirmed  moved  deleted  precision   AP50   AP50 95% CI     AP75"]
    for r in run.asm.rounds:
        lines.append(
            f"{r['round']:>5}  {r['labelled_images']:>8}  {r['drawn']:>5}  {r['confirmed']:>9}  "
            f"{r.get('moved', 0):>5}  {r['deleted']:>7}  {fmt(r['precision']):>9}  {fmt(r.get('AP50')):>5}  "
            f"{fmt_interval(r.get('ap50_ci95')):>14}  {fmt(r.get('AP75')):>5}"
        )
    return "\n".join(lines)


def closing_story(run, ap50: float | None) -> str:
    """The lines a person reads at the end of a run: AP50 round by round, the human's boxes against
    the model's, where the outputs are, and what to try next on their own data."""
    out = run.args.output_dir
    log_path = os.path.join(out, "log.jsonl")
    rounds = [e for e in read_jsonl(log_path) if e["type"] == "round"] if os.path.isfile(log_path) else []
    points = sorted({e["round"]: e.get("AP50") for e in rounds}.items()) or [
        (run.asm.round if run.asm else 0, ap50)
    ]
    curve = " -> ".join(f"round {k}: {fmt(v)}" for k, v in points)
    lines = ["", f"AP50 by round: {curve}", *round_lines(rounds)]
    if run.asm is not None:
        human = human_work(run)
        total = human["drawn"] + human["confirmed"]
        lines.append(
            f"The human drew {human['drawn']} boxes (moved {human['moved']}) and confirmed {human['confirmed']} "
            f"from the model: {100 * human['saved_fraction']:.0f}% of the {total} pool boxes were not drawn by "
            "hand."
        )
    lines += [
        f"Outputs in {out}: the best model best.pth, round sheets rounds/round<r>.png and .json, the log "
        "log.jsonl;",
        f"  curves: tensorboard --logdir {shlex.quote(os.path.join(out, 'tb'))}",
        *next_commands(run.args),
        "",
    ]
    return "\n".join(lines)


def next_commands(args) -> list[str]:
    """What to run next: after the demo, the command for one's own data; after a run on one's own
    data, the efficiency study and the labelling loop on the same data (its data flags)."""
    if args.dataset == "demo":
        return [
            "Next, on your own data (VOC XML; README 'Your own data' for COCO, YOLO, LabelMe, CVAT and Label "
            "Studio exports):",
            "  python train_asm_one.py --dataset voc --voc-roots path/to/data --discover-classes --output-dir runs/mine",
        ]
    flags = " ".join(shlex.quote(f) for f in data_flags(args))
    return [
        "Next, is ASM worth it on this data? Human boxes against AP, ASM against random (3 seeds):",
        f"  python bench/asm_efficiency.py {flags}",
        "Label with a person in the loop (each round pauses for the labels: Label Studio or any tool):",
        f"  python train_asm_one.py {flags} --oracle none --output-dir runs/labelling",
    ]


def data_flags(args) -> list[str]:
    """The data options of ``args`` that differ from their defaults, as command-line flags."""
    flags = []
    for action in data_actions():
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            flags.append(flag)
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


def round_lines(rounds: list[dict]) -> list[str]:
    """One line per ASM round of log.jsonl's records: the boxes the model confirmed, those the human
    drew (and moved), the share of the round's boxes the human did not draw, and the AP50 after it."""
    lines = []
    for r in sorted(
        {r["round"]: r for r in rounds if r["round"] > 0 and "drawn" in r}.values(), key=itemgetter("round")
    ):
        confirmed, drawn, moved = r["confirmed"], r["drawn"], r.get("moved", 0)
        total = confirmed + drawn + moved
        share = f"{100 * confirmed / total:.0f}%" if total else "-"
        lines.append(
            f"  round {r['round']}: the model confirmed {confirmed} boxes, the human drew {drawn} and moved "
            f"{moved}: {share} of the round's {total} boxes not drawn by hand; AP50 {fmt(r.get('AP50'))}"
            + (
                f" (95% CI {fmt_interval(r['ap50_ci95'])} on {r['eval_images']} images)"
                if r.get("ap50_ci95")
                else ""
            )
        )
    return lines


def explain_drop(run, ap50: float) -> None:
    """Warn when a round's training left AP50 well below the model that started the round, with
    what the round did (LR restart, its labels' precision, what it trained on)."""
    info = run.asm.rounds[-1]
    before = info.get("ap50_before")
    if before is None or not (ap50 < 0.5 * before and before - ap50 > 0.05):
        return
    logger.warning(
        "round %d: AP50 fell from %.3f to %.3f. The round retrained %d images for %d epochs from "
        "--lr %g with %d warm-up iterations; its pseudo-label precision was %s (%d of its boxes "
        "confirmed from the model). A short round often recovers in the next one; if not, try fewer "
        "--round-epochs, a lower --lr or a higher --certain-thre",
        info["round"],
        before,
        ap50,
        info["train_images"],
        run.phase.max_epochs,
        run.args.lr,
        run.args.warmup_iters,
        fmt(info["precision"]),
        info["confirmed"],
    )


def next_steps(paused, output_dir: str, command: str) -> str:
    """What the human does after a round paused for labels (``paused``: :class:`tools.loop.rounds.Paused`):
    push, label, pull (or a file export and import_labels.py), then continue. The continue command is
    also kept in the round's folder (``continue.txt``), where ``labelstudio_round.py pull`` reads it."""
    run = shlex.quote(output_dir)
    if dist.is_main():
        atomic_write_text(os.path.join(paused.folder, "continue.txt"), command + "\n")
    return (
        f"{paused}. Next:\n"
        f"  1. with a running Label Studio (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY set):\n"
        f"       python labelstudio_round.py push --run {run}\n"
        f"       (label every task in the browser)\n"
        f"       python labelstudio_round.py pull --run {run}\n"
        f"     or with another tool: label the files in that folder (CVAT XML, COCO, VOC), then\n"
        f"       python import_labels.py --run {run} --labels <the tool's export>\n"
        f"  2. continue the run:\n"
        f"       {command}"
    )


def run_summary(run, metrics: dict[str, float], stopped: str, digest: str, wall_s: float) -> dict[str, Any]:
    """The final JSON line: how the run ended, its AP, the human's work and the model's digest."""
    asm = run.asm
    summary = {
        "strategy": run.policy.strategy,
        "rounds": asm.round if asm else 0,
        "stopped": stopped,
        "ap50": metrics.get(AP50),
        "ap75": metrics.get("voc/AP75"),
        "labelled_images": len(asm.labelled) if asm else len(run.train_records),
    }
    if asm is not None:
        human = human_work(run)
        summary.update(
            {
                "human_drawn_boxes": human["drawn"],
                "confirmed_boxes": human["confirmed"],
                "deleted_boxes": human["deleted"],
                "moved_boxes": human["moved"],
                "weighted_cost": human["weighted_cost"],
                "human_saved_fraction": human["saved_fraction"],
                "pseudo_label_precision": asm.cost.precision,
            }
        )
    else:
        summary["human_drawn_boxes"] = sum(len(r) for r in run.train_records)
    summary.update({"epochs": run.epochs_done, "weights_sha256": digest, "wall_s": wall_s})
    return summary
