import os
import re

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from datasets.coco import decode_masks, load_coco, records_to_coco
from datasets.records import AnnotationError
from datasets.voc import load_voc
from tests.helpers import coco_dict, write_coco


# tests/data/tiny_coco: 5 images a split; train 29 annotations, val 22; one crowd RLE and one image
# without annotations in each (counted in the files by hand, tests/data/README.md)
@pytest.mark.parametrize("split, n_boxes, n_empty", [("train2017", 29, 1), ("val2017", 22, 1)])
def test_tiny_coco_counts_masks_and_category_maps(tiny_coco_root, split, n_boxes, n_empty):
    ann = os.path.join(tiny_coco_root, "annotations", f"instances_{split}.json")
    ds = load_coco(ann, os.path.join(tiny_coco_root, split))
    assert len(ds) == 5 and ds.num_boxes() == n_boxes and ds.report.counts == {}
    assert sum(len(r) == 0 for r in ds.records) == n_empty  # negatives are kept
    assert sum(int(r.iscrowd.sum()) for r in ds.records) == 1
    assert ds.num_classes == 80 and ds.label_to_cat_id[80] == 90 and ds.cat_id_to_label[90] == 80
    coco = COCO(ann)
    rec = next(r for r in ds.records if r.iscrowd.any())
    anns = coco.loadAnns(coco.getAnnIds(imgIds=int(rec.image_id)))
    assert [ds.label_to_cat_id[int(label)] for label in rec.labels] == [a["category_id"] for a in anns]
    masks = decode_masks(rec)
    for mask, a in zip(masks, anns):
        np.testing.assert_array_equal(mask, coco.annToMask(a))
    x, y, w, h = anns[0]["bbox"]
    np.testing.assert_allclose(rec.boxes[0], [x, y, x + w, y + h], rtol=1e-6)


def test_drop_empty_on_request(tmp_path):
    data = coco_dict(images=((1, "a.jpg", 64, 48), (2, "b.jpg", 64, 48)))
    path = write_coco(tmp_path, data)
    root = str(tmp_path / "images")
    assert len(load_coco(path, root)) == 2
    ds = load_coco(path, root, drop_empty=True)
    assert [r.image_id for r in ds.records] == ["1"] and ds.report.counts == {"empty_image_dropped": 1}


def test_voc_to_coco_to_records_round_trip(bccd_root):
    voc = load_voc(bccd_root, "val", discover_classes=True, cache_dir=False)
    coco_json = records_to_coco(voc)
    COCO().dataset = coco_json  # the dict is plain COCO: pycocotools can index it
    back = load_coco(coco_json, voc.image_root)
    assert back.records == voc.records and back.classes == voc.classes


def test_tiny_coco_round_trip(tiny_coco_root):
    root = os.path.join(tiny_coco_root, "val2017")
    ds = load_coco(os.path.join(tiny_coco_root, "annotations", "instances_val2017.json"), root)
    coco_json = records_to_coco(ds)
    back = load_coco(coco_json, root)
    assert back.records == ds.records and back.label_to_cat_id == ds.label_to_cat_id
    crowd = [a for a in coco_json["annotations"] if a["iscrowd"]]
    assert crowd and all(
        a["area"]
        == float(mask_utils.area(mask_utils.frPyObjects(a["segmentation"], *a["segmentation"]["size"])))
        for a in crowd
        if isinstance(a["segmentation"]["counts"], list)
    )


def test_dangling_and_non_contiguous_references(tmp_path):
    data = coco_dict(
        images=((10, "a.jpg", 64, 48),),
        anns=((10, 7, [1, 1, 10, 10]), (99, 7, [1, 1, 5, 5]), (10, 3, [2, 2, 8, 8]), (10, 5, [0, 0, 3, 3])),
        cats=((7, "dog"), (3, "cat")),
    )
    ds = load_coco(write_coco(tmp_path, data), str(tmp_path / "images"))
    assert ds.classes == ("cat", "dog") and ds.label_to_cat_id == {1: 3, 2: 7}
    assert ds.records[0].labels.tolist() == [2, 1]
    assert ds.report.counts == {"missing_image_id": 1, "unknown_category": 1}
    assert "annotation id 2" in ds.report.of("missing_image_id")[0][0]


