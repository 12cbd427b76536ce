"""Data as people download it: Roboflow COCO and YOLO exports, VOC folders with their own names,
sub-pixel overshoots, and the same image in two folders."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from datasets.build import DataOptions, build_datasets
from datasets.coco import load_coco
from datasets.common import same_files, sanitize_boxes
from datasets.records import AnnotationError
from datasets.report import LoadReport
from tests.helpers import voc_xml
from tools.runtime.logs import read_jsonl
from train_asm_one import get_args_parser, main

CLASSES = ("Platelets", "RBC", "WBC")
SPLITS = {"train": 10, "valid": 4, "test": 2}


def _args(tmp_path, *argv):
    argv = [*argv, "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    return DataOptions.of(vars(get_args_parser().parse_args(argv)))


def _photo(path, seed, size=(96, 64)):
    """A JPEG of its own content (noise with a bright block), so that no two fixture images are equal."""
    pixels = np.random.default_rng(seed).integers(0, 120, (size[1], size[0], 3), dtype=np.uint8)
    pixels[16:48, 20:60] = 230
    Image.fromarray(pixels).save(path, quality=90)


def _objects(k):
    """(class index from 0, x, y, w, h in pixels of a 96x64 image) of image ``k``."""
    return [(k % 3, 20, 16, 40, 32), ((k + 1) % 3, 65, 30, 31, 34)]  # the second touches the right edge


def roboflow_coco(root):
    """A COCO export exactly as Roboflow writes it: category 0 is the dataset (the others'
    supercategory, no boxes), ids from 0, ``"segmentation": []`` on every box, hashed file names."""
    seed = 0
    for split, n in SPLITS.items():
        os.makedirs(root / split)
        cats = [{"id": 0, "name": "cells-9x2a", "supercategory": "none"}]
        cats += [{"id": i + 1, "name": c, "supercategory": "cells-9x2a"} for i, c in enumerate(CLASSES)]
        images, anns = [], []
        for k in range(n):
            name = f"BloodImage_{seed:05d}_jpg.rf.{seed:08x}.jpg"
            _photo(root / split / name, seed)
            images.append(
                {
                    "id": k,
                    "license": 1,
                    "file_name": name,
                    "height": 64,
                    "width": 96,
                    "date_captured": "2026-11-29T10:00:00+00:00",
                }
            )
            for cls, x, y, w, h in _objects(k):
                anns.append(
                    {
                        "id": len(anns),
                        "image_id": k,
                        "category_id": cls + 1,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "segmentation": [],
                        "iscrowd": 0,
                    }
                )
            seed += 1
        data = {
            "info": {"year": "2026", "version": "1"},
            "licenses": [{"id": 1, "name": "CC BY 4.0"}],
            "categories": cats,
            "images": images,
            "annotations": anns,
        }
        (root / split / "_annotations.coco.json").write_text(json.dumps(data))
    return root


def roboflow_yolo(root):
    """A YOLO export exactly as Roboflow writes it: ``train|valid|test/{images,labels}``, a data.yaml
    with relative paths and ``names``, coordinates rounded to 6 decimals."""
    seed = 0
    for split, n in SPLITS.items():
        for sub in ("images", "labels"):
            os.makedirs(root / split / sub)
        for _ in range(n):
            stem = f"BloodImage_{seed:05d}_jpg.rf.{seed:08x}"
            _photo(root / split / "images" / f"{stem}.jpg", seed)
            lines = [
                f"{cls} {(x + w / 2) / 96:.6f} {(y + h / 2) / 64:.6f} {w / 96:.6f} {h / 64:.6f}"
                for cls, x, y, w, h in _objects(seed)
            ]
            (root / split / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
            seed += 1
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 3\n"
        f"names: {list(CLASSES)}\n\nroboflow:\n  workspace: w\n  project: bccd\n  version: 1\n"
    )
    return root


def test_roboflow_coco_export_loads_by_its_own_layout(tmp_path, caplog):
    root = roboflow_coco(tmp_path / "export")
    with caplog.at_level(logging.INFO):
        train, val = build_datasets(_args(tmp_path, "--dataset", "coco", "--coco-root", str(root)))
    assert train.classes == CLASSES and len(train) == 10 and len(val) == 4  # valid/ is the evaluation split
    assert "category 0 'cells-9x2a' dropped" in caplog.text
    assert all(r.masks is None for r in train.records)  # "segmentation": [] is a box without a mask
    assert train.records[0].boxes.tolist()[0] == [20, 16, 60, 48]
    assert train.label_to_cat_id == {1: 1, 2: 2, 3: 3}


def test_a_supercategory_with_boxes_and_a_category_named_like_its_own_supercategory_stay(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 96, "height": 64}],
        "categories": [
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 2, "name": "animal", "supercategory": "none"},
            {"id": 3, "name": "dog", "supercategory": "animal"},
        ],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 9, 9]}],
    }
    _photo(tmp_path / "a.jpg", 0)
    assert load_coco(data, str(tmp_path)).classes == ("person", "animal", "dog")


def test_coco_root_without_an_evaluation_split_or_with_file_options_is_one_line(tmp_path):
    root = roboflow_coco(tmp_path / "export")
    with pytest.raises(ValueError, match="--coco-root finds the JSON files"):
        build_datasets(
            _args(tmp_path, "--dataset", "coco", "--coco-root", str(root), "--coco-train-json", "x")
        )
    for split in ("valid", "test"):
        os.remove(root / split / "_annotations.coco.json")
    with pytest.raises(
        AnnotationError, match=r"needs train/_annotations.coco.json and one of valid/, val/, test/"
    ):
        build_datasets(_args(tmp_path, "--dataset", "coco", "--coco-root", str(root)))


def test_roboflow_yolo_export_uses_valid_as_the_evaluation_split(tmp_path, caplog):
    root = roboflow_yolo(tmp_path / "export")
    with caplog.at_level(logging.INFO):
        train, val = build_datasets(_args(tmp_path, "--dataset", "folder", "--folder-root", str(root)))
    assert train.classes == CLASSES and len(train) == 10 and len(val) == 4
    assert sorted(r.file_name for r in val.records) == sorted(
        f"images/{n}" for n in os.listdir(root / "valid/images")
    )
    assert os.path.samefile(val.image_root, root / "valid")
    # 6-decimal rounding overshoots the bottom edge by a fraction of a pixel: counted, not warned
    assert train.report.counts.get("clipped_subpixel", 0) > 0 and "clipped_box" not in train.report.counts
    assert "WARNING" not in caplog.text
    assert not os.path.exists(tmp_path / "out" / "splits")  # no seeded split of train/


def test_yolo_export_with_train_only_names_the_way_out(tmp_path):
    root = roboflow_yolo(tmp_path / "export")
    for split in ("valid", "test"):
        os.rename(root / split, root / f"{split}_old")
    with pytest.raises(AnnotationError, match=r"none of valid/, val/, test/ does.*--folder-root .*train"):
        build_datasets(_args(tmp_path, "--dataset", "folder", "--folder-root", str(root)))


def _kangaroo(root, n=6):
    (root / "annots").mkdir(parents=True)
    (root / "images").mkdir()
    for k in range(n):
        (root / "annots" / f"{k:05d}.xml").write_text(
            voc_xml(f"{k:05d}.jpg", size=(96, 64), objects=(("kangaroo", (20, 16, 60, 48)),))
        )
        _photo(root / "images" / f"{k:05d}.jpg", k)
    return root


def test_voc_folders_with_their_own_names_load_with_one_flag(tmp_path):
    root = _kangaroo(tmp_path / "kangaroo")
    with pytest.raises(AnnotationError, match=r"holds \['annots', 'images'\].*--voc-annotations-dir"):
        build_datasets(
            _args(tmp_path, "--dataset", "voc", "--voc-roots", str(root), "--voc-classes", "kangaroo")
        )
    train, val = build_datasets(
        _args(
            tmp_path,
            "--dataset",
            "voc",
            "--voc-roots",
            str(root),
            "--voc-classes",
            "kangaroo",
            "--voc-annotations-dir",
            "annots",
        )
    )
    assert len(train) + len(val) == 6 and train.num_boxes() + val.num_boxes() == 6
    with pytest.raises(AnnotationError, match=r"annotz: no such folder \(--voc-annotations-dir"):
        build_datasets(
            _args(
                tmp_path,
                "--dataset",
                "voc",
                "--voc-roots",
                str(root),
                "--voc-classes",
                "kangaroo",
                "--voc-annotations-dir",
                "annotz",
            )
        )


def test_subpixel_overshoot_is_counted_quietly_and_a_real_one_is_warned(caplog):
    report = LoadReport()
    boxes, keep = sanitize_boxes(
        np.array([[0, 0, 96.0003, 10], [-5, 0, 20, 10], [1, 1, 5, 5]]), 96, 64, report, "f"
    )
    assert keep.all() and boxes[0, 2] == 96 and boxes[1, 0] == 0
    assert report.counts == {"clipped_subpixel": 1, "clipped_box": 1}
    with caplog.at_level(logging.INFO):
        report.log("x")
    assert "1 clipped_box (each file below" in caplog.text and "; 1 clipped_subpixel" in caplog.text
    assert "clipped_subpixel: f" not in caplog.text  # not listed line by line
    quiet = LoadReport()
    quiet.add("clipped_subpixel", "f", "box 0")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        quiet.log("y")
    assert "nothing skipped or fixed; 1 clipped_subpixel" in caplog.text and "WARNING" not in caplog.text


def test_the_same_image_in_two_folders_is_found_by_content(tmp_path, caplog):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for k in range(4):
        _photo(tmp_path / "a" / f"{k}.jpg", k)
    _photo(tmp_path / "b" / "renamed.jpg", 2)  # the same pixels and bytes as a/2.jpg
    _photo(tmp_path / "b" / "other.jpg", 9)
    a = [str(tmp_path / "a" / f"{k}.jpg") for k in range(4)]
    b = [str(tmp_path / "b" / n) for n in ("renamed.jpg", "other.jpg", "missing.jpg")]
    assert same_files(a, b) == [(a[2], b[0])]
    # through the loaders: a COCO export whose valid/ holds a copy of a training image
    root = roboflow_coco(tmp_path / "export")
    name = json.loads((root / "train" / "_annotations.coco.json").read_text())["images"][3]["file_name"]
    valid = json.loads((root / "valid" / "_annotations.coco.json").read_text())
    (root / "valid" / valid["images"][0]["file_name"]).write_bytes((root / "train" / name).read_bytes())
    with caplog.at_level(logging.WARNING):
        build_datasets(_args(tmp_path, "--dataset", "coco", "--coco-root", str(root)))
    assert "share 1 of 4 evaluation images (by content" in caplog.text and name in caplog.text


EXPORT_RUN = [
    "--min-size",
    "64",
    "--batch-size",
    "2",
    "--workers",
    "0",
    "--warmup-iters",
    "1",
    "--K",
    "2",
    "--initial",
    "6",
    "--epochs",
    "1",
    "--round-epochs",
    "1",
    "--max-rounds",
    "1",
    "--deterministic",
]


@pytest.mark.parametrize("kind", ["coco", "yolo"])
@pytest.mark.slow  # trains: left out of the mutation runs
def test_an_export_trains_evaluates_and_mines_with_one_command(tmp_path, capsys, kind):
    root = roboflow_coco(tmp_path / "export") if kind == "coco" else roboflow_yolo(tmp_path / "export")
    data = (
        ["--dataset", "coco", "--coco-root"] if kind == "coco" else ["--dataset", "folder", "--folder-root"]
    )
    out = str(tmp_path / "run")
    assert main([*data, str(root), *EXPORT_RUN, "--output-dir", out, "--cache-dir", str(tmp_path / "c")]) == 0
    rounds = [e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "round"]
    assert [e["round"] for e in rounds] == [0, 1] and rounds[-1]["labelled_images"] == 8
    assert all(set(e) >= {"AP50", f"AP50/{CLASSES[0]}"} for e in rounds)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rounds"] == 1


def test_an_empty_folder_dataset_names_the_option_that_exists(tmp_path):
    for sub in ("images", "labels"):
        (tmp_path / "yolo" / sub).mkdir(parents=True)
    (tmp_path / "yolo" / "classes.txt").write_text("cat\n")
    (tmp_path / "yolo" / "images" / "a.jpg").write_bytes(b"")  # one unreadable image, nothing else
    (tmp_path / "yolo" / "images" / "b.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"check --folder-root / the layout") as e:
        build_datasets(_args(tmp_path, "--dataset", "folder", "--folder-root", str(tmp_path / "yolo")))
    assert "--folder-roots" not in str(e.value)


def test_more_than_half_the_images_losing_every_box_stops_the_load(tmp_path):
    root = tmp_path / "voc"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for k in range(6):  # 4 of 6 images hold only a zero-area box
        box = (20, 16, 20, 48) if k < 4 else (20, 16, 60, 48)
        (root / "annotations" / f"{k}.xml").write_text(
            voc_xml(f"{k}.jpg", size=(96, 64), objects=(("cat", box),))
        )
        _photo(root / "images" / f"{k}.jpg", k)
    argv = ["--dataset", "voc", "--voc-roots", str(root), "--voc-classes", "cat", "--val-fraction", "0.34"]
    with pytest.raises(
        ValueError, match=r"images lost every box while loading \(e\.g\. .*\.xml; .*degenerate_box"
    ):
        build_datasets(_args(tmp_path, *argv))
    train, val = build_datasets(_args(tmp_path, *argv, "--allow-missing-labels"))
    assert train.report.counts["labels_lost"] + val.report.counts.get("labels_lost", 0) == 4
    # the same in COCO: two of three images keep no box
    data = {
        "images": [{"id": k, "file_name": f"{k}.jpg", "width": 96, "height": 64} for k in range(3)],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {"id": k, "image_id": k, "category_id": 1, "bbox": [5, 5, 0 if k < 2 else 9, 9]} for k in range(3)
        ],
    }
    for k in range(3):
        _photo(root / "images" / f"{k}.jpg", k)
    assert load_coco(data, str(root / "images")).report.counts["labels_lost"] == 2


@pytest.mark.parametrize(
    "name, expected",
    [
        ("", ("sub/a.jpg", True)),  # no imagePath: the JSON's stem
        (".", ("sub/a.jpg", True)),
        ("..", ("sub/a.jpg", True)),
        ("/", ("sub/a.jpg", True)),
        ("pics/", ("sub/a.jpg", True)),  # a folder: no file name either
        ("../sub/..", ("sub/a.jpg", True)),
        ("pic.jpg", ("sub/pic.jpg", True)),
        ("../other/pic.jpg", ("other/pic.jpg", True)),  # there: kept, though a pic.jpg is beside the JSON
        ("..\\other\\pic.jpg", ("other/pic.jpg", True)),  # a Windows path
        ("../other/only_here.jpg", ("sub/only_here.jpg", True)),  # not there, but beside the JSON
        ("../other/nowhere.jpg", ("other/nowhere.jpg", False)),  # nowhere: the name as given
        ("/abs/pic.jpg", ("sub/pic.jpg", True)),  # absolute: never read; the name beside the JSON
        ("/abs/nowhere.jpg", ("sub/nowhere.jpg", False)),
        ("C:\\photos\\pic.jpg", ("sub/pic.jpg", True)),  # absolute on Windows
    ],
)
def test_a_labelme_image_path_is_found_where_it_points_or_beside_its_json(tmp_path, name, expected):
    from datasets.exports import Item, _labelme_image

    for rel in ("sub/a.jpg", "sub/pic.jpg", "sub/only_here.jpg", "other/pic.jpg"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    report = LoadReport()
    item = Item(name, str(tmp_path / "sub" / "a.json"))
    assert _labelme_image(str(tmp_path), str(tmp_path / "sub"), item, report) == expected
    outside = [e for e in report.entries if e[0] == "path_outside_root"]
    assert len(outside) == (name.startswith("/abs") or name.startswith("C:"))
