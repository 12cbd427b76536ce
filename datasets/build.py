"""Build the training pool and the evaluation split from command-line options."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from datasets.coco import EXPORT_JSON, export_splits, load_coco
from datasets.common import read_lines, same_files, seeded_split
from datasets.exports import load_cvat, load_label_studio, load_labelme, split_by_names
from datasets.folder import export_folders, folder_splits, image_stems, load_folder, yolo_classes
from datasets.records import RecordSet
from datasets.synthetic import load_demo
from datasets.voc import load_voc, read_split, split_file, voc_layout, xml_stems

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataOptions:
    """Where the data is and how to read it: the flags of :func:`add_data_args` (same names, same
    defaults), and ``output_dir``, under whose ``splits/`` seeded split lists are written."""

    dataset: str = "demo"
    voc_roots: tuple[str, ...] = ()
    voc_train_split: str = "trainval"
    voc_unlabelled_roots: tuple[str, ...] = ()
    voc_unlabelled_split: str = "trainval"
    voc_val_root: str | None = None
    voc_val_split: str = "test"
    voc_annotations_dir: str | None = None
    voc_images_dir: str | None = None
    voc_classes: tuple[str, ...] | None = None
    discover_classes: bool = False
    skip_unknown_classes: bool = False
    coco_root: str | None = None
    coco_train_json: str | None = None
    coco_train_images: str | None = None
    coco_val_json: str | None = None
    coco_val_images: str | None = None
    drop_empty: bool = False
    folder_root: str | None = None
    folder_classes: tuple[str, ...] | None = None
    allow_missing_labels: bool = False
    labelme_root: str | None = None
    cvat_root: str | None = None
    cvat_images: str | None = None
    ls_json: str | None = None
    ls_images: str | None = None
    classes: tuple[str, ...] | None = None
    val_fraction: float = 0.2
    no_cache: bool = False
    demo_train: int = 500
    demo_val: int = 100
    data_seed: int = 0
    cache_dir: str | None = None
    output_dir: str | None = None  # None: the current folder

    @classmethod
    def of(cls, options: Mapping) -> DataOptions:
        """The data options among ``options`` (a run's config, ``vars(args)``); the others are ignored
        and the missing ones take their defaults (a config older than an option)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in names})


D = DataOptions()  # the defaults of the flags


