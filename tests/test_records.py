import json

import numpy as np
import pytest
import torch

from datasets.records import (
    Record,
    RecordSet,
    load_records,
    pack_records,
    record_from_dict,
    record_to_dict,
    save_records,
    unpack_records,
)
from datasets.report import LoadReport


def _record(n=3, masks=True, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 50, size=(n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 30, size=(n, 2))], axis=1).astype(np.float32)
    return Record(
        image_id=f"img{seed}",
        file_name=f"sub/img{seed}.jpg",
        width=100,
        height=90,
        boxes=boxes,
        labels=rng.integers(1, 4, n),
        difficult=rng.random(n) < 0.5,
        iscrowd=rng.random(n) < 0.3,
        masks=[[[1.5, 2.0, 10.0, 2.0, 10.0, 9.25]]] * (n - 1) + [{"size": [90, 100], "counts": "abc"}]
        if masks and n
        else None,
    )


def test_record_json_round_trip_is_lossless():
    for r in (_record(), _record(0, masks=False, seed=1), _record(5, seed=2)):
        text = json.dumps(record_to_dict(r))
        back = record_from_dict(json.loads(text))
        assert back == r
        assert back.boxes.dtype == np.float32 and back.labels.dtype == np.int64
        assert back.difficult.dtype == bool and back.iscrowd.dtype == bool
        np.testing.assert_array_equal(back.boxes, r.boxes)  # bit-exact float32


def test_recordset_file_round_trip(tmp_path):
    report = LoadReport()
    report.add("degenerate_box", "x.xml", "box 0")
    ds = RecordSet([_record(seed=s) for s in range(4)], ("a", "b", "c"), "/data", {1: 5, 2: 7, 3: 9}, report)
    save_records(ds, tmp_path / "r.json")
    back = load_records(tmp_path / "r.json")
    assert back.records == ds.records
    assert back.classes == ds.classes and back.label_to_cat_id == ds.label_to_cat_id
    assert back.cat_id_to_label == {5: 1, 7: 2, 9: 3}
    assert back.report.counts == {"degenerate_box": 1}
    assert not list(tmp_path.glob(".tmp_*"))  # atomic write leaves no temp file


def test_record_validates_lengths_and_select():
    with pytest.raises(ValueError, match="labels"):
        Record("x", "x.jpg", 10, 10, np.zeros((2, 4)), np.ones(3))
    r = _record(4)
    sub = r.select(np.array([True, False, True, False]))
    assert len(sub) == 2 and sub.masks == [r.masks[0], r.masks[2]]
    np.testing.assert_array_equal(sub.boxes, r.boxes[[0, 2]])
    assert len(r) == 4  # the original is untouched


def test_report_rejects_unknown_reason():
    with pytest.raises(KeyError, match="unknown report reason"):
        LoadReport().add("oops", "f")


def test_trusted_constructor_equals_the_checked_one():
    import numpy as np

    from datasets.records import Record

    args = ("a", "a.jpg", 10, 8, np.array([[0, 0, 5, 5]], np.float32), np.array([2]))
    checked = Record(*args, difficult=[True], iscrowd=[False])
    fast = Record.trusted(*args[:5], np.array([2], np.int64), np.array([True]), np.array([False]))
    assert fast == checked and fast.labels.dtype == np.int64 and len(fast) == 1


def test_a_record_dict_without_flags_or_boxes_reads_with_the_defaults():
    r = record_from_dict(
        {"image_id": 7, "file_name": "a.jpg", "width": "4", "height": 3.0, "boxes": [], "labels": []}
    )
    assert (r.image_id, r.width, r.height) == ("7", 4, 3)
    assert r.boxes.shape == (0, 4) and r.boxes.dtype == np.float32 and r.labels.dtype == np.int64
    assert r.difficult.dtype == bool and r.difficult.shape == (0,) and r.masks is None
    r = record_from_dict(
        {
            "image_id": "b",
            "file_name": "b.jpg",
            "width": 9,
            "height": 9,
            "boxes": [[1, 2, 3, 4], [0, 0, 1, 1]],
            "labels": [2, 1],
            "iscrowd": [1, 0],
        }
    )
    assert r.boxes.dtype == np.float32 and r.boxes.tolist() == [[1, 2, 3, 4], [0, 0, 1, 1]]
    assert r.iscrowd.tolist() == [True, False] and r.difficult.tolist() == [False, False]


def test_packing_no_records_and_the_packed_types():
    packed = pack_records([])
    assert packed["boxes"].shape == (0, 4) and packed["boxes"].dtype == torch.float32
    assert packed["labels"].dtype == torch.int64 and packed["difficult"].dtype == torch.bool
    assert unpack_records(packed) == []
    records = [Record("a", "a.jpg", 5, 5, [[0, 0, 1, 1]], [1], iscrowd=[True]), Record("b", "b.jpg", 5, 5)]
    packed = pack_records(records)
    assert packed["counts"].tolist() == [1, 0] and packed["counts"].dtype == torch.int64
    assert packed["iscrowd"].tolist() == [True] and unpack_records(packed) == records


def test_packing_keeps_difficult_flags_and_masks_of_every_record():
    poly = [[1.0, 1.0, 4.0, 1.0, 4.0, 4.0]]
    rle = {"size": [5, 5], "counts": "abc"}
    records = [
        Record(
            "a",
            "a.jpg",
            5,
            5,
            [[0, 0, 1, 1], [1, 1, 3, 3]],
            [1, 2],
            difficult=[False, True],
            masks=[poly, rle],
        ),
        Record("b", "b.jpg", 6, 4, [[0, 0, 2, 2]], [1], difficult=[True], masks=[None]),
    ]
    back = unpack_records(pack_records(records))
    assert back == records
    assert [r.difficult.tolist() for r in back] == [[False, True], [True]]
    assert (
        back[0].masks == [poly, rle] and back[1].masks == [None] and (back[1].width, back[1].height) == (6, 4)
    )


def test_select_takes_indices_as_well_as_a_mask():
    r = Record(
        "a", "a.jpg", 40, 40, [[0, 0, 5, 5], [10, 10, 20, 20], [1, 1, 2, 2]], [1, 2, 3], difficult=[0, 1, 0]
    )
    r.masks = [[[0, 0, 5, 0, 5, 5]], [[10, 10, 20, 10, 20, 20]], [[1, 1, 2, 1, 2, 2]]]
    for keep in ([2, 1], np.array([2, 1], np.int32)):
        s = r.select(keep)
        assert s.boxes.tolist() == [[1, 1, 2, 2], [10, 10, 20, 20]] and s.labels.tolist() == [3, 2]
        assert s.difficult.tolist() == [False, True] and s.masks == [r.masks[2], r.masks[1]]
    m = r.select(np.array([False, True, True]))
    assert m.labels.tolist() == [2, 3] and m.masks == r.masks[1:]


def test_a_record_set_maps_each_label_to_itself_by_default():
    data = RecordSet([], ("cat", "dog", "bird"), "/images")
    assert data.label_to_cat_id == {1: 1, 2: 2, 3: 3}  # one entry per class: no 0, no 4
