"""Labelling-tool round trip: export, import, edit counting, pause -> import -> resume."""

import json
import os

import numpy as np
import pytest
from lxml import etree

from asm.edits import count_edits
from asm.pools import ASMState
from datasets.records import AnnotationError, Record, RecordSet
from import_labels import main as import_main
from tests.helpers import paused_demo_argv
from tools.engine.checkpoint import load_checkpoint
from tools.loop.labelling import export_round, import_round
from train_asm_one import main as train_main

CLASSES = ("cat", "dog")


def _round(tmp_path):
    pre = [
        Record(
            "a", "imgs/a.jpg", 200, 100, [[10, 10, 50, 50], [60, 10, 120, 80], [130, 20, 190, 90]], [1, 2, 1]
        ),
        Record("b", "imgs/b.jpg", 120, 90, [[5.5, 6.25, 40.75, 70.5]], [2]),
        Record("c", "imgs/c.jpg", 64, 64),
    ]
    data = RecordSet(pre, CLASSES, str(tmp_path / "root"))
    folder = str(tmp_path / "round1")
    export_round(folder, 1, pre, [np.full(len(r), 0.9) for r in pre], data)
    return folder, pre


def test_count_edits_scripted():
    pre_boxes = [[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 70, 70], [80, 80, 90, 90]]
    final = [[0, 0, 10, 10], [20, 20, 40, 44], [50, 50, 70, 70], [0, 60, 10, 70]]
    # confirmed, moved (IoU 0.83 -> still >= 0.8? no: shift more below), relabelled, added; one deleted
    final[1] = [24, 20, 44, 40]  # IoU 0.667: moved
    edits, sl, moved = count_edits(pre_boxes, [1, 1, 2, 1], final, [1, 1, 1, 2])
    assert edits.as_dict() == {"added": 1, "deleted": 1, "moved": 1, "relabelled": 1, "confirmed": 1}
    assert sl.tolist() == [True, False, False, False] and moved.tolist() == [False, True, False, False]


def _accept_label_studio(folder, path):
    tasks = json.load(open(os.path.join(folder, "label_studio_tasks.json")))
    for k, t in enumerate(tasks):
        t["id"] = k + 1
        t["annotations"] = [{"result": t["predictions"][0]["result"], "was_cancelled": False}]
    with open(path, "w") as f:
        json.dump(tasks, f)
    return str(path)


def test_export_then_import_without_edits_is_identity(tmp_path):
    folder, pre = _round(tmp_path)
    exports = {
        "labelstudio": _accept_label_studio(folder, tmp_path / "ls_export.json"),
        "cvat": os.path.join(folder, "cvat_annotations.xml"),
        "voc": os.path.join(folder, "voc"),
        "coco": os.path.join(folder, "coco_preannotations.json"),
    }
    for fmt, path in exports.items():
        imported = import_round(folder, path)
        assert imported["edits"] == {"added": 0, "deleted": 0, "moved": 0, "relabelled": 0, "confirmed": 4}, (
            fmt
        )
        for rec, p in zip(imported["records"], pre):
            np.testing.assert_allclose(
                np.asarray(rec["boxes"]).reshape(-1, 4), p.boxes, atol=1e-3, err_msg=fmt
            )
            assert rec["labels"] == p.labels.tolist() and rec["image_id"] == p.image_id
    ls = json.load(open(os.path.join(folder, "label_studio_tasks.json")))
    assert all(r["origin"] == "prediction" for t in ls for r in t["predictions"][0]["result"])
    cvat = etree.parse(os.path.join(folder, "cvat_annotations.xml"))
    assert {b.get("source") for b in cvat.iter("box")} == {"auto"}