def data_actions() -> list[argparse.Action]:
    """The argparse actions of the data options (:func:`add_data_args`): their flags and defaults."""
    probe = argparse.ArgumentParser(add_help=False)
    add_data_args(probe)
    return [a for a in probe._actions if a.option_strings]


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """Data options shared by ``train_asm_one.py`` and the tools."""
    g = parser.add_argument_group("data")
    g.add_argument(
        "--dataset",
        choices=DATASETS,
        default=D.dataset,
        help="demo: built-in synthetic shapes (default); voc: VOC XML (VOCdevkit, flat, or LabelImg's "
        "XML beside each image); coco: JSON files; folder: images with YOLO txt labels or per-instance "
        "mask PNGs; labelme: LabelMe JSON files; cvat: a 'CVAT for images 1.1' export; labelstudio: a "
        "Label Studio JSON export and its images",
    )
    g.add_argument(
        "--voc-roots",
        nargs="+",
        default=list(D.voc_roots),
        help="VOC roots of the training pool, e.g. VOCdevkit/VOC2007",
    )
    g.add_argument("--voc-train-split", default=D.voc_train_split, help="split name or a file of image ids")
    g.add_argument(
        "--voc-unlabelled-roots",
        nargs="+",
        default=list(D.voc_unlabelled_roots),
        help="VOC roots whose images form the unlabelled pool (e.g. VOC2012, as ASM_core); the "
        "--voc-roots images are then the initial label pool",
    )
    g.add_argument("--voc-unlabelled-split", default=D.voc_unlabelled_split)
    g.add_argument(
        "--voc-val-root", default=D.voc_val_root, help="VOC root for evaluation (default: first train root)"
    )
    g.add_argument("--voc-val-split", default=D.voc_val_split, help="split name or a file of image ids")
    g.add_argument(
        "--voc-annotations-dir",
        default=None,
        help="the XML folder of each VOC root when it has another name (e.g. annots); files are matched "
        "by stem",
    )
    g.add_argument(
        "--voc-images-dir", default=None, help="the image folder of each VOC root when it has another name"
    )
    g.add_argument("--voc-classes", nargs="+", default=None, help="class names (default: the 20 VOC classes)")
    g.add_argument("--discover-classes", action="store_true", help="take the class list from the XML files")
    g.add_argument(
        "--skip-unknown-classes", action="store_true", help="count and drop objects of unknown classes"
    )
    g.add_argument(
        "--coco-root",
        default=None,
        help=f"a COCO export (Roboflow): train/ and valid/ (or val/, test/) each with {EXPORT_JSON} "
        "and its images; replaces the four --coco-* file options",
    )
    g.add_argument("--coco-train-json", default=None)
    g.add_argument("--coco-train-images", default=None)
    g.add_argument("--coco-val-json", default=None)
    g.add_argument("--coco-val-images", default=None)
    g.add_argument("--drop-empty", action="store_true", help="drop COCO images without annotations")
    g.add_argument(
        "--folder-root",
        default=None,
        help="--dataset folder: root with images/ + labels/ (YOLO), train/ + valid/ each with images/ + "
        "labels/ (a Roboflow YOLO export, data.yaml beside them), or PNGImages/ + PedMasks/ (mask PNGs)",
    )
    g.add_argument(
        "--folder-classes",
        nargs="+",
        default=None,
        help="class names, or one file of them (.txt one per line, or a YAML 'names' such as "
        "ultralytics' coco128.yaml); default: YOLO classes.txt or data.yaml, masks 'object'",
    )
    g.add_argument(
        "--allow-missing-labels",
        action="store_true",
        help="accept more than half the images without a label file (--dataset folder) or losing every "
        "box while loading (degenerate boxes, unknown classes)",
    )
    g.add_argument(
        "--labelme-root", default=None, help="--dataset labelme: the folder of the LabelMe JSON files"
    )
    g.add_argument(
        "--cvat-root",
        "--cvat-xml",
        default=None,
        help="--dataset cvat: a 'CVAT for images 1.1' export: its folder (annotations.xml and images/) or "
        "the XML file",
    )
    g.add_argument(
        "--cvat-images",
        default=None,
        help="--dataset cvat: the image folder, when not images/ beside the XML",
    )
    g.add_argument("--ls-json", default=None, help="--dataset labelstudio: the Label Studio JSON export")
    g.add_argument(
        "--ls-images",
        default=None,
        help="--dataset labelstudio: the folder of its images (found by path, or by the name an upload had)",
    )
    g.add_argument(
        "--classes",
        nargs="+",
        default=None,
        help="--dataset labelme/cvat/labelstudio: class names in label order (default: CVAT's <meta> "
        "labels, else every label found, sorted); other labels are an error unless --skip-unknown-classes",
    )
    g.add_argument(
        "--val-fraction",
        type=float,
        default=D.val_fraction,
        help="without split files: share of images held out for evaluation (seeded by --data-seed; the "
        "lists are written to <output-dir>/splits for reuse)",
    )
    g.add_argument(
        "--no-cache", action="store_true", help="read every annotation file again (no record cache)"
    )
    g.add_argument("--demo-train", type=int, default=D.demo_train, help="demo training images")
    g.add_argument("--demo-val", type=int, default=D.demo_val, help="demo validation images")
    g.add_argument("--data-seed", type=int, default=D.data_seed, help="seed of the demo dataset")
    g.add_argument(
        "--cache-dir", default=None, help="record/demo cache (default $ASM_CACHE_DIR or ~/.cache/asm_trainer)"
    )


DATASETS = ("demo", "voc", "coco", "folder", "labelme", "cvat", "labelstudio")
DATA_FLAG = {
    "demo": "--demo-train",
    "voc": "--voc-roots",
    "coco": "--coco-root or --coco-*-images",
    "folder": "--folder-root",
    "labelme": "--labelme-root",
    "cvat": "--cvat-root",
    "labelstudio": "--ls-json and --ls-images",
}  # the option that says where each kind of data is


