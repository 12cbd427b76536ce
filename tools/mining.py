"""One ASM round's model side: detect the round's images and merge them with the oracle."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from asm.merge import ASMConfig, MergeResult, merge_batch
from datasets.records import Record
from tools.engine import detect
from tools.fit import eval_loader


def asm_config(args: argparse.Namespace) -> ASMConfig:
    return ASMConfig(certain_thre=args.certain_thre, uncertain_thre=args.uncertain_thre, judge_iou=args.judge_iou,
                     gt_iou=args.gt_iou, enable_al=args.enable_al, enable_sl=args.enable_sl)  # fmt: skip


def sort_by_score(out: dict) -> dict:
    order = np.argsort(-np.asarray(out["scores"]), kind="stable")
    return {k: np.asarray(v)[order] for k, v in out.items()}


def mine(model: nn.Module, records: Sequence[Record], image_root: str, args: argparse.Namespace,
         device: torch.device) -> list[MergeResult]:  # fmt: skip
    """Detect ``records`` (the oracle's GT records of a round's batch) and merge each with its GT."""
    loader = eval_loader(records, image_root, args)
    dets = [sort_by_score(d) for d in detect(model, loader, device, desc="detect")]
    return merge_batch(dets, records, asm_config(args))