@pytest.mark.parametrize(
    "data, match",
    [
        ("", "annotation file is empty"),
        ('{"images": [', "malformed JSON at line 1"),
        (
            coco_dict(images=((1, "a.jpg", 64, 48), (1, "b.jpg", 64, 48))),
            r"duplicate image ids in 'images': \[1\]",
        ),
        (coco_dict(cats=((1, "cat"), (1, "dog"))), r"duplicate category ids"),
        (coco_dict(images=((1, "../x.jpg", 64, 48),)), "resolves outside the image root"),
        (coco_dict(images=((1, "/etc/x.jpg", 64, 48),)), "absolute path"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "categories": []}, r"images\[0\] needs"),
        (coco_dict(anns=((1, 1, [1, 2]),)), r"annotations\[0\] needs"),
        ({"annotations": []}, "not a COCO instances file"),
    ],
)
def test_bad_coco_files_name_file_and_field(tmp_path, data, match):
    path = write_coco(tmp_path, data, image_sizes={})
    with pytest.raises(AnnotationError, match=match) as info:
        load_coco(path, str(tmp_path / "images"), check_images=False)
    assert "instances.json" in str(info.value)


def test_missing_unreadable_images_and_boxes(tmp_path):
    data = coco_dict(
        images=((1, "a.jpg", 64, 48), (2, "b.jpg", 64, 48), (3, "c.jpg", 64, 48)),
        anns=((1, 1, [50, 40, 30, 30]), (1, 1, [5, 5, 0, 10]), (2, 1, [1, 1, 5, 5])),
    )
    path = write_coco(tmp_path, data, image_sizes={"a.jpg": (64, 48), "c.jpg": (64, 48)})
    with open(tmp_path / "images" / "c.jpg", "wb") as f:
        f.write(b"\x00" * 10)
    ds = load_coco(path, str(tmp_path / "images"))
    assert [r.image_id for r in ds.records] == ["1"]
    np.testing.assert_array_equal(ds.records[0].boxes, [[50, 40, 64, 48]])
    assert ds.report.counts == {
        "clipped_box": 1,
        "degenerate_box": 1,
        "missing_image": 1,
        "unreadable_image": 1,
    }


def test_the_cyclic_collector_is_paused_while_a_file_loads_and_restored_after(tmp_path, monkeypatch):
    """A train2017-sized parse spends a quarter of its time in the collector (bench/bench_load.py);
    the parsed JSON holds no cycles, so load_coco pauses it, and gives it back as it found it."""
    import gc

    import datasets.coco as coco

    seen = []
    real = coco._instances
    monkeypatch.setattr(coco, "_instances", lambda data, src: seen.append(gc.isenabled()) or real(data, src))
    path = write_coco(tmp_path, coco_dict())
    assert gc.isenabled()
    load_coco(path, str(tmp_path), check_images=False)
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        load_coco(path, str(tmp_path), check_images=False)
        assert not gc.isenabled()  # one who had paused it keeps it paused
    finally:
        gc.enable()


def test_image_fields_checked_one_by_one_give_the_same_records(tmp_path):
    """An id written as 5.0 (an exact integer as a float) sends the images through the per-image
    check; what it gives is what the column check gives: ids, names, record ids, sizes, bounds."""
    from datasets.coco import _images, _images_one_by_one

    images = [
        {"id": 5, "file_name": "a.jpg", "width": 100_000, "height": 0},
        {"id": 7, "file_name": "b.jpg", "width": 3, "height": 100_000, "asm_image_id": "kept"},
    ]
    ids, fast = _images(images, "x.json")
    as_float = [{**images[0], "id": 5.0}, images[1]]
    ids2, slow = _images_one_by_one(as_float, "x.json")
    assert ids.tolist() == ids2.tolist() == [5, 7]
    assert fast == slow == [(5, "a.jpg", "5", 100_000, 0), (7, "b.jpg", "kept", 3, 100_000)]
    assert _images(as_float, "x.json")[1] == slow  # the float id is read, through the slow path
    for bad, what in (
        ({"height": 100_001}, "out of range"),
        ({"width": -1}, "out of range"),
        ({"file_name": 3}, "not a string"),
    ):
        with pytest.raises(AnnotationError, match=rf"x.json: images\[1\] needs integer .*{what}"):
            _images([images[0], {**images[1], **bad}], "x.json")


def _crowd_data(crowds):
    data = coco_dict(images=((1, "a.jpg", 64, 48),), anns=[(1, 1, [5, 5, 20, 20])] * len(crowds))
    for ann, crowd in zip(data["annotations"], crowds):
        if crowd is None:
            del ann["iscrowd"]
        else:
            ann["iscrowd"] = crowd
    return data


