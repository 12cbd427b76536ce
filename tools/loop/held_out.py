"""``--eval-from-labels FRACTION``: the evaluation set drawn from the human's own labels.

With their own images a user has no labelled evaluation split, only what the loop gets labelled. Each
round (the initial pool included), a seeded FRACTION of the images the human labelled is held out:
evaluated on, never trained on (:meth:`asm.pools.ASMState.hold_out`), so the evaluation set grows
with the pool. Their boxes count in the human's work like any other. Early stopping, calibration
(``--certain-precision``) and the round records read this set; AP50 comes with its bootstrap interval
(``ap50_ci95``), which says how far a figure on it can be trusted.

On a growing set the AP of two rounds is measured on different images: before a round trains, the
model that ends the previous round is evaluated again on the grown set, and the round-to-round
stop compares that figure with the new round's (:func:`compare_on_grown_set`).
"""

from __future__ import annotations

import argparse
import logging
import math

import numpy as np

from datasets.build import DataOptions, labelled_indices, split_was_drawn
from datasets.loaders import eval_loader
from datasets.records import RecordSet
from net.models import is_mask_model
from tools.engine.coco_eval import COCOEvaluator
from tools.engine.epoch import evaluate
from tools.engine.evaluator import AP_KEYS
from tools.engine.voc_eval import VOCEvaluator
from tools.runtime import dist

logger = logging.getLogger(__name__)

DEFAULT_FRACTION = 0.25  # the labelling-tool loop's share, where the data has no evaluation split
WHY = "held out for evaluation (--eval-from-labels): labelled by the human, never trained on"


def settle(args: argparse.Namespace, train_set: RecordSet, val_set: RecordSet) -> tuple[RecordSet, RecordSet]:
    """The run's pool and its first evaluation set. Without ``--eval-from-labels``: as loaded. With
    it (or by default in the labelling-tool loop, ``--oracle none``, where the data has no evaluation
    split of its own): the loaded images are one pool, and the evaluation set is the held-out share
    of its initial label pool.

    Raises:
        ValueError: one line: the data has an evaluation split of its own, the run has no rounds or
            runs under torchrun, or the initial pool is too small to hold out one image.
    """
    drawn = split_was_drawn(DataOptions.of(vars(args)))
    if args.eval_from_labels is None:
        if getattr(args, "oracle", None) != "none" or not drawn or args.strategy == "none":
            return train_set, val_set
        args.eval_from_labels = DEFAULT_FRACTION
        logger.info(
            "--oracle none and no evaluation split in the data: evaluating on %g of the images the human "
            "labels (--eval-from-labels %g)",
            DEFAULT_FRACTION,
            DEFAULT_FRACTION,
        )
    fraction = args.eval_from_labels
    if not drawn:
        raise ValueError(
            f"--eval-from-labels {fraction}: the data has an evaluation split of its own ({val_set.image_root}, "
            f"{len(val_set)} images), which wins; drop the option, or the split"
        )
    if args.strategy == "none":
        raise ValueError(
            "--eval-from-labels holds out labels round by round: it needs a --strategy other than none"
        )
    if dist.launched():
        raise ValueError("--eval-from-labels works in a single process, not under torchrun")
    pool = RecordSet(
        list(train_set.records) + list(val_set.records),
        train_set.classes,
        train_set.image_root,
        train_set.label_to_cat_id,
        train_set.report,
    )
    held = first_held_out(args, pool)
    records = {r.image_id: r for r in pool.records}
    return pool, RecordSet([records[i] for i in held], pool.classes, pool.image_root, pool.label_to_cat_id)


def initial_indices(args: argparse.Namespace, train_set: RecordSet) -> list[int]:
    """The initial label pool: the folders that hold labels (``--voc-unlabelled-roots``), else a
    seeded draw of ``--initial`` images."""
    from asm.pools import initial_pool

    given = labelled_indices(train_set, DataOptions.of(vars(args)))
    return given or initial_pool(len(train_set), args.initial, args.seed)


def first_held_out(args: argparse.Namespace, pool: RecordSet) -> list[str]:
    """The images of the initial label pool held out (a seeded ``--eval-from-labels`` share, rounded
    down, in pool order).

    Raises:
        ValueError: the share of the initial pool is not one image.
    """
    initial = initial_indices(args, pool)
    count = held_count(len(initial), args.eval_from_labels)
    if count < 1:
        least = math.ceil(1 / args.eval_from_labels)
        raise ValueError(
            f"--eval-from-labels {args.eval_from_labels} of an initial pool of {len(initial)} images holds out "
            f"none: give --initial of at least {least} images"
        )
    picked = np.random.default_rng([args.seed, 61]).permutation(len(initial))[:count]
    return [pool.records[initial[k]].image_id for k in sorted(picked)]


def held_count(labelled: int, fraction: float) -> int:
    """How many of ``labelled`` images are held out (rounded down; the float error of e.g. 0.3 x 10
    does not lose one)."""
    return math.floor(fraction * labelled + 1e-9)


def hold_out_round(run, results) -> list[str]:
    """After a round's pools moved: hold out the share of the images that joined the label pool that
    brings the held-out set to ``--eval-from-labels`` of all the human labelled (seeded by round);
    their records leave the round's training. Returns their ids (none without the option)."""
    fraction = getattr(run.args, "eval_from_labels", None)
    if fraction is None:
        return []
    asm = run.asm
    joined = [r.sa.image_id for r in results if asm.labelled.get(r.sa.image_id) is r.sa]
    want = held_count(len(asm.labelled) + len(asm.held_out), fraction) - len(asm.held_out)
    count = max(0, min(want, len(joined)))
    picked = np.random.default_rng([run.args.seed, 61, asm.round]).permutation(len(joined))[:count]
    ids = [joined[k] for k in sorted(picked)]
    asm.hold_out(ids, WHY)
    run.train_records = [r for r in run.train_records if r.image_id not in asm.held_out]
    return ids


def refresh_evaluation(run, image_root: str) -> None:
    """Evaluate on the held-out images from now on: the trainer's loader (and a COCO evaluator's
    ground truth) rebuilt from :attr:`asm.pools.ASMState.held_out`."""
    args, t = run.args, run.trainer
    held = RecordSet(list(run.asm.held_out.values()), run.classes, image_root)
    t.val_loader = eval_loader(
        held.records,
        image_root,
        args.eval_batch_size,
        args.workers,
        is_mask_model(args.model),
        pin_memory=t.device.type == "cuda",
    )
    for k, e in enumerate(t.evaluators):
        if isinstance(e, COCOEvaluator):
            t.evaluators[k] = COCOEvaluator(held, e.iou_types)


def compare_on_grown_set(run) -> float | None:
    """The model that ended the previous round, evaluated again on the grown set; the round-to-round
    stop's last figure becomes this one, so that it compares two models on the same images. None
    before the first round has finished."""
    stopper = run.round_stopper
    if not stopper.history:
        return None
    t = run.trainer
    ap = evaluate(t.model, t.val_loader, [VOCEvaluator(run.classes)], t.device)[AP_KEYS[run.args.ap]]
    stopper.history[-1] = (stopper.history[-1][0], float(ap))
    return float(ap)
