"""The efficiency study's datasets: BCCD (VOC; train vs val + test) and Aquarium (a Roboflow YOLOv5
export; train vs valid), each a root of links in the study's folder (the first images only with
``--quick``)."""

from __future__ import annotations

import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from datasets.atomic import atomic_write_text  # noqa: E402

BCCD_CLASSES = ("RBC", "WBC", "Platelets")
AQUARIUM_ROOT = os.path.join(ROOT, "..", "shared", "data", "aquarium")


def bench_root(src: str, out: str, eval_splits: list[str], n_train: int | None, n_eval: int | None) -> str:
    """A VOC root linking to ``src``'s folders, with ``train.txt`` and ``eval.txt`` (the evaluation
    splits joined); ``n_*`` keep only the first images of each split (``--quick``)."""
    root = os.path.join(out, "bccd_root")
    os.makedirs(os.path.join(root, "ImageSets", "Main"), exist_ok=True)
    for name in ("Annotations", "JPEGImages"):
        link = os.path.join(root, name)
        if not os.path.islink(link):
            os.symlink(os.path.abspath(os.path.join(src, name)), link)

    def ids(split: str, n: int | None) -> list[str]:
        with open(os.path.join(src, "ImageSets", "Main", f"{split}.txt"), encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()][:n]

    splits = {"train": ids("train", n_train), "eval": [i for s in eval_splits for i in ids(s, n_eval)]}
    for name, image_ids in splits.items():
        atomic_write_text(os.path.join(root, "ImageSets", "Main", f"{name}.txt"), "\n".join(image_ids) + "\n")
    return root


def aquarium_root(src: str, out: str, n_train: int | None, n_eval: int | None) -> str:
    """A Roboflow YOLO root linking to ``src``'s ``train`` and ``valid`` images and labels (the first
    ``n_*`` of each with ``--quick``) and its ``data.yaml``; ``test`` is left out of the study."""
    root = os.path.join(out, "aquarium_root")
    for split, n in (("train", n_train), ("valid", n_eval)):
        names = sorted(os.listdir(os.path.join(src, split, "images")))[:n]
        for sub in ("images", "labels"):
            os.makedirs(os.path.join(root, split, sub), exist_ok=True)
        for name in names:
            stem = os.path.splitext(name)[0]
            for sub, file in (("images", name), ("labels", stem + ".txt")):
                link, target = os.path.join(root, split, sub, file), os.path.join(src, split, sub, file)
                if os.path.exists(target) and not os.path.islink(link):
                    os.symlink(os.path.abspath(target), link)
    shutil.copyfile(os.path.join(src, "data.yaml"), os.path.join(root, "data.yaml"))
    return root


def study_flags(args) -> list[str]:
    """The data options of ``--study``'s dataset, a root of links in ``--output-dir``.

    Raises:
        FileNotFoundError: the dataset's folder is not where it was named.
    """
    n_train, n_eval = args.quick_images if args.quick else (None, None)
    if args.study == "aquarium":
        if not os.path.isfile(os.path.join(args.aquarium_root, "data.yaml")):
            raise FileNotFoundError(
                f"{args.aquarium_root} is not a Roboflow YOLO export (no data.yaml); pass --aquarium-root"
            )
        root = aquarium_root(os.path.abspath(args.aquarium_root), args.output_dir, n_train, n_eval)
        return ["--dataset", "folder", "--folder-root", root]
    if not os.path.isdir(os.path.join(args.bccd_root, "Annotations")):
        raise FileNotFoundError(
            f"{args.bccd_root} is not a VOC root (no Annotations/); pass --bccd-root or the data options "
            "of train_asm_one.py (--dataset ...)"
        )
    return bccd_flags(
        bench_root(os.path.abspath(args.bccd_root), args.output_dir, args.eval_splits, n_train, n_eval)
    )


def bccd_flags(root: str) -> list[str]:
    return [
        "--dataset",
        "voc",
        "--voc-roots",
        root,
        "--voc-train-split",
        "train",
        "--voc-val-split",
        "eval",
        "--voc-classes",
        *BCCD_CLASSES,
    ]
