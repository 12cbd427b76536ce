"""Draw what a model sees: a split's ground truth (green) and a checkpoint's predictions (blue, with
scores and, for Mask R-CNN, masks); or the predictions on a folder of your own photos.

    python visualize.py --checkpoint outputs/run/best.pth              # that run's own val split
    python visualize.py --checkpoint outputs/run/best.pth --images photos/ --out viz/
    python visualize.py --dataset voc --voc-roots data/bccd --split train   # ground truth only

With ``--checkpoint`` and no ``--dataset``, the data, classes and split lists are the run's (its
checkpoint's config and ``splits/``). Nothing is written outside ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np
import torch

from datasets import AnnotationError
from datasets.build import DataOptions, add_data_args, build_datasets, run_data_options
from datasets.orientation import open_upright
from datasets.records import RecordSet
from datasets.report import LoadReport
from tools.engine.checkpoint import folder_of
from tools.engine.inference import folder_records, model_from_checkpoint, predict_tta
from tools.loop.config import parse_checked
from tools.runtime.drawing import GT_COLOR, PRED_COLOR, contact_sheet, draw_boxes, legend
from tools.runtime.process import keep_freed_memory

logger = logging.getLogger("visualize")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.set_defaults(
        dataset=None, output_dir=None
    )  # with a checkpoint: the run's data and split lists; else the demo
    p.add_argument(
        "--checkpoint",
        default=None,
        help="a checkpoint or a run's folder (its best.pth): draw its predictions too (else ground truth only)",
    )
    p.add_argument(
        "--images", default=None, help="a folder of photos to draw the checkpoint's predictions on"
    )
    p.add_argument("--split", choices=("train", "val"), default="val")
    p.add_argument("--num", type=int, default=8, help="images to draw (the first of the split or folder)")
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--out", default="viz", help="folder for one PNG per image and sheet.png")
    return p


def load_images(args: argparse.Namespace, opts: DataOptions, classes: tuple[str, ...] | None) -> RecordSet:
    """The records to draw: the photos under ``--images`` (no ground truth) or a split of ``opts``' data."""
    if args.images:
        report = LoadReport()
        data = RecordSet(
            folder_records(args.images, report), classes, os.path.abspath(args.images), report=report
        )
        report.log(f"images under {args.images}")
        return data
    data = build_datasets(opts)[0 if args.split == "train" else 1]
    if classes is not None and data.classes != classes:
        raise ValueError(
            f"{args.checkpoint} was trained on classes {list(classes)}, the data has {list(data.classes)}"
        )
    return data


def draw(args: argparse.Namespace) -> str:
    """Draw ``args.num`` images with their ground truth and, with a checkpoint, the predictions at
    ``args.score_thresh``; one PNG each and ``sheet.png`` in ``args.out``. Returns the folder."""
    model, classes = None, None
    if args.checkpoint:
        model, ckpt = model_from_checkpoint(args.checkpoint, torch.device("cpu"))
        classes = tuple(ckpt.classes)
        model.roi_heads.score_thresh = 0.0  # keep every score, to report the best one when none passes
    elif args.images:
        raise ValueError("--images draws a model's predictions: pass --checkpoint too")
    if args.checkpoint and args.dataset is None:  # the data and split lists of the run that wrote it
        opts = run_data_options(ckpt.config, folder_of(args.checkpoint))
    else:  # split lists made here go under --out, never the working folder
        opts = DataOptions.of(
            {**vars(args), "dataset": args.dataset or "demo", "output_dir": args.output_dir or args.out}
        )
    data = load_images(args, opts, classes)
    os.makedirs(args.out, exist_ok=True)
    tiles, best, shown = [], 0.0, 0
    for record in data.records[: args.num]:
        image = open_upright(os.path.join(data.image_root, record.file_name)).convert("RGB")
        drawn = (
            draw_boxes(image, record.boxes, record.labels, data.classes, GT_COLOR) if len(record) else image
        )
        if model is not None:
            pred = predict_tta(model, torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255)
            best = max(best, float(pred["scores"].max(initial=0.0)))
            keep = pred["scores"] >= args.score_thresh
            shown += int(keep.sum())
            drawn = draw_boxes(
                drawn,
                pred["boxes"][keep],
                pred["labels"][keep],
                data.classes,
                PRED_COLOR,
                scores=pred["scores"][keep],
                masks=pred["masks"][keep] if "masks" in pred else None,
            )
        drawn.save(os.path.join(args.out, os.path.splitext(record.file_name.replace("/", "_"))[0] + ".png"))
        tiles.append(drawn)
    if model is not None and not shown:
        logger.warning(
            "no prediction scored >= --score-thresh %g on %d images (best score %.3f); lower "
            "--score-thresh to see them",
            args.score_thresh,
            len(tiles),
            best,
        )
    key = [] if args.images else [("ground truth", GT_COLOR)]
    if model is not None:
        key.append((f"prediction >= {args.score_thresh:g}", PRED_COLOR))
    names = [os.path.basename(r.file_name) for r in data.records[: args.num]]
    contact_sheet(tiles, captions=names, key=legend(key, 4 * 256)).save(os.path.join(args.out, "sheet.png"))
    return os.path.abspath(args.out)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_checked(get_args_parser(), argv)
    keep_freed_memory()  # CPU detection faults fewer pages in (tools.runtime.process)
    try:
        print(draw(args))
    except (AnnotationError, ValueError, FileNotFoundError) as e:
        logger.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