def run_data_options(config: dict, run_dir: str) -> DataOptions:
    """The data options a run was trained with (its checkpoint's config; options it predates take
    their defaults), with ``output_dir`` its folder, so that seeded split lists are the run's own."""
    return dataclasses.replace(DataOptions.of(config), output_dir=run_dir)


def build_datasets(opts: DataOptions) -> tuple[RecordSet, RecordSet]:
    """Return ``(train pool, evaluation split)`` as record sets with the same classes.

    Raises:
        ValueError: a missing option, or a split without images (the message names the folder, what
            the load report found, and the fix).
    """
    train, val = _load(opts)
    for name, data in (("training", train), ("evaluation", val)):
        if not len(data):
            found = data.report.counts if data.report is not None else {}
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(found.items())) or "no files listed"
            raise ValueError(
                f"no {name} images found under {data.image_root} ({why}); check {DATA_FLAG[opts.dataset]} "
                f"/ the layout (README 'Your own data')"
                + ("; load_report.json in the output folder lists every file" if found else "")
            )
    for name, data in (("training", train), ("evaluation", val)):
        lost = data.report.counts.get("labels_lost", 0) if data.report is not None else 0
        if lost > MAX_LOST * len(data) and not opts.allow_missing_labels:
            example = data.report.of("labels_lost")[0][0]
            raise ValueError(
                f"{lost} of {len(data)} {name} images lost every box while loading (e.g. {example}; "
                f"{_reasons(data)}): the boxes or the class list do not fit the data. Fix them, or "
                "pass --allow-missing-labels to train anyway"
            )
    if not train.num_boxes():
        keyless = train.report.of("no_annotations_key") if train.report is not None else []
        raise ValueError(
            f"{keyless[0][0]}: no 'annotations' key, so its {len(train)} images hold no boxes; export the "
            "file with its annotations (COCO instances JSON)"
            if keyless
            else f"the training images under {train.image_root} hold no boxes at all ({len(train)} images); "
            "check the labels' location and format (README 'Your own data')"
        )
    shared = same_files(
        [os.path.join(train.image_root, r.file_name) for r in train.records],
        [os.path.join(val.image_root, r.file_name) for r in val.records],
    )
    if shared:
        a, b = sorted(shared)[0]
        example = a if a == b else f"{a} = {b}"
        logger.warning(
            "training and evaluation share %d of %d evaluation images (by content, e.g. %s): AP will be "
            "optimistic; give a separate validation split",
            len(shared),
            len(val),
            example,
        )
    return train, val


MAX_LOST = 0.5  # more images than this share losing every box while loading: the data does not fit


def _reasons(data: RecordSet) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(data.report.counts.items()))


def _load(opts: DataOptions) -> tuple[RecordSet, RecordSet]:
    if opts.dataset == "demo":
        kw = dict(
            seed=opts.data_seed, num_train=opts.demo_train, num_val=opts.demo_val, cache_dir=opts.cache_dir
        )
        return load_demo("train", **kw), load_demo("val", **kw)
    if opts.dataset == "voc":
        return _load_voc(opts)
    if opts.dataset == "folder":
        return _load_folder(opts)
    if opts.dataset in EXPORTS:
        return _load_export(opts)
    return _load_coco(opts)


EXPORTS = ("labelme", "cvat", "labelstudio")  # a labelling tool's export: one set, split by seed


def _load_export(opts: DataOptions) -> tuple[RecordSet, RecordSet]:
    """A LabelMe folder, a CVAT export or a Label Studio export, split into train and val by
    :func:`datasets.common.seeded_split` (the lists are written for reuse)."""
    kw = dict(classes=opts.classes, skip_unknown_classes=opts.skip_unknown_classes)
    if opts.dataset == "labelme":
        if not opts.labelme_root:
            raise ValueError("--dataset labelme needs --labelme-root")
        data = load_labelme(opts.labelme_root, cache_dir=opts.cache_dir, **kw)
    elif opts.dataset == "cvat":
        if not opts.cvat_root:
            raise ValueError("--dataset cvat needs --cvat-root (or --cvat-xml)")
        data = load_cvat(opts.cvat_root, images=opts.cvat_images, **kw)
    else:
        if not opts.ls_json or not opts.ls_images:
            raise ValueError(
                "--dataset labelstudio needs --ls-json (the export) and --ls-images (its images)"
            )
        data = load_label_studio(opts.ls_json, opts.ls_images, **kw)
    if not len(data):
        return data, dataclasses.replace(data, report=None)  # build_datasets names the cause
    files = seeded_split(
        [r.image_id for r in data.records], opts.val_fraction, opts.data_seed, _splits_dir(opts)
    )
    return split_by_names(data, *(read_lines(f) for f in files))