@pytest.mark.parametrize(
    "crowds, expected",
    [
        ([0, 1], [False, True]),
        ([None, 1], [False, True]),  # no iscrowd: not a crowd
        ([True, False], [True, False]),
        ([2, 0], "annotations[0]: 'iscrowd' must be 0 or 1, got 2"),
        ([0, 0.5], "annotations[1]: 'iscrowd' must be 0 or 1, got 0.5"),
        ([0, 1.0], "annotations[1]: 'iscrowd' must be 0 or 1, got 1.0"),
        ([0, "1"], "annotations[1]: 'iscrowd' must be 0 or 1, got '1'"),
        ([None, 2], "annotations[1]: 'iscrowd' must be 0 or 1, got 2"),  # the one without is not named
    ],
)
def test_iscrowd_is_0_or_1_and_a_bad_one_is_named(tmp_path, crowds, expected):
    path = write_coco(tmp_path, _crowd_data(crowds))
    if isinstance(expected, str):
        with pytest.raises(AnnotationError, match=re.escape(expected)):
            load_coco(path, str(tmp_path / "images"))
        return
    (rec,) = load_coco(path, str(tmp_path / "images")).records
    assert rec.iscrowd.tolist() == expected and rec.iscrowd.dtype == bool


def test_annotations_without_ids_are_named_by_their_position(tmp_path):
    data = coco_dict(
        images=((1, "a.jpg", 64, 48),),
        anns=((1, 1, [5, 5, 20, 20]), (7, 1, [1, 1, 2, 2]), (1, 9, [1, 1, 2, 2])),
    )
    for ann in data["annotations"]:
        del ann["id"]
    data = load_coco(write_coco(tmp_path, data), str(tmp_path / "images"))
    assert data.report.entries == [
        ("missing_image_id", f"{tmp_path / 'instances.json'}: annotation id 1", "image_id 7"),
        ("unknown_category", f"{tmp_path / 'instances.json'}: annotation id 2", "category_id 9"),
    ]


def test_ids_written_as_whole_floats_are_read_as_integers(tmp_path):
    """Some exporters write 1.0 for 1: whole floats are the integers they name, anything else is not."""
    data = coco_dict(
        images=((1, "a.jpg", 64, 48), (2, "b.jpg", 64, 48)),
        anns=((1, 1, [5, 5, 20, 20]), (2, 1, [1, 1, 5, 5])),
    )
    for ann in data["annotations"]:
        ann["image_id"], ann["category_id"] = float(ann["image_id"]), float(ann["category_id"])
    data["images"][1]["width"] = 64.0
    sizes = {"a.jpg": (64, 48), "b.jpg": (64, 48)}
    recs = load_coco(write_coco(tmp_path, data, sizes), str(tmp_path / "images")).records
    assert [(r.image_id, r.width, len(r), r.labels.tolist()) for r in recs] == [
        ("1", 64, 1, [1]),
        ("2", 64, 1, [1]),
    ]
    data["annotations"][1]["image_id"] = 2.5
    with pytest.raises(AnnotationError, match=r"annotations\[1\] needs integer 'image_id'"):
        load_coco(write_coco(tmp_path / "bad", data, sizes), str(tmp_path / "bad" / "images"))


@pytest.mark.parametrize(
    "field, value",
    [("bbox", [1, 1, 2, 2, 3]), ("bbox", [1, 1, 2]), ("bbox", [1, float("nan"), 2, 2]), ("bbox", [1, 1, 2, "x"]),
     ("image_id", "1"), ("image_id", 1.5), ("category_id", None)],
)  # fmt: skip
def test_the_first_bad_annotation_is_named(tmp_path, field, value):
    anns = [(1, 1, [5, 5, 20, 20])] * 3
    data = coco_dict(images=((1, "a.jpg", 64, 48),), anns=anns)
    data["annotations"][1][field] = value
    with pytest.raises(
        AnnotationError,
        match=r"annotations\[1\] needs integer 'image_id', 'category_id' and a 4-number 'bbox'",
    ):
        load_coco(write_coco(tmp_path, data), str(tmp_path / "images"))


def test_annotations_of_a_file_without_images_are_all_counted_missing(tmp_path):
    data = coco_dict(images=(), anns=((1, 1, [5, 5, 20, 20]), (2, 1, [1, 1, 2, 2])))
    data["categories"] = []
    ds = load_coco(write_coco(tmp_path, data, {}), str(tmp_path / "images"))
    assert len(ds) == 0 and ds.report.counts == {"missing_image_id": 2}


