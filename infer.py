"""Run a checkpoint over images and write COCO results JSON (``tools/engine/inference.py``).

    python infer.py --checkpoint outputs/run/best.pth --images photos/ --out results.json
    python infer.py --checkpoint outputs/run/best.pth --split val --out results.json   # the run's own val split
    python infer.py --checkpoint outputs/run/best.pth --dataset demo --split val --out results.json \\
        --tta-scales 0.8 1.0 1.2 --tta-flip
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import torch
from tqdm import tqdm

from datasets import AnnotationError
from datasets.atomic import atomic_write_text
from datasets.build import DataOptions, add_data_args, build_datasets, data_actions, run_data_options
from datasets.coco import records_to_coco
from datasets.records import RecordSet
from datasets.report import LoadReport
from datasets.torch_data import read_image
from tools.engine.checkpoint import folder_of
from tools.engine.coco_eval import to_coco_results
from tools.engine.inference import folder_records, model_from_checkpoint, predict_tta
from tools.loop.config import parse_checked
from tools.runtime.process import keep_freed_memory

logger = logging.getLogger("infer")
EXIT_NO_IMAGES = 1  # every image was skipped (unreadable): results hold nothing


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(p)
    p.set_defaults(dataset=None)  # the data of the run that wrote --checkpoint, unless given
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a train_asm_one.py checkpoint (last.pth / best.pth), or a run's folder (its best.pth)",
    )
    p.add_argument("--images", default=None, help="an image folder (instead of a dataset split)")
    p.add_argument("--split", choices=("train", "val"), default="val", help="dataset split to run on")
    p.add_argument("--out", required=True, help="COCO results JSON to write")
    p.add_argument("--score-thresh", type=float, default=0.05)
    p.add_argument("--tta-scales", type=float, nargs="+", default=[1.0])
    p.add_argument("--tta-flip", action="store_true")
    p.add_argument(
        "--tta-merge",
        choices=("nms", "vote"),
        default="nms",
        help="nms: keep the best box of each cluster; vote: the score-weighted mean of the cluster",
    )
    p.add_argument("--tta-iou", type=float, default=0.5)
    p.add_argument("--device", default="auto")
    return p


def infer(args: argparse.Namespace) -> int:
    """Run ``args.checkpoint`` over an image folder or a dataset split and write ``args.out``
    (``infer.py``'s options); 0 on success, 2 on bad input (logged, naming the file)."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    try:
        model, ckpt = model_from_checkpoint(args.checkpoint, device)
        label_to_cat = {int(k): int(v) for k, v in ckpt.label_to_cat_id.items()}
        data = images_to_read(args, ckpt, label_to_cat)
    except (AnnotationError, ValueError, FileNotFoundError, KeyError) as e:
        logger.error("%s", e)
        return 2
    model.roi_heads.score_thresh = args.score_thresh
    gt = records_to_coco(data)
    results, skipped = detect_all(args, model, data, label_to_cat, [im["id"] for im in gt["images"]], device)
    atomic_write_text(args.out, json.dumps(results))
    if not results:  # pycocotools' loadRes([]) fails with an IndexError: say so, and what to change
        logger.warning(
            "no detection scored >= --score-thresh %g on %d images, so %s holds an empty list, which "
            "pycocotools' COCO.loadRes cannot read (an IndexError); lower --score-thresh (e.g. 0.001) or "
            "train longer",
            args.score_thresh,
            len(data),
            args.out,
        )
    if args.dataset != "coco" or args.images:
        atomic_write_text(args.out + ".gt.json", json.dumps(gt))
    done = len(data) - len(skipped)
    if args.images:  # the files the folder scan already left out (header unreadable, missing, too large)
        skipped += [source for _, source, _ in data.report.entries]
    logger.info(
        "%d detections on %d images -> %s%s",
        len(results),
        done,
        args.out,
        f"; {len(skipped)} images skipped" if skipped else "",
    )
    summary = {"images": done, "detections": len(results), "skipped": len(skipped)}
    print(json.dumps({**summary, "skipped_files": skipped[:20], "out": os.path.abspath(args.out)}))
    if not done:
        logger.error(
            "no image could be read: %d skipped (first: %s); nothing was detected",
            len(skipped),
            ", ".join(skipped[:3]) or "-",
        )
        return EXIT_NO_IMAGES
    return 0


def images_to_read(args: argparse.Namespace, ckpt, label_to_cat: dict[int, int]) -> RecordSet:
    """The folder's images (``--images``), or a split of the dataset: the data flags' or, without
    ``--dataset``, the run's that wrote the checkpoint (``ckpt``). Raises ValueError for other classes."""
    classes = tuple(ckpt.classes)
    if args.images:
        report = LoadReport()
        records = folder_records(args.images, report)
        data = RecordSet(records, classes, os.path.abspath(args.images), label_to_cat, report=report)
        report.log(f"images under {args.images}")
        return data
    if args.dataset is None:  # the data and split lists of the run that wrote the checkpoint
        opts = run_data_options(ckpt.config, folder_of(args.checkpoint))
    else:
        opts = DataOptions.of(vars(args))
    data = build_datasets(opts)[0 if args.split == "train" else 1]
    if data.label_to_cat_id != label_to_cat or data.classes != classes:
        raise ValueError(f"{args.checkpoint} was trained on classes {classes}, the data has {data.classes}")
    return data


def detect_all(args, model, data: RecordSet, label_to_cat, coco_ids, device) -> tuple[list[dict], list[str]]:
    """COCO results of every image (with ``--tta-*``), and the files that would not decode."""
    results, skipped = [], []
    for record, image_id in tqdm(list(zip(data.records, coco_ids)), desc="infer", disable=None):
        path = os.path.join(data.image_root, record.file_name)
        try:
            image = read_image(path).float().div(255).to(device)
        except (OSError, RuntimeError, ValueError) as e:  # its header read, its pixels do not decode
            logger.warning("%s: cannot decode (%s); skipped", path, str(e).splitlines()[0][:200])
            skipped.append(record.file_name)
            continue
        out = predict_tta(model, image, args.tta_scales, args.tta_flip, args.tta_merge, args.tta_iou)
        results += to_coco_results([record], [out], label_to_cat, [image_id], with_masks="masks" in out)
    return results, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_checked(get_args_parser(), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keep_freed_memory()  # CPU detection faults fewer pages in (tools.runtime.process)
    ignored = data_flags_without_dataset(args, sys.argv[1:] if argv is None else argv)
    if ignored:
        logger.error(
            "%s would be ignored: without --dataset, infer.py reads the data of the run that wrote "
            "--checkpoint; add --dataset (demo, voc, coco, folder) to use them, or drop them",
            " ".join(ignored),
        )
        return 2
    return infer(args)


def data_flags_without_dataset(args: argparse.Namespace, argv) -> list[str]:
    """The data options written on the command line while ``--dataset`` is not (they would be ignored)."""
    if args.dataset is not None or args.images:
        return []
    data_flags = {flag for a in data_actions() for flag in a.option_strings} - {"--dataset"}
    return [tok.split("=", 1)[0] for tok in argv if tok.split("=", 1)[0] in data_flags]


if __name__ == "__main__":
    raise SystemExit(main())