def test_scripted_cvat_edits_are_counted_exactly(tmp_path):
    folder, _ = _round(tmp_path)
    tree = etree.parse(os.path.join(folder, "cvat_annotations.xml"))
    image_a = tree.find("image[@name='imgs/a.jpg']")
    boxes = image_a.findall("box")
    image_a.remove(boxes[0])  # deleted
    boxes[1].set("xtl", "80")  # 60..120 -> 80..120: IoU 0.67, moved
    boxes[2].set("label", "dog")  # relabelled
    etree.SubElement(
        tree.find("image[@name='imgs/c.jpg']"),
        "box",
        label="cat",
        source="manual",
        xtl="1",
        ytl="1",
        xbr="30",
        ybr="30",
    )  # added
    path = str(tmp_path / "edited.xml")
    tree.write(path)
    imported = import_round(folder, path)
    assert imported["edits"] == {"added": 1, "deleted": 1, "moved": 1, "relabelled": 1, "confirmed": 1}
    assert [i["sl"] for i in imported["images"]] == [[False, False], [True], [False]]


def test_foreign_and_malformed_files_name_the_task_or_image(tmp_path):
    folder, _ = _round(tmp_path)
    cases = {
        "notlist.json": ('{"a": 1}', "images"),  # a dict is read as COCO: not a COCO file
        "task.json": (
            json.dumps([{"id": 7, "data": {"image": "/x/zzz.jpg"}, "annotations": []}]),
            "task 7: image '/x/zzz.jpg' is not one of this round's images",
        ),
        "label.json": (
            json.dumps(
                [
                    {
                        "id": 3,
                        "data": {"file_name": "imgs/a.jpg"},
                        "annotations": [
                            {
                                "result": [
                                    {
                                        "type": "rectanglelabels",
                                        "value": {
                                            "x": 1,
                                            "y": 1,
                                            "width": 5,
                                            "height": 5,
                                            "rectanglelabels": ["zebra"],
                                        },
                                    }
                                ]
                            }
                        ],
                    }
                ]
            ),
            "task 3: result 0 \\(imgs/a.jpg\\): unknown label 'zebra'",
        ),
        "data.json": (
            json.dumps([{"id": 4, "data": "imgs/a.jpg", "annotations": []}]),
            "task 4: 'data' must be an object",
        ),
        "empty.json": (
            json.dumps(
                [
                    {
                        "id": 5,
                        "data": {"file_name": "imgs/a.jpg"},
                        "annotations": [
                            {
                                "result": [
                                    {
                                        "type": "rectanglelabels",
                                        "value": {
                                            "x": 1,
                                            "y": 1,
                                            "width": 5,
                                            "height": 5,
                                            "rectanglelabels": [],
                                        },
                                    }
                                ]
                            }
                        ],
                    }
                ]
            ),
            "task 5 \\(imgs/a.jpg\\): result 0 needs numeric x, y, width, height \\(or points\\) and one label",
        ),
        "x.json": (
            json.dumps(
                [
                    {
                        "id": 6,
                        "data": {"file_name": "imgs/a.jpg"},
                        "annotations": [
                            {
                                "result": [
                                    {
                                        "type": "rectanglelabels",
                                        "value": {
                                            "x": "left",
                                            "y": 1,
                                            "width": 5,
                                            "height": 5,
                                            "rectanglelabels": ["cat"],
                                        },
                                    }
                                ]
                            }
                        ],
                    }
                ]
            ),
            "result 0 needs numeric x",
        ),
        "nan.xml": (
            "<annotations><image name='imgs/a.jpg'><box label='cat' xtl='nan' ytl='1' xbr='5' ybr='5'/>"
            "</image><image name='imgs/b.jpg'/><image name='imgs/c.jpg'/></annotations>",
            "nan.xml: line 1: <box> xtl is not finite \\('nan'\\)",
        ),
        "inverted.xml": (
            "<annotations><image name='imgs/a.jpg'><box label='cat' xtl='9' ytl='1' xbr='5' ybr='5'/>"
            "</image><image name='imgs/b.jpg'/><image name='imgs/c.jpg'/></annotations>",
            "box 0 .* is empty or inverted",
        ),
        "outside.xml": (
            "<annotations><image name='imgs/a.jpg'><box label='cat' xtl='900' ytl='1' xbr='950' "
            "ybr='5'/></image><image name='imgs/b.jpg'/><image name='imgs/c.jpg'/></annotations>",
            "lies outside the image",
        ),
        "broken.xml": ("<annotations><image name='imgs/a.jpg'>", "malformed CVAT XML"),
        "partial.xml": (
            "<annotations><image name='imgs/a.jpg'/></annotations>",
            "no labels for image 'imgs/b.jpg'",
        ),
    }
    for name, (text, match) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(AnnotationError, match=match):
            import_round(folder, str(path))


