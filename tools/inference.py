"""Inference with a trained checkpoint: the model, test-time augmentation, COCO results files.

Entries of a results file are ``image_id``, the original ``category_id``, ``bbox`` (xywh pixels),
``score`` and, for Mask R-CNN, ``segmentation`` as RLE with ``counts`` a UTF-8 string, so that
pycocotools ``COCO.loadRes`` reads the file. For a COCO split the ids are the file's own; otherwise
images are numbered as :func:`datasets.coco.records_to_coco` numbers them and that ground truth
(or, for a folder, the image list) is written next to the results as ``<out>.gt.json``.

Test-time augmentation: every scale factor of the model's size, each also mirrored with ``flip``;
the detections are merged per class by NMS (``merge="nms"``) or by box voting (``"vote"``: each
box kept by NMS becomes the score-weighted mean of its cluster). ``infer.py`` is the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import torch
from torchvision.ops import batched_nms, box_iou
from tqdm import tqdm

from datasets import AnnotationError
from datasets.build import build_datasets, run_data_options
from datasets.coco import records_to_coco
from datasets.common import IMAGE_EXTENSIONS, read_image_size
from datasets.records import Record, RecordSet, atomic_write_text
from datasets.report import LoadReport
from datasets.torch_data import read_image
from net.models import build_model
from tools.checkpoint import RUN_KEYS, load_checkpoint
from tools.coco_eval import to_coco_results

logger = logging.getLogger(__name__)


def model_from_checkpoint(path: str, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """The detector of a ``train_asm_one.py`` checkpoint, in eval mode, and the checkpoint."""
    ckpt = load_checkpoint(path)
    missing = [k for k in RUN_KEYS if k not in ckpt]
    if missing:
        raise ValueError(
            f"{path}: not a train_asm_one.py checkpoint (no {', '.join(repr(k) for k in missing)}); "
            "pass the last.pth or best.pth of a run"
        )
    cfg = ckpt["config"]
    model = build_model(
        cfg["model"],
        len(ckpt["classes"]) + 1,
        min_size=cfg["min_size"],
        max_size=cfg["max_size"],
        preset=cfg["preset"],
    )
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def folder_records(folder: str, report: LoadReport | None = None) -> list[Record]:
    """Records (no boxes) for every readable image file under ``folder``, sorted by path; the others
    are counted in ``report`` (missing, unreadable, truncated, too large), as training counts them.

    Raises:
        FileNotFoundError: no image file at all under ``folder``.
    """
    report = report if report is not None else LoadReport()
    names = sorted(
        os.path.relpath(os.path.join(d, f), folder).replace(os.sep, "/")
        for d, _, files in os.walk(folder)
        for f in files
        if f.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not names:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    records = []
    for name in names:
        size = read_image_size(os.path.join(folder, name))  # the header only: infer decodes each image once
        if isinstance(size, str):
            report.add(size, os.path.join(folder, name))
            continue
        records.append(Record(name, name, *size))
    return records


@torch.inference_mode()
def predict_tta(
    model, image: torch.Tensor, scales=(1.0,), flip: bool = False, merge: str = "nms", iou: float = 0.5
) -> dict:
    """Detections of one image (float ``[3, H, W]`` in ``[0, 1]``), merged over the augmentations.

    Returns numpy ``boxes`` (original pixels), ``labels``, ``scores`` and, for Mask R-CNN,
    ``masks`` ``[N, H, W]`` probabilities.
    """
    transform = model.transform
    base_min, base_max = transform.min_size, transform.max_size
    width = image.shape[-1]
    parts = []
    try:
        for s in scales:
            transform.min_size = tuple(round(m * s) for m in base_min[-1:])
            transform.max_size = round(base_max * s)
            for mirrored in (False, True) if flip else (False,):
                out = model([image.flip(-1) if mirrored else image])[0]
                if mirrored:
                    out["boxes"] = torch.stack(
                        [
                            width - out["boxes"][:, 2],
                            out["boxes"][:, 1],
                            width - out["boxes"][:, 0],
                            out["boxes"][:, 3],
                        ],
                        1,
                    )
                    if "masks" in out:
                        out["masks"] = out["masks"].flip(-1)
                parts.append(out)
    finally:
        transform.min_size, transform.max_size = base_min, base_max
    merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    keep = batched_nms(merged["boxes"], merged["scores"], merged["labels"], iou)[
        : model.roi_heads.detections_per_img
    ]
    result = {k: v[keep] for k, v in merged.items()}
    if merge == "vote" and len(parts) > 1:
        result["boxes"] = _vote(merged, keep, iou)
    if "masks" in result:
        result["masks"] = result["masks"][:, 0]
    return {k: v.cpu().numpy() for k, v in result.items()}


def _vote(merged: dict, keep: torch.Tensor, iou: float) -> torch.Tensor:
    """Box voting: the score-weighted mean of each kept box's cluster (same class, IoU >= ``iou``)."""
    overlap = box_iou(merged["boxes"][keep], merged["boxes"]) >= iou
    overlap &= merged["labels"][keep][:, None] == merged["labels"][None, :]
    weights = overlap.float() * merged["scores"][None, :]
    return weights @ merged["boxes"] / weights.sum(1, keepdim=True)


def infer(args: argparse.Namespace) -> int:
    """Run ``args.checkpoint`` over an image folder or a dataset split and write ``args.out``
    (``infer.py``'s options); 0 on success, 2 on bad input (logged, naming the file)."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    try:
        model, ckpt = model_from_checkpoint(args.checkpoint, device)
        classes = tuple(ckpt["classes"])
        label_to_cat = {int(k): int(v) for k, v in ckpt["label_to_cat_id"].items()}
        if args.images:
            report = LoadReport()
            data = RecordSet(
                folder_records(args.images, report),
                classes,
                os.path.abspath(args.images),
                label_to_cat,
                report=report,
            )
            report.log(f"images under {args.images}")
        else:
            if args.dataset is None:  # the data and split lists of the run that wrote the checkpoint
                vars(args).update(
                    run_data_options(ckpt["config"], os.path.dirname(os.path.abspath(args.checkpoint)))
                )
            data = build_datasets(args)[0 if args.split == "train" else 1]
            if data.label_to_cat_id != label_to_cat or data.classes != classes:
                raise ValueError(
                    f"{args.checkpoint} was trained on classes {classes}, the data has {data.classes}"
                )
    except (AnnotationError, ValueError, FileNotFoundError, KeyError) as e:
        logger.error("%s", e)
        return 2
    model.roi_heads.score_thresh = args.score_thresh
    gt = records_to_coco(data)
    coco_ids = [im["id"] for im in gt["images"]]
    results = []
    skipped = []
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
    print(
        json.dumps(
            {
                "images": done,
                "detections": len(results),
                "skipped": len(skipped),
                "skipped_files": skipped[:20],
                "out": os.path.abspath(args.out),
            }
        )
    )
    return 0
