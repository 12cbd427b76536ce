"""One ASM round's model side: detect the round's images, merge them with the oracle, or prepare
them for a human (``tools/loop/labelling.py`` imports the human's labels)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from asm.edits import count_moves
from asm.merge import ASMConfig, MergeResult, merge_batch, split_and_rejudge
from asm.select import rescored
from datasets.loaders import eval_loader
from datasets.records import Record
from tools.engine.epoch import detect
from tools.engine.inference import mirror_boxes


def sort_by_score(out: dict) -> dict:
    return rescored(out, np.asarray(out["scores"]))


def detect_sorted(
    model: nn.Module,
    records: Sequence[Record],
    image_root: str,
    device: torch.device,
    batch_size: int = 1,
    workers: int = 0,
) -> list[dict]:
    """Detections of ``records`` in original pixels, each sorted by descending score (``batch_size``
    images per forward pass, ``workers`` DataLoader processes)."""
    loader = eval_loader(records, image_root, batch_size, workers, pin_memory=device.type == "cuda")
    return [sort_by_score(d) for d in detect(model, loader, device, desc="detect", masks=False)]


class Mirrored(nn.Module):
    """A detector run on mirrored images, its boxes mapped back onto the originals (the second view
    of ``--certain-agreement``). Boxes only: masks are not mirrored back."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        outputs = self.model([image.flip(-1) for image in images])
        for image, out in zip(images, outputs):
            out["boxes"] = mirror_boxes(out["boxes"], image.shape[-1])
        return outputs


def merge_with_oracle(dets: Sequence[dict], records: Sequence[Record], cfg: ASMConfig) -> list[MergeResult]:
    """The simulated human on a round's detections: merge with GT, then count moves (asm.edits)."""
    return count_moves(merge_batch(dets, records, cfg), cfg.move_iou)


def mine(
    model: nn.Module,
    records: Sequence[Record],
    image_root: str,
    cfg: ASMConfig,
    device: torch.device,
    batch_size: int = 1,
    workers: int = 0,
) -> list[MergeResult]:
    """Detect ``records`` (the oracle's GT records of a round's batch) and merge each with its GT
    under the rules ``cfg``."""
    dets = detect_sorted(model, records, image_root, device, batch_size, workers)
    return merge_with_oracle(dets, records, cfg)


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