def test_records_written_as_coco_number_their_annotations_and_keep_difficult_flags():
    from datasets.records import Record, RecordSet

    records = [
        Record("x", "x.jpg", 10, 10, [[0, 0, 5, 5], [1, 1, 4, 4]], [1, 1], difficult=[False, True]),
        Record("y", "y.jpg", 10, 10, [[2, 2, 6, 6]], [1]),
    ]
    coco = records_to_coco(RecordSet(records, ("a",), "/imgs", {1: 7}))
    assert [im["id"] for im in coco["images"]] == [1, 2]  # ids that are not numbers: 1..N
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3]
    assert [a["difficult"] for a in coco["annotations"]] == [0, 1, 0]
    assert [a["category_id"] for a in coco["annotations"]] == [7, 7, 7]
    back = load_coco(coco, "/imgs", check_images=False).records
    assert [r.difficult.tolist() for r in back] == [[False, True], [False]]


@pytest.mark.parametrize(
    "value, expected",
    [
        (-(2**63), -(2**63)), (2**63 - 1, 2**63 - 1), (-1000, -1000), (3.0, 3),
        (2**63, "out of the 64-bit range"), (-(2**63) - 1, "out of the 64-bit range"),
        (True, "is not an integer"), ("3", "is not an integer"), (2.5, "is not an integer"),
    ],
)  # fmt: skip
def test_strict_int_takes_exact_64_bit_integers_only(value, expected):
    from datasets.coco import strict_int

    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            strict_int(value)
    else:
        assert strict_int(value) == expected and type(strict_int(value)) is int


@pytest.mark.parametrize(
    "image, expected",
    [
        ((2.0, "a.jpg", 0, 48), ("2", 0, 48)),  # a whole float id: read one by one; width 0: unknown
        ((2.0, "a.jpg", 100_000, 0), ("2", 100_000, 0)),  # the largest size taken
        ((True, "a.jpg", 64, 48), "True is not an integer"),  # JSON true is no id
        ((2.0, "a.jpg", 100_001, 48), "size 100001x48 is out of range"),
        ((2.0, "a.jpg", 64, -1), "size 64x-1 is out of range"),
    ],
)
def test_image_ids_and_sizes_at_their_limits(tmp_path, image, expected):
    path = write_coco(tmp_path, coco_dict(images=(image,), anns=()), image_sizes={})
    if isinstance(expected, str):
        with pytest.raises(AnnotationError, match=rf"images\[0\] needs integer .*\({re.escape(expected)}\)"):
            load_coco(path, str(tmp_path / "images"), check_images=False)
        return
    (record,) = load_coco(path, str(tmp_path / "images"), check_images=False).records
    assert (record.image_id, record.width, record.height) == expected


@pytest.mark.parametrize("n, fine", [(4, False), (5, False), (6, True), (7, False), (8, True), (9, False)])
def test_a_polygon_needs_an_even_count_of_at_least_six_coordinates(n, fine):
    from datasets.coco import check_segmentation

    poly = [float(v) for v in range(n)]
    if fine:
        check_segmentation([poly], 10, 10, "a.json: annotations[0]")
        return
    with pytest.raises(
        AnnotationError, match=rf"^a.json: annotations\[0\]: segmentation polygon 0 needs .* got {n}$"
    ):
        check_segmentation([poly], 10, 10, "a.json: annotations[0]")


def test_a_coco_export_that_is_not_there_names_the_folder(tmp_path):
    from datasets.coco import export_splits

    (tmp_path / "train").mkdir()
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(AnnotationError, match=r"\(found folders \['train'\]\)"):
        export_splits(str(tmp_path))
    with pytest.raises(AnnotationError, match=r"^.*nowhere: a COCO export needs .*\(found folders \[\]\)"):
        export_splits(str(tmp_path / "nowhere"))


def test_records_to_coco_keeps_whole_number_ids_and_writes_only_the_records_given():
    from datasets.records import Record, RecordSet

    records = [Record(i, f"{i}.jpg", 10, 10, [[1, 1, 5, 5]], [1]) for i in ("7", "3", "12")]
    data = RecordSet(records, ("cat",), "/images")
    assert [im["id"] for im in records_to_coco(data)["images"]] == [7, 3, 12]  # whole numbers: kept
    subset = records_to_coco(data, records[1:2])
    assert [im["id"] for im in subset["images"]] == [3] and len(subset["annotations"]) == 1
    named = RecordSet([Record("b", "b.jpg", 10, 10), Record("a", "a.jpg", 10, 10)], ("cat",), "/images")
    assert [(im["id"], im["asm_image_id"]) for im in records_to_coco(named)["images"]] == [(1, "b"), (2, "a")]
