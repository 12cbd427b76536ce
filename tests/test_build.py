import os

import pytest

from datasets.build import DataOptions, build_datasets
from train_asm_one import get_args_parser, main


def _args(*argv):
    return DataOptions.of(vars(get_args_parser().parse_args(list(argv))))


def test_voc_and_coco_options(bccd_root, tiny_coco_root, tmp_path):
    train, val = build_datasets(
        _args(
            "--dataset",
            "voc",
            "--voc-roots",
            bccd_root,
            "--voc-train-split",
            "train",
            "--voc-val-split",
            "val",
            "--discover-classes",
            "--cache-dir",
            str(tmp_path),
        )
    )
    assert (len(train), len(val)) == (6, 3) and train.classes == val.classes  # tests/data/bccd's splits
    ann = os.path.join(tiny_coco_root, "annotations")
    train, val = build_datasets(
        _args(
            "--dataset",
            "coco",
            "--coco-train-json",
            os.path.join(ann, "instances_train2017.json"),
            "--coco-train-images",
            os.path.join(tiny_coco_root, "train2017"),
            "--drop-empty",
            "--coco-val-json",
            os.path.join(ann, "instances_val2017.json"),
            "--coco-val-images",
            os.path.join(tiny_coco_root, "val2017"),
        )
    )
    assert (len(train), len(val)) == (4, 5)  # 5 + 5 images, the empty train one dropped


def test_missing_options_are_named():
    with pytest.raises(ValueError, match="--voc-roots"):
        build_datasets(_args("--dataset", "voc"))
    with pytest.raises(ValueError, match="--coco-train-json"):
        build_datasets(_args("--dataset", "coco"))


def test_entry_script_runs_on_demo(tmp_path):
    assert (
        main(
            [
                "--demo-train",
                "10",
                "--demo-val",
                "4",
                "--cache-dir",
                str(tmp_path),
                "--min-size",
                "64",
                "--epochs",
                "1",
                "--round-epochs",
                "1",
                "--K",
                "4",
                "--max-rounds",
                "1",
                "--output-dir",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )


def test_entry_script_reports_bad_annotations_without_traceback(tmp_path, caplog):
    from tests.helpers import make_voc

    root = make_voc(tmp_path / "voc", {"a": "<annotation><object>"})
    assert main(["--dataset", "voc", "--voc-roots", root, "--voc-train-split", "train"]) == 2
    assert "a.xml: malformed XML" in caplog.text


def test_voc_unlabelled_roots_form_the_pool(tmp_path):
    from datasets.build import labelled_indices
    from tests.helpers import make_voc, voc_xml

    objs = [("cat", (1, 1, 20, 20))]
    r07 = make_voc(
        tmp_path / "VOC2007", {i: voc_xml(f"{i}.jpg", objects=objs) for i in ("a", "b")}, split="trainval"
    )
    r12 = make_voc(
        tmp_path / "VOC2012",
        {i: voc_xml(f"{i}.jpg", objects=objs) for i in ("c", "d", "e")},
        split="trainval",
    )
    args = _args(
        "--dataset",
        "voc",
        "--voc-roots",
        r07,
        "--voc-unlabelled-roots",
        r12,
        "--voc-val-split",
        "trainval",
        "--voc-classes",
        "cat",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    train, val = build_datasets(args)
    assert len(train) == 5 and len(val) == 2
    assert [train.records[i].image_id for i in labelled_indices(train, args)] == ["VOC2007/a", "VOC2007/b"]
    assert labelled_indices(train, _args()) is None


def test_an_evaluation_split_says_what_it_cannot_measure():
    import numpy as np

    from datasets.build import boxes_per_class, evaluation_warnings
    from datasets.records import Record, RecordSet

    def records(n, labels):
        return [
            Record(
                f"i{k}",
                f"i{k}.jpg",
                10,
                10,
                np.array([[0, 0, 5, 5.0]] * len(labels), np.float32),
                np.array(labels),
            )
            for k in range(n)
        ]

    # 6 images of 2 motorbikes each: car has no box; 6 < 20 images and 12 < 30 boxes
    small = RecordSet(records(6, [2, 2]), ("car", "motorbike"), "/")
    assert boxes_per_class(small) == {"car": 0, "motorbike": 12}
    lines = evaluation_warnings(small)
    assert lines[0].startswith("the evaluation split has no box of car: its AP is not measured")
    assert "mean AP is over the other 1 of 2 classes" in lines[0]
    assert lines[1].startswith("the evaluation split is small (6 images, 12 boxes;")
    # 20 images of one car and one motorbike: 40 boxes, every class measured
    assert evaluation_warnings(RecordSet(records(20, [1, 2]), ("car", "motorbike"), "/")) == []
    assert len(evaluation_warnings(RecordSet(records(19, [1, 2]), ("car", "motorbike"), "/"))) == 1