@pytest.mark.slow
def test_pause_import_resume_on_demo(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = paused_demo_argv(tmp_path, out)
    assert train_main(argv) == 4
    awaiting = load_checkpoint(os.path.join(out, "last.pth"))["awaiting"]
    assert awaiting == os.path.join("labelling", "round1")  # relative: the run folder can be moved or copied
    folder = os.path.join(out, awaiting)
    assert os.path.isfile(os.path.join(folder, "label_studio_tasks.json"))
    resume = [*argv, "--resume", os.path.join(out, "last.pth")]
    assert train_main(resume) == 2  # labels not imported yet
    tree = etree.parse(os.path.join(folder, "cvat_annotations.xml"))
    first = tree.find("image")
    removed = [
        (b.get("label"), *(float(b.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")))
        for b in first.findall("box")
    ]
    kept = sum(len(image.findall("box")) for image in tree.findall("image")) - len(removed)
    for box in first.findall("box"):
        first.remove(box)
    etree.SubElement(first, "box", label="circle", xtl="2", ytl="2", xbr="40", ybr="40")
    edited = str(tmp_path / "edited.xml")
    tree.write(edited)
    assert import_main(["--run", out, "--labels", edited]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts["round"] == 1 and counts["images"] == 3

    # by hand: the new circle pairs with the removed model box it overlaps most at IoU >= 0.3, if any
    def iou(a, b):
        w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
        inter = max(w, 0) * max(h, 0)
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    best = max(((iou(r[1:], (2, 2, 40, 40)), r[0]) for r in removed), default=(0.0, None))
    paired = best[0] >= 0.3
    assert counts["deleted"] == len(removed) - paired and counts["added"] == (not paired)
    assert counts["moved"] == (paired and best[0] < 0.8)
    assert counts["relabelled"] == (paired and best[0] >= 0.8 and best[1] != "circle")
    assert counts["confirmed"] == kept + (paired and best[0] >= 0.8 and best[1] == "circle")
    assert train_main(resume) == 0
    ckpt = load_checkpoint(os.path.join(out, "last.pth"))
    labelled = ASMState.from_state(ckpt["asm"]).labelled
    assert len(labelled) == 9 and ckpt["awaiting"] is None
    image_id = json.load(open(os.path.join(folder, "imported.json")))["records"][0]["image_id"]
    assert labelled[image_id].boxes.tolist() == [[2.0, 2.0, 40.0, 40.0]] and labelled[
        image_id
    ].labels.tolist() == [1]
    assert (
        ckpt["asm"]["rounds"][0]["drawn"] + ckpt["asm"]["rounds"][0]["moved"] >= 1
    )  # a move is cheaper than a draw


def _task(task_id, file_name, result):
    return {"id": task_id, "data": {"image": file_name}, "annotations": [{"result": result}]}


def _rect(x, y, w, h, label="cat", rotation=0):
    return {
        "type": "rectanglelabels",
        "original_width": 100,
        "original_height": 100,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]},
    }


def test_label_studio_polygons_rotation_uploads_and_duplicates(tmp_path, caplog):
    """Uploaded names match, polygons and rotated rectangles become counted bounding boxes, and a
    second task for one image is refused (it would replace the first and the counts would be wrong)."""
    from tools.loop.labelling import _read_label_studio

    pre = [Record("a", "imgs/raccoon-109.jpg", 100, 100, np.zeros((0, 4)), np.zeros(0, np.int64))]
    polygon = {
        "type": "polygonlabels",
        "original_width": 100,
        "original_height": 100,
        "value": {"points": [[10, 20], [30, 25], [20, 40]], "polygonlabels": ["cat"]},
    }
    tasks = [
        _task(1, "/data/upload/1/3f2a1b7c-raccoon-109.jpg", [_rect(10, 10, 20, 10, rotation=90), polygon])
    ]
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(tasks))
    with caplog.at_level("WARNING"):
        found = _read_label_studio(str(path), pre, ["cat", "dog"])
    boxes, labels = found["imgs/raccoon-109.jpg"]
    # 20 x 10 turned 90 degrees clockwise around (10, 10): x 0..10, y 10..30
    np.testing.assert_allclose(boxes, [[0, 10, 10, 30], [10, 20, 30, 40]], atol=1e-9)
    assert labels == [1, 1]
    assert "1 polygon boxes kept as their axis-aligned bounding boxes" in caplog.text
    assert "1 rotated boxes kept" in caplog.text
    path.write_text(json.dumps(tasks + [_task(2, "imgs/raccoon-109.jpg", [_rect(1, 1, 5, 5)])]))
    with pytest.raises(
        AnnotationError, match="task 2: a second task for image 'imgs/raccoon-109.jpg' \\(task 1"
    ):
        _read_label_studio(str(path), pre, ["cat"])


def test_every_importer_refuses_an_empty_box(tmp_path):
    folder, _ = _round(tmp_path)
    coco = {
        "images": [{"id": 1, "file_name": "imgs/a.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, -3, 4], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "cat"}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(AnnotationError, match="empty or inverted"):
        import_round(folder, str(path))


def test_tasks_carry_a_servable_image_url_and_the_al_estimate(tmp_path):
    pre = [Record("a", "imgs/my photo.jpg", 200, 100, [[10, 10, 50, 50]], [1])]
    folder = str(tmp_path / "round1")
    export_round(folder, 3, pre, [np.full(1, 0.9)], RecordSet(pre, CLASSES, str(tmp_path / "root")), [0.25])
    task = json.load(open(os.path.join(folder, "label_studio_tasks.json")))[0]
    assert task["data"]["image"] == "/data/local-files/?d=imgs/my%20photo.jpg"  # not a filesystem path
    assert task["data"]["file_name"] == "imgs/my photo.jpg" and task["data"]["al_ratio_estimate"] == 0.25
    assert task["data"]["asm_round"] == 3


def test_a_small_adjustment_counts_as_confirmed_and_is_told(tmp_path, caplog):
    folder, pre = _round(tmp_path)
    tasks = json.load(open(os.path.join(folder, "label_studio_tasks.json")))
    for k, t in enumerate(tasks):
        t["id"] = k + 1
        t["annotations"] = [{"result": t["predictions"][0]["result"]}]
    tasks[0]["annotations"][0]["result"][0]["value"]["x"] += 1.0  # 2 px of 200: IoU 0.9, still confirmed
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(tasks))
    with caplog.at_level("INFO"):
        imported = import_round(folder, str(path))
    assert imported["edits"]["confirmed"] == 4 and imported["nudged"] == 1
    assert "1 confirmed boxes were adjusted a little" in caplog.text


@pytest.mark.slow
def test_labelstudio_round_bad_inputs_end_in_one_line(tmp_path, caplog, monkeypatch):
    from labelstudio_round import main as ls_main

    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    assert ls_main(["push", "--run", str(tmp_path / "nothing"), "--token", "t"]) == 2
    assert "no checkpoint; give the output folder" in caplog.text
    out = str(tmp_path / "run")
    assert train_main(paused_demo_argv(tmp_path, out)) == 4
    caplog.clear()
    assert ls_main(["push", "--run", out]) == 2  # no token anywhere
    assert "no Label Studio API token" in caplog.text
    caplog.clear()
    assert ls_main(["push", "--run", out, "--url", "http://127.0.0.1:9", "--token", "t"]) == 2
    assert "Label Studio is not reachable" in caplog.text
    caplog.clear()
    assert ls_main(["pull", "--run", out, "--url", "http://127.0.0.1:9", "--token", "t"]) == 2
    assert "never pushed to Label Studio" in caplog.text
    folder = os.path.join(out, "labelling", "round1")
    with open(os.path.join(folder, "label_studio.json"), "w") as f:
        json.dump({"url": "http://127.0.0.1:9", "project": 7, "tasks": 3, "round": 1}, f)
    caplog.clear()
    assert ls_main(["push", "--run", out, "--url", "http://127.0.0.1:10", "--token", "t"]) == 2
    assert (
        "was pushed to http://127.0.0.1:9 (project 7), not http://127.0.0.1:10; label it there" in caplog.text
    )