def _load_voc(opts: DataOptions) -> tuple[RecordSet, RecordSet]:
    if not opts.voc_roots:
        raise ValueError("--dataset voc needs --voc-roots")
    folders = (opts.voc_annotations_dir, opts.voc_images_dir)
    kw = dict(
        classes=opts.voc_classes,
        skip_unknown_classes=opts.skip_unknown_classes,
        cache_dir=False if opts.no_cache else opts.cache_dir,
        folders=folders,
    )
    first = opts.voc_roots[0]
    voc_layout(first, folders)  # a clear error for a folder of neither layout
    train_split, val_split = _voc_splits(opts, first, folders)
    roots = list(opts.voc_roots) + list(opts.voc_unlabelled_roots)
    splits = [train_split] * len(opts.voc_roots) + [opts.voc_unlabelled_split] * len(
        opts.voc_unlabelled_roots
    )
    train = load_voc(roots, splits, discover_classes=opts.discover_classes, **kw)
    if opts.discover_classes:
        kw["classes"] = train.classes
    val = load_voc(opts.voc_val_root or first, val_split, **kw)
    return train, val


def _voc_splits(opts: DataOptions, first: str, folders) -> tuple[str, str]:
    """The split names to read: the options', or a seeded split written for a root without split files."""
    train_split, val_split = opts.voc_train_split, opts.voc_val_split
    if opts.voc_val_root is not None or os.path.isfile(split_file(first, train_split)):
        return train_split, val_split
    sets = os.path.join(first, "ImageSets", "Main")
    if os.path.isdir(sets):  # a VOCdevkit folder: a split name that is not there is a typo, not "no splits"
        names = sorted(n[:-4] for n in os.listdir(sets) if n.endswith(".txt") and "_" not in n)
        raise ValueError(
            f"{split_file(first, train_split)}: no such split file (--voc-train-split "
            f"{train_split!r}); {sets} has {names or 'no split files'}"
        )
    return seeded_split(xml_stems(first, folders), opts.val_fraction, opts.data_seed, _splits_dir(opts))


def _load_coco(opts: DataOptions) -> tuple[RecordSet, RecordSet]:
    files = (opts.coco_train_json, opts.coco_train_images, opts.coco_val_json, opts.coco_val_images)
    if opts.coco_root:
        if any(files):
            raise ValueError(
                "--coco-root finds the JSON files and image folders itself; drop the --coco-train-* "
                "and --coco-val-* options (or drop --coco-root)"
            )
        train_dir, val_dir = export_splits(opts.coco_root)
        files = (os.path.join(train_dir, EXPORT_JSON), train_dir, os.path.join(val_dir, EXPORT_JSON), val_dir)
    names = ("coco-train-json", "coco-train-images", "coco-val-json", "coco-val-images")
    for name, value in zip(names, files):
        if not value:
            raise ValueError(
                f"--dataset coco needs --{name} (or --coco-root for an export with train/ and valid/)"
            )
    train = load_coco(files[0], files[1], drop_empty=opts.drop_empty)
    val = load_coco(files[2], files[3])
    if train.label_to_cat_id != val.label_to_cat_id or train.classes != val.classes:
        raise ValueError(
            f"{files[0]} and {files[2]} have different categories ({list(train.classes)} vs "
            f"{list(val.classes)})"
        )
    return train, val


