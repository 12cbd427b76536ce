"""Which certainty rule makes a weak model's certain boxes right? Fixed threshold, calibration, flip
TTA, mirror agreement.

Loads the models of finished runs (``bench/bench_stability.py`` writes initial phases: the CPU
efficiency study's round-0 model, 20 BCCD images, 10 epochs) and detects images none of them trained
on. With ``--images eval`` (default) half of the evaluation images (even positions) calibrate
(``--certain-precision``: per-class thresholds from :func:`asm.select.class_thresholds`) and the
other half are measured; with ``--images unlabelled``, as a run's round does, the whole evaluation
set calibrates and the images outside the run's label pool are measured. Every rule goes through the
real merge (:func:`tools.engine.mining.merge_with_oracle`):

* ``fixed``: ``--certain-thre`` 0.8 (the default);
* ``calib``: thresholds calibrated to precision ``--precision`` (0.85, at 95% confidence);
* ``flip/fixed`` and ``flip/calib``: the same on flip test-time augmentation, where a box's score
  is the mean of its own and its mirror view's best same-class match (0 without one), so that a box
  only one view finds loses half its score; boxes are the two views' mean;
* ``agree``: ``--certain-agreement`` 0.85 (:func:`asm.select.require_agreement`: a certain box the
  mirrored view does not draw again at IoU >= 0.85 is made uncertain) on the fixed 0.8, and
  ``agree/0.6`` the same on ``--certain-thre`` 0.6 (the demo's rule until 2026-12-06).

For each rule: ``certain`` boxes, ``confirmed`` (matched a GT box of the class at IoU >= 0.8: SL),
``precision`` = confirmed / certain, and ``precision_iou50`` (the same certain boxes judged at IoU
0.5: how many are right but drawn too loosely for SL). And per run and view, the ``ceiling`` that
any threshold could reach: the best precision at IoU 0.8 over the top-n detections (n >= 10), the
score it needs, and the precision of those boxes at IoU 0.5.

    python bench/bench_certainty.py outputs/stability/bccd_seed1_t2 ... --json-out docs/certainty_bccd_cpu.json

Any finished run folder works (its own evaluation images are detected): the study's later models, the
demo's (``--max-rounds 0``) round-0 model.

The last line is one JSON object: ``rules.<rule>`` with ``certain``, ``confirmed``, ``precision``,
``precision_iou50``, summed over the runs, and ``per_run``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from asm.merge import ASMConfig, box_iou  # noqa: E402
from asm.pools import ASMState  # noqa: E402
from asm.select import (  # noqa: E402
    calibrate_scores,
    class_thresholds,
    detection_outcomes,
    require_agreement,
)
from bench.common import emit  # noqa: E402
from datasets.build import build_datasets, run_data_options  # noqa: E402
from datasets.torch_data import read_image  # noqa: E402
from tools.engine.checkpoint import checkpoint_of, load_checkpoint  # noqa: E402
from tools.engine.inference import model_from_checkpoint  # noqa: E402
from tools.engine.mining import Mirrored, merge_with_oracle, sort_by_score  # noqa: E402

AGREEMENT = 0.85  # --certain-agreement of the agree rules


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders of finished initial phases")
    p.add_argument(
        "--precision", type=float, default=0.85, help="the calibrated rules' target (its lower bound's)"
    )
    p.add_argument(
        "--images",
        choices=("eval", "unlabelled"),
        default="eval",
        help="detect each run's evaluation images, or its training images outside the label pool",
    )
    p.add_argument("--json-out", default=None)
    return p


@torch.inference_mode()
def detect_both(model, image: torch.Tensor) -> tuple[dict, dict, dict]:
    """The plain detections of ``image``, the flip-consistent ones (module docstring) and the mirrored
    view's own (boxes mapped back)."""
    plain = model([image])[0]
    flipped = Mirrored(model)([image])[0]
    a = {k: v.numpy() for k, v in plain.items()}
    b = {k: v.numpy() for k, v in flipped.items()}
    iou = box_iou(a["boxes"], b["boxes"])
    iou[a["labels"][:, None] != b["labels"][None, :]] = 0.0
    best = iou.argmax(1) if iou.size else np.zeros(len(a["boxes"]), np.int64)
    paired = iou[np.arange(len(best)), best] >= 0.5 if iou.size else np.zeros(len(best), bool)
    partner = np.where(paired, b["scores"][best] if len(b["scores"]) else 0.0, 0.0)
    boxes = a["boxes"].astype(np.float64)
    if paired.any():
        boxes[paired] = (boxes[paired] + b["boxes"][best[paired]]) / 2
    consistent = {
        "boxes": boxes.astype(np.float32),
        "labels": a["labels"],
        "scores": ((a["scores"] + partner) / 2).astype(np.float32),
    }
    return sort_by_score(a), sort_by_score(consistent), sort_by_score(b)


def measure(dets, records, cfg: ASMConfig) -> dict:
    """The real merge of ``dets`` with the records' GT: certain, confirmed, precision (IoU 0.8 and 0.5)."""
    strict = merge_with_oracle(dets, records, cfg)
    loose = merge_with_oracle(dets, records, dataclasses.replace(cfg, gt_iou=0.5))
    certain = sum(r.certain for r in strict)
    confirmed = sum(r.confirmed for r in strict)
    return {
        "certain": certain,
        "confirmed": confirmed,
        "matched_iou50": sum(r.matched for r in loose),
    }


