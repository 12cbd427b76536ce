"""Build the training pool and the evaluation split from command-line options."""

from __future__ import annotations

import argparse
import os

from datasets.coco import load_coco
from datasets.records import RecordSet
from datasets.synthetic import load_demo
from datasets.voc import load_voc


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """Data options shared by ``train_asm_one.py`` and the tools."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", choices=("demo", "voc", "coco"), default="demo",
                   help="demo: built-in synthetic shapes (default); voc: VOCdevkit roots; coco: JSON files")
    g.add_argument("--voc-roots", nargs="+", default=[], help="VOC roots of the training pool, e.g. VOCdevkit/VOC2007")
    g.add_argument("--voc-train-split", default="trainval")
    g.add_argument("--voc-unlabelled-roots", nargs="+", default=[],
                   help="VOC roots whose images form the unlabelled pool (e.g. VOC2012, as ASM_core); the "
                        "--voc-roots images are then the initial label pool")
    g.add_argument("--voc-unlabelled-split", default="trainval")
    g.add_argument("--voc-val-root", default=None, help="VOC root for evaluation (default: first train root)")
    g.add_argument("--voc-val-split", default="test")
    g.add_argument("--voc-classes", nargs="+", default=None, help="class names (default: the 20 VOC classes)")
    g.add_argument("--discover-classes", action="store_true", help="take the class list from the XML files")
    g.add_argument("--skip-unknown-classes", action="store_true", help="count and drop objects of unknown classes")
    g.add_argument("--coco-train-json", default=None)
    g.add_argument("--coco-train-images", default=None)
    g.add_argument("--coco-val-json", default=None)
    g.add_argument("--coco-val-images", default=None)
    g.add_argument("--drop-empty", action="store_true", help="drop COCO images without annotations")
    g.add_argument("--demo-train", type=int, default=500, help="demo training images")
    g.add_argument("--demo-val", type=int, default=100, help="demo validation images")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the demo dataset")
    g.add_argument("--cache-dir", default=None, help="record/demo cache (default $ASM_CACHE_DIR or ~/.cache/asm_trainer)")


def build_datasets(args: argparse.Namespace) -> tuple[RecordSet, RecordSet]:
    """Return ``(train pool, evaluation split)`` as record sets with the same classes."""
    if args.dataset == "demo":
        kw = dict(seed=args.data_seed, num_train=args.demo_train, num_val=args.demo_val, cache_dir=args.cache_dir)
        return load_demo("train", **kw), load_demo("val", **kw)
    if args.dataset == "voc":
        if not args.voc_roots:
            raise ValueError("--dataset voc needs --voc-roots")
        kw = dict(classes=args.voc_classes, skip_unknown_classes=args.skip_unknown_classes, cache_dir=args.cache_dir)
        roots = list(args.voc_roots) + list(args.voc_unlabelled_roots)
        splits = [args.voc_train_split] * len(args.voc_roots) + [args.voc_unlabelled_split] * len(args.voc_unlabelled_roots)
        train = load_voc(roots, splits, discover_classes=args.discover_classes, **kw)
        if args.discover_classes:
            kw["classes"] = train.classes
        val = load_voc(args.voc_val_root or args.voc_roots[0], args.voc_val_split, **kw)
        return train, val
    for name in ("coco_train_json", "coco_train_images", "coco_val_json", "coco_val_images"):
        if not getattr(args, name):
            raise ValueError(f"--dataset coco needs --{name.replace('_', '-')}")
    train = load_coco(args.coco_train_json, args.coco_train_images, drop_empty=args.drop_empty)
    val = load_coco(args.coco_val_json, args.coco_val_images)
    if train.label_to_cat_id != val.label_to_cat_id:
        raise ValueError(f"{args.coco_train_json} and {args.coco_val_json} have different categories")
    return train, val


def labelled_indices(data: RecordSet, args: argparse.Namespace) -> list[int] | None:
    """Indices of the initial label pool when it is given by folders (``--voc-unlabelled-roots``)."""
    if args.dataset != "voc" or not args.voc_unlabelled_roots:
        return None
    prefixes = tuple(os.path.relpath(os.path.abspath(r), data.image_root).replace(os.sep, "/") + "/"
                     for r in args.voc_roots)  # fmt: skip
    return [i for i, r in enumerate(data.records) if r.file_name.startswith(prefixes)]


def describe(name: str, data: RecordSet) -> str:
    empty = sum(len(r) == 0 for r in data.records)
    return (f"{name}: {len(data)} images ({empty} without boxes), {data.num_boxes()} boxes, "
            f"{data.num_classes} classes, images under {data.image_root}")
