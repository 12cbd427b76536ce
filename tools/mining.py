"""One ASM round's model side: detect the round's images and merge them with the oracle (or a human)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from asm.edits import count_moves
from asm.merge import ASMConfig, MergeResult, merge_batch, split_and_rejudge
from datasets.records import Record, record_from_dict
from tools.engine import detect
from tools.fit import eval_loader


def sort_by_score(out: dict) -> dict:
    order = np.argsort(-np.asarray(out["scores"]), kind="stable")
    return {k: np.asarray(v)[order] for k, v in out.items()}


def detect_sorted(
    model: nn.Module,
    records: Sequence[Record],
    image_root: str,
    args: argparse.Namespace,
    device: torch.device,
) -> list[dict]:
    """Detections of ``records`` in original pixels, each sorted by descending score."""
    loader = eval_loader(records, image_root, args, pin_memory=device.type == "cuda")
    return [sort_by_score(d) for d in detect(model, loader, device, desc="detect", masks=False)]


def merge_with_oracle(dets: Sequence[dict], records: Sequence[Record], cfg: ASMConfig) -> list[MergeResult]:
    """The simulated human on a round's detections: merge with GT, then count moves (asm.edits)."""
    return count_moves(merge_batch(dets, records, cfg), cfg.move_iou)


def mine(
    model: nn.Module,
    records: Sequence[Record],
    image_root: str,
    cfg: ASMConfig,
    loader_args: argparse.Namespace,
    device: torch.device,
) -> list[MergeResult]:
    """Detect ``records`` (the oracle's GT records of a round's batch) and merge each with its GT
    under the rules ``cfg``; ``loader_args``: the detection loader's batch size and workers."""
    return merge_with_oracle(detect_sorted(model, records, image_root, loader_args, device), records, cfg)


def preannotate(
    dets: Sequence[dict], records: Sequence[Record], cfg: ASMConfig
) -> tuple[list[Record], list[np.ndarray], list[float]]:
    """The model's certain boxes (after rejudge) in ``dets`` of ``records``: pre-annotations for a
    human; their scores; and per image the model's estimate of the AL ratio, the share of uncertain
    boxes among the boxes it found (the true ratio is known once the human has labelled)."""
    certain, uncertain, _ = split_and_rejudge(dets, cfg)
    pre = [
        Record(r.image_id, r.file_name, r.width, r.height, d["boxes"][c], d["labels"][c])
        for r, d, c in zip(records, dets, certain)
    ]
    estimates = [
        float(u.sum() / (u.sum() + c.sum())) if u.sum() + c.sum() else 1.0 for c, u in zip(certain, uncertain)
    ]
    return pre, [d["scores"][c] for d, c in zip(dets, certain)], estimates


def results_from_imported(imported: dict) -> list[MergeResult]:
    """Merge results of a round labelled in a tool (``tools/labelling.import_round``'s output)."""
    out = []
    for rec, img, n_pre in zip(imported["records"], imported["images"], imported["preannotated"]):
        sa = record_from_dict(rec)
        al = img["added"] + img["moved"] + img["relabelled"]  # the human's boxes; moves are cheaper edits
        sl = img["confirmed"]
        ratio = al / (al + sl) if al + sl else (1.0 if img["deleted"] else 0.0)
        moved = np.asarray(img.get("moved_boxes", [False] * len(sa)), bool)
        out.append(
            MergeResult(
                sa,
                np.asarray(img["sl"], bool),
                al - int(moved.sum()),
                sl,
                img["deleted"],
                n_pre,
                0,
                0,
                sl,
                ratio,
                moved=moved,
            )
        )
    return out