def ceiling(dets, records, cfg: ASMConfig, min_support: int = 10) -> dict:
    """What any score threshold could reach on ``dets``: over the top-n detections (n >= ``min_support``,
    all classes, scores >= ``uncertain_thre``) the best precision at IoU 0.8, with its n and lowest
    score, the precision at IoU 0.5 of the same boxes, and the highest score."""
    strict = detection_outcomes(dets, records, cfg.gt_iou, cfg.uncertain_thre)
    loose = detection_outcomes(dets, records, 0.5, cfg.uncertain_thre)
    scores = np.asarray(strict["scores"])
    if len(scores) < min_support:
        return {"detections": len(scores), "best_precision": None}
    order = np.argsort(-scores, kind="stable")
    n = np.arange(1, len(order) + 1)
    prec = np.cumsum(np.asarray(strict["tp"], np.float64)[order]) / n
    prec_loose = np.cumsum(np.asarray(loose["tp"], np.float64)[order]) / n
    best = int(np.argmax(np.where(n >= min_support, prec, -1.0)))
    return {
        "detections": len(scores),
        "max_score": round(float(scores.max()), 4),
        "best_precision": round(float(prec[best]), 4),
        "at_top_n": best + 1,
        "down_to_score": round(float(scores[order][best]), 4),
        "precision_iou50_there": round(float(prec_loose[best]), 4),
    }


def with_precision(counts: dict) -> dict:
    c = counts["certain"]
    return {
        **counts,
        "precision": round(counts["confirmed"] / c, 4) if c else None,
        "precision_iou50": round(counts["matched_iou50"] / c, 4) if c else None,
    }


def detect_all(model, dataset, records, desc: str) -> list[tuple[dict, dict, dict]]:
    """:func:`detect_both` of each record's image."""
    return [
        detect_both(model, read_image(os.path.join(dataset.image_root, r.file_name)).float().div(255))
        for r in tqdm(records, desc=desc, disable=None)
    ]


def one_run(folder: str, precision: float, images: str = "eval") -> dict:
    model, state = model_from_checkpoint(folder, torch.device("cpu"))
    train, val = build_datasets(run_data_options(state.config, os.path.dirname(checkpoint_of(folder))))
    name = os.path.basename(folder)
    if images == "unlabelled":  # the next round's images, calibrated on the evaluation set (as a run does)
        last = os.path.join(os.path.dirname(checkpoint_of(folder)), "last.pth")  # best.pth: the model alone
        labelled = ASMState.from_state(load_checkpoint(last)["asm"]).labelled
        calib_records = list(val.records)
        test_records = [r for r in train.records if r.image_id not in labelled]
        calib_dets = detect_all(model, val, calib_records, f"{name} eval")
        test_dets = detect_all(model, train, test_records, f"{name} unlabelled")
    else:  # the evaluation images, halved: even positions calibrate, odd ones are measured
        found = detect_all(model, val, val.records, name)
        calib_records, test_records = list(val.records[0::2]), list(val.records[1::2])
        calib_dets, test_dets = found[0::2], found[1::2]
    cfg = ASMConfig()
    out = {
        "run": folder,
        "calibration_images": len(calib_records),
        "test_images": len(test_records),
        "rules": {},
    }
    for i, view in ((0, ""), (1, "flip/")):
        outcomes = detection_outcomes(
            [d[i] for d in calib_dets], calib_records, cfg.gt_iou, cfg.uncertain_thre
        )
        thresholds = class_thresholds(outcomes, len(val.classes), precision, cfg.uncertain_thre)
        test = [d[i] for d in test_dets]
        out[f"{view}ceiling"] = ceiling(test, test_records, cfg)
        out["rules"][f"{view}fixed"] = measure(test, test_records, cfg)
        out["rules"][f"{view}calib"] = {
            **measure(calibrate_scores(test, thresholds, cfg), test_records, cfg),
            "thresholds": {val.classes[c - 1]: round(t, 4) for c, t in thresholds.items()},
        }
    test, test_mirrored = [d[0] for d in test_dets], [d[2] for d in test_dets]
    for name, rules in (("agree", cfg), ("agree/0.6", dataclasses.replace(cfg, certain_thre=0.6))):
        agreed, disagreed = require_agreement(test, test_mirrored, AGREEMENT, rules)
        out["rules"][name] = {**measure(agreed, test_records, rules), "disagreed": disagreed}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if not 0.0 < args.precision < 1.0:
        parser.error(f"--precision must be in (0, 1) (a lower bound never reaches 1), got {args.precision}")
    for folder in args.runs:  # every run readable before the first is detected
        try:
            checkpoint_of(folder)
        except FileNotFoundError as e:
            parser.error(str(e))
    torch.set_grad_enabled(False)
    start = time.perf_counter()
    runs = [one_run(f, args.precision, args.images) for f in args.runs]
    rules = {}
    for name in runs[0]["rules"]:
        total = {k: sum(r["rules"][name][k] for r in runs) for k in ("certain", "confirmed", "matched_iou50")}
        rules[name] = with_precision(total)
    for r in runs:
        r["rules"] = {k: {**v, **with_precision(v)} for k, v in r["rules"].items()}
    result = {
        "what": "precision of certain boxes of the given runs' models on their held-out evaluation images, "
        "per certainty rule; calibrated on evaluation images (the other half of them with --images eval)",
        "runs": args.runs,
        "images": args.images,
        "target_precision": args.precision,
        "rules": rules,
        "per_run": runs,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    return emit(result, args.json_out)


if __name__ == "__main__":
    sys.exit(main())