def _load_folder(opts: DataOptions) -> tuple[RecordSet, RecordSet]:
    """``images/train*`` + ``images/val*`` when both are present; else a seeded split of the one split
    folder (COCO128's ``images/train2017``) or of the flat folder."""
    root = opts.folder_root
    if not root:
        raise ValueError("--dataset folder needs --folder-root")
    kw = {"allow_missing_labels": opts.allow_missing_labels}
    exported = export_folders(root)
    if exported is not None:  # Roboflow: train/ and valid/ each with images/ + labels/, data.yaml beside them
        train = load_folder(exported[0], classes=opts.folder_classes or yolo_classes(root), **kw)
        return train, load_folder(exported[1], classes=train.classes, **kw)
    splits = folder_splits(root)
    train_split = next((s for s in splits if s.startswith("train")), None)
    val_split = next((s for s in splits if s.startswith("val")), None)
    if train_split and val_split:
        train = load_folder(root, split=train_split, classes=opts.folder_classes, **kw)
        return train, load_folder(root, split=val_split, classes=train.classes, **kw)
    if len(splits) > 1 and train_split is None:
        raise ValueError(
            f"{os.path.join(root, 'images')}: split folders {splits}, none named train*; name the "
            "training folder train (and the validation folder val), or keep only one"
        )
    split = train_split or (splits[0] if splits else None)
    train_file, val_file = seeded_split(
        image_stems(root, split), opts.val_fraction, opts.data_seed, _splits_dir(opts)
    )
    train = load_folder(root, read_split(root, train_file), split=split, classes=opts.folder_classes, **kw)
    return train, load_folder(root, read_split(root, val_file), split=split, classes=train.classes, **kw)


def _splits_dir(opts: DataOptions) -> str:
    return os.path.join(opts.output_dir or ".", "splits")


def split_was_drawn(opts: DataOptions) -> bool:
    """Whether the loaded data's evaluation split was drawn by seed (the data has none of its own:
    :func:`datasets.common.seeded_split` wrote it under the run's folder)."""
    return opts.dataset != "demo" and os.path.isfile(os.path.join(_splits_dir(opts), "val.txt"))


def labelled_indices(data: RecordSet, opts: DataOptions) -> list[int] | None:
    """Indices of the initial label pool when it is given by folders (``--voc-unlabelled-roots``)."""
    if opts.dataset != "voc" or not opts.voc_unlabelled_roots:
        return None
    prefixes = tuple(
        os.path.relpath(os.path.abspath(r), data.image_root).replace(os.sep, "/") + "/"
        for r in opts.voc_roots
    )
    return [i for i, r in enumerate(data.records) if r.file_name.startswith(prefixes)]


MIN_EVAL_BOXES, MIN_EVAL_IMAGES = 30, 20  # an evaluation split below either measures AP coarsely


def boxes_per_class(data: RecordSet) -> dict[str, int]:
    """Boxes of each class (difficult ones included), by class name."""
    labels = [r.labels for r in data.records if len(r)]
    counts = np.bincount(np.concatenate(labels), minlength=data.num_classes + 1) if labels else None
    return {c: 0 if counts is None else int(counts[i + 1]) for i, c in enumerate(data.classes)}


def evaluation_warnings(val: RecordSet) -> list[str]:
    """What an evaluation split cannot measure: classes without a box (their AP is not measured and
    the mean leaves them out), and a split too small for a steady AP."""
    per_class = boxes_per_class(val)
    missing = [c for c, n in per_class.items() if n == 0]
    lines = []
    if missing:
        measured = len(per_class) - len(missing)
        lines.append(
            f"the evaluation split has no box of {', '.join(missing)}: "
            f"{'its' if len(missing) == 1 else 'their'} AP is not measured, and the mean AP is over the "
            f"other {measured} of {len(per_class)} classes"
        )
    if val.num_boxes() < MIN_EVAL_BOXES or len(val) < MIN_EVAL_IMAGES:
        lines.append(
            f"the evaluation split is small ({len(val)} images, {val.num_boxes()} boxes; under "
            f"{MIN_EVAL_IMAGES} images or {MIN_EVAL_BOXES} boxes): its AP moves a lot with one image; give a "
            "larger validation split if you can"
        )
    return lines


def describe(name: str, data: RecordSet) -> str:
    empty = sum(len(r) == 0 for r in data.records)
    return (
        f"{name}: {len(data)} images ({empty} without boxes), {data.num_boxes()} boxes, "
        f"{data.num_classes} classes, images under {data.image_root}"
    )
