"""Datasets as labelling tools write them: LabelMe JSON (polygons, imageData), CVAT for images 1.1
(spaces in names, 2-decimal floats) and a Label Studio JSON export (uploaded names). Each fixture is
written in the tool's own layout; expected boxes are computed by hand in the comments."""

import base64
import io
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from datasets.build import DataOptions, build_datasets
from datasets.coco import decode_masks
from datasets.exports import ImageNames, load_cvat, load_label_studio, load_labelme
from datasets.records import AnnotationError
from train_asm_one import get_args_parser, main

W, H = 64, 48


def _args(tmp_path, *argv):
    argv = [*argv, "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    return DataOptions.of(vars(get_args_parser().parse_args(argv)))


def _image_bytes(seed: int, fmt: str = "JPEG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 200, (H, W, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


# -- LabelMe ---------------------------------------------------------------------------------------
def _labelme_shape(label, points, shape_type="polygon", group_id=None):
    """A shape as LabelMe 5 writes it."""
    return {
        "label": label,
        "points": points,
        "group_id": group_id,
        "description": "",
        "shape_type": shape_type,
        "flags": {},
        "mask": None,
    }


def _labelme_file(path, image_path, shapes, image_data=None, size=(W, H)):
    """A JSON as LabelMe 5 saves it (``ensure_ascii=False``, indent 2)."""
    data = {
        "version": "5.5.0",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": base64.b64encode(image_data).decode() if image_data else None,
        "imageHeight": size[1],
        "imageWidth": size[0],
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)


def _labelme_root(root, n=12):
    """``n`` images with their JSON beside them (LabelMe's default), the last one only embedded."""
    root.mkdir(parents=True)
    for i in range(n):
        data = _image_bytes(i)
        if i < n - 1:
            (root / f"img_{i}.jpg").write_bytes(data)
        shapes = [
            _labelme_shape("car", [[30, 28], [4, 5]], "rectangle"),  # drawn from the bottom-right corner
            _labelme_shape("person", [[40, 10], [60, 12], [50, 40]]),
        ]
        _labelme_file(str(root / f"img_{i}.json"), f"img_{i}.jpg", shapes, data if i == n - 1 else None)
    return root


def test_labelme_rectangles_polygons_circles_groups_and_embedded_images(tmp_path):
    root = _labelme_root(tmp_path / "lm", n=3)
    extra = [
        _labelme_shape("person", [[10, 10], [20, 10], [15, 20]], group_id=1),  # one person in two parts:
        _labelme_shape("person", [[30, 30], [40, 30], [35, 44]], group_id=1),  # box 10,10 .. 40,44
        _labelme_shape("car", [[50, 20], [53, 24]], "circle"),  # centre 50,20, radius 5: box 45,15 .. 55,25
        _labelme_shape("car", [[1, 1], [9, 9]], "line"),  # not an outline: counted
        _labelme_shape("car", [[1, 1], [9, 9]]),  # a polygon of 2 points: counted
    ]
    (root / "more.jpg").write_bytes(_image_bytes(9))
    _labelme_file(str(root / "more.json"), "more.jpg", extra)
    data = load_labelme(str(root), cache_dir=str(tmp_path / "cache"))
    assert data.classes == ("car", "person")
    records = {r.file_name: r for r in data.records}
    assert sorted(records) == ["img_0.jpg", "img_1.jpg", "img_2.jpg", "more.jpg"]
    np.testing.assert_allclose(records["img_0.jpg"].boxes, [[4, 5, 30, 28], [40, 10, 60, 40]])
    assert records["img_0.jpg"].labels.tolist() == [1, 2]
    more = records["more.jpg"]
    np.testing.assert_allclose(more.boxes, [[10, 10, 40, 44], [45, 15, 55, 25]], atol=1e-4)
    assert more.labels.tolist() == [2, 1] and len(more.masks[0]) == 2  # the group keeps both outlines
    masks = decode_masks(more)
    assert masks[0][15, 15] and masks[0][35, 35] and not masks[0][25, 25]
    more_json = str(root / "more.json")
    assert data.report.entries == [
        ("unsupported_shape", f"{more_json}: shapes[3]", "shape_type 'line' (not an object outline)"),
        ("bad_shape", f"{more_json}: shapes[4]", "a polygon of 2 points"),
        ("image_from_json", str(root / "img_2.json"), f"imageData written to {data.image_root}/img_2.jpg"),
    ]
    # the embedded image is written out with the others, under one root, at its real size
    assert data.image_root.startswith(str(tmp_path / "cache"))
    with Image.open(os.path.join(data.image_root, "img_2.jpg")) as im:
        assert im.size == (W, H)
    assert records["img_2.jpg"].masks[0] == [[4.0, 5.0, 30.0, 5.0, 30.0, 28.0, 4.0, 28.0]]


def test_labelme_3_spellings_and_images_in_another_folder(tmp_path):
    """LabelMe 3 wrote no shape_type (all polygons) and no image size; JSONs in annotations/ point
    to ../images/ with Windows separators."""
    root = tmp_path / "lm3"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.png").write_bytes(_image_bytes(1, "PNG"))
    data = {
        "imagePath": "..\\images\\a.png",
        "imageData": None,
        "lineColor": [0, 255, 0, 128],
        "shapes": [{"label": "dog", "line_color": None, "points": [[2, 3], [20, 3], [20, 30], [2, 30]]}],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "a.json").write_text(json.dumps(data))
    loaded = load_labelme(str(root))
    assert [r.file_name for r in loaded.records] == ["images/a.png"] and loaded.image_root == str(root)
    np.testing.assert_allclose(loaded.records[0].boxes, [[2, 3, 20, 30]])
    assert (loaded.records[0].width, loaded.records[0].height) == (W, H)
    assert loaded.report.counts == {"size_from_image": 1}


# -- CVAT -------------------------------------------------------------------------------------------
CVAT_HEAD = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>7</id>
      <name>traffic</name>
      <size>{n}</size>
      <mode>annotation</mode>
      <labels>
        <label>
          <name>person</name>
          <color>#fa3253</color>
          <type>any</type>
          <attributes>
          </attributes>
        </label>
        <label>
          <name>car</name>
          <color>#24b353</color>
          <type>any</type>
          <attributes>
          </attributes>
        </label>
      </labels>
    </task>
    <dumped>2024-05-01 10:00:00.000000+00:00</dumped>
  </meta>
"""


def _line(text, needle):
    """The 1-based line of ``text`` where ``needle`` first appears (what a report names)."""
    return text[: text.index(needle)].count("\n") + 1


def _cvat_image(k, name, shapes):
    return f'  <image id="{k}" name="{name}" width="{W}" height="{H}">\n{shapes}  </image>\n'


def _cvat_box(label, x0, y0, x1, y1, rotation=None):
    rot = f' rotation="{rotation:.2f}"' if rotation is not None else ""
    return (
        f'    <box label="{label}" source="manual" occluded="0" xtl="{x0:.2f}" ytl="{y0:.2f}" '
        f'xbr="{x1:.2f}" ybr="{y1:.2f}"{rot} z_order="0">\n    </box>\n'
    )


def _cvat_root(root, n=12, extra=""):
    """A 'CVAT for images 1.1' export: annotations.xml and images/ with spaces and parentheses."""
    (root / "images").mkdir(parents=True)
    images = ""
    for i in range(n):
        name = f"frame ({i}).jpg"
        (root / "images" / name).write_bytes(_image_bytes(i))
        shapes = _cvat_box("car", 4.5, 6.25, 30, 28.75) + (
            '    <polygon label="person" source="manual" occluded="0" '
            'points="40.00,10.00;60.00,12.50;50.00,40.00" z_order="0">\n    </polygon>\n'
        )
        images += _cvat_image(i, name, shapes)
    (root / "annotations.xml").write_text(CVAT_HEAD.format(n=n) + images + extra + "</annotations>\n")
    return root


def test_cvat_export_boxes_polygons_rotations_and_meta_labels(tmp_path):
    extra = _cvat_image(
        99,
        "frame (1).jpg",  # the same image a second time: counted, not used twice
        _cvat_box("car", 0, 0, 5, 5),
    )
    root = _cvat_root(tmp_path / "cvat", n=3, extra=extra)
    (root / "images" / "turned.jpg").write_bytes(_image_bytes(7))
    xml = (root / "annotations.xml").read_text()
    turned = _cvat_image(
        5,
        "turned.jpg",
        _cvat_box("car", 10, 10, 30, 20, rotation=90)  # 20 x 10 about centre 20,15: 15,5 .. 25,25
        + '    <ellipse label="person" source="manual" occluded="0" cx="40.00" cy="30.00" rx="6.00" ry="4.00" '
        'z_order="0">\n    </ellipse>\n'
        + '    <polyline label="person" source="manual" occluded="0" points="1.00,1.00;5.00,5.00" z_order="0">'
        "\n    </polyline>\n",
    )
    (root / "annotations.xml").write_text(xml.replace("</annotations>", turned + "</annotations>"))
    data = load_cvat(str(root))
    assert data.classes == ("person", "car")  # the <meta> order, not sorted
    records = {r.file_name: r for r in data.records}
    assert sorted(records) == ["frame (0).jpg", "frame (1).jpg", "frame (2).jpg", "turned.jpg"]
    np.testing.assert_allclose(records["frame (0).jpg"].boxes, [[4.5, 6.25, 30, 28.75], [40, 10, 60, 40]])
    assert records["frame (0).jpg"].labels.tolist() == [2, 1]
    np.testing.assert_allclose(records["turned.jpg"].boxes, [[15, 5, 25, 25], [34, 26, 46, 34]], atol=1e-4)
    xml, where = (root / "annotations.xml").read_text(), str(root / "annotations.xml")
    first, again = _line(xml, '<image id="1" '), _line(xml, '<image id="99" ')
    assert data.report.entries == [
        ("unsupported_shape", f"{where}: line {_line(xml, '<polyline')}", "<polyline> (not a box, polygon or ellipse)"),
        ("duplicate_image", f"{where}: line {again}", f"frame (1).jpg is also labelled at {where}: line {first} (not used twice)"),
        ("rotated_box", f"{where}: line {_line(xml, 'rotation=')}", "kept as the axis-aligned box that holds it"),
    ]  # fmt: skip


# -- Label Studio -----------------------------------------------------------------------------------
def _ls_result(label, x, y, w, h, kind="rectanglelabels", points=None):
    """A result as Label Studio exports it: percent of the image, the image's size beside."""
    value = (
        {"points": points, "closed": True}
        if points
        else {"x": x, "y": y, "width": w, "height": h, "rotation": 0}
    )
    value[kind] = [label]
    return {
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "value": value,
        "id": f"r{label}{x}",
        "from_name": "label",
        "to_name": "image",
        "type": kind,
        "origin": "manual",
    }


def _ls_task(k, image, results, cancelled=False):
    annotation = {
        "id": k,
        "completed_by": 1,
        "result": results,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": "2024-05-01T10:00:00.000000Z",
        "lead_time": 12.5,
        "task": k,
    }
    return {
        "id": k,
        "annotations": [annotation],
        "file_upload": os.path.basename(image),
        "drafts": [],
        "predictions": [],
        "data": {"image": image},
        "meta": {},
        "created_at": "2024-05-01T09:00:00.000000Z",
        "inner_id": k,
        "total_annotations": 1,
        "cancelled_annotations": 0,
        "total_predictions": 0,
        "project": 1,
    }


def _ls_root(root, n=12, tasks_extra=()):
    """Label Studio's JSON export of uploaded images (renamed ``<8 hex>-<name>``), and the images
    as the user has them."""
    (root / "images").mkdir(parents=True)
    tasks = []
    for i in range(n):
        (root / "images" / f"cell_{i}.jpg").write_bytes(_image_bytes(i))
        results = [
            _ls_result("RBC", 6.25, 12.5, 37.5, 50),  # 4,6 .. 28,30 in pixels of 64 x 48
            _ls_result(
                "WBC", 0, 0, 0, 0, "polygonlabels", [[62.5, 25], [93.75, 25], [78.125, 75]]
            ),  # 40,12 .. 60,36
        ]
        tasks.append(_ls_task(i + 1, f"/data/upload/1/{i:08x}-cell_{i}.jpg", results))
    tasks += list(tasks_extra)
    (root / "export.json").write_text(json.dumps(tasks))
    return root


def test_label_studio_export_with_uploaded_names_and_unfinished_tasks(tmp_path):
    unfinished = _ls_task(90, "/data/upload/1/0000005a-cell_1.jpg", [], cancelled=True)
    local = _ls_task(91, "/data/local-files/?d=images%2Fextra%20one.jpg", [_ls_result("WBC", 50, 50, 25, 25)])
    root = _ls_root(tmp_path / "ls", n=3, tasks_extra=[unfinished, local])
    (root / "images" / "extra one.jpg").write_bytes(_image_bytes(5))
    data = load_label_studio(str(root / "export.json"), str(root / "images"))
    assert data.classes == ("RBC", "WBC")
    records = {r.file_name: r for r in data.records}
    assert sorted(records) == ["cell_0.jpg", "cell_1.jpg", "cell_2.jpg", "extra one.jpg"]
    np.testing.assert_allclose(records["cell_0.jpg"].boxes, [[4, 6, 28, 30], [40, 12, 60, 36]], atol=1e-4)
    np.testing.assert_allclose(records["extra one.jpg"].boxes, [[32, 24, 48, 36]], atol=1e-4)
    assert data.report.counts == {"no_annotation": 1}


def test_image_names_are_matched_by_path_name_or_upload_name():
    names = ImageNames(["a/b.jpg", "c d.jpg", "x/raccoon-1.jpg"])
    assert names.find("a/b.jpg") == "a/b.jpg"
    assert names.find("/data/upload/3/3f2a1b7c-raccoon-1.jpg") == "x/raccoon-1.jpg"
    assert names.find("/data/local-files/?d=c%20d.jpg") == "c d.jpg"
    assert names.find("http://host/media/b.jpg") == "a/b.jpg"
    assert names.find("zzz.jpg") is None


# -- bad input, for each reader ---------------------------------------------------------------------
def _write(path, text, encoding="utf-8", bom=False):
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))


def test_labelme_bad_inputs_are_counted_or_one_line(tmp_path):
    box = _labelme_shape("car", [[1, 1], [9, 9]], "rectangle")
    root = _one_labelme(tmp_path, [box])
    # a missing image (no file, nothing embedded): counted
    _labelme_file(str(root / "gone.json"), "gone.jpg", [box])
    # empty shapes: an image without objects, kept
    (root / "empty.jpg").write_bytes(_image_bytes(1))
    _labelme_file(str(root / "empty.json"), "empty.jpg", [])
    # a path outside the root is not read; the same name beside the JSON is
    (root / "outside.jpg").write_bytes(_image_bytes(2))
    _labelme_file(str(root / "outside.json"), "../../../etc/outside.jpg", [box])
    # a second JSON for the same image
    _labelme_file(str(root / "copy.json"), "a.jpg", [box])
    # invalid JSON, Latin-1, a BOM (read), a JSON that is not LabelMe's
    _write(root / "broken.json", '{"shapes": [')
    _write(
        root / "latin.json",
        json.dumps({"shapes": [], "imagePath": "café.jpg"}, ensure_ascii=False),
        "latin-1",
    )
    (root / "bom.jpg").write_bytes(_image_bytes(3))
    _write(root / "bom.json", json.dumps({"shapes": [box], "imagePath": "bom.jpg"}), bom=True)
    _write(root / "other.json", json.dumps([1, 2]))
    data = load_labelme(str(root))
    assert sorted(r.file_name for r in data.records) == ["a.jpg", "bom.jpg", "empty.jpg", "outside.jpg"]
    at = (root / "latin.json").read_bytes().index(b"\xe9")
    assert data.report.entries == [
        ("bad_annotation_file", str(root / "broken.json"), "malformed JSON at line 1: Expecting value"),
        ("bad_annotation_file", str(root / "latin.json"), f"not UTF-8 (byte 0xe9 at position {at}); save it as UTF-8"),
        ("bad_annotation_file", str(root / "other.json"), "no 'shapes' list: not a LabelMe file"),
        (
            "path_outside_root",
            str(root / "outside.json"),
            f"field 'imagePath' = '../../../etc/outside.jpg' resolves outside the image root {root}; "
            "the name beside the JSON is used",
        ),
        ("duplicate_image", str(root / "copy.json"), f"a.jpg is also {root / 'a.json'}'s image (not used twice)"),
        ("missing_image", str(root / "gone.json"), str(root / "gone.jpg")),
        ("size_from_image", str(root / "bom.json"), "annotated (0, 0), file (64, 48)"),  # bom.json has no size
    ]  # fmt: skip


def test_labelme_unknown_label_is_one_line_or_counted(tmp_path):
    root = _one_labelme(tmp_path, [_labelme_shape("zebra", [[1, 1], [9, 9]], "rectangle")])
    with pytest.raises(
        AnnotationError, match=r"a.json: shapes\[0\]: unknown label 'zebra'; known: \['car'\]"
    ):
        load_labelme(str(root), classes=["car"])
    data = load_labelme(str(root), classes=["car"], skip_unknown_classes=True)
    assert data.report.counts == {"unknown_class": 1, "labels_lost": 1}


def test_cvat_bad_inputs_are_counted_or_one_line(tmp_path):
    root = tmp_path / "cvat"
    (root / "images").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (root / "images" / name).write_bytes(_image_bytes(0))
    body = (
        _cvat_image(0, "a.jpg", '    <polygon label="car" points="1.00,1.00;5.00,5.00"/>\n')  # 2 points
        + _cvat_image(1, "b.jpg", "")  # no shapes: kept
        + _cvat_image(2, "gone.jpg", _cvat_box("car", 1, 1, 9, 9))  # missing
        + _cvat_image(3, "../../etc/passwd.jpg", _cvat_box("car", 1, 1, 9, 9))  # outside: not matched
        + _cvat_image(4, "b.jpg", _cvat_box("car", 1, 1, 9, 9))  # duplicate
    )
    xml = CVAT_HEAD.format(n=5) + body + "</annotations>\n"
    _write(root / "annotations.xml", xml, bom=True)  # a BOM is read
    data = load_cvat(str(root))
    assert sorted(r.file_name for r in data.records) == ["a.jpg", "b.jpg"]
    assert sum(len(r) for r in data.records) == 0
    images, where = root / "images", str(root / "annotations.xml")
    at = {k: where + ": line " + str(_line(xml, f'<image id="{k}" ')) for k in range(5)}
    assert data.report.entries == [
        ("bad_shape", f"{where}: line {_line(xml, '<polygon')}", "a polygon of 2 points"),
        ("missing_image", at[2], f"'gone.jpg' is not under {images}"),
        (
            "missing_image",
            at[3],
            f"'../../etc/passwd.jpg' is not under {images}",
        ),  # looked for in images/ only
        ("duplicate_image", at[4], f"b.jpg is also labelled at {at[1]} (not used twice)"),
    ]
    # unknown label, broken XML, Latin-1 without a declaration: one line each
    _write(
        root / "annotations.xml",
        CVAT_HEAD.format(n=1) + _cvat_image(0, "a.jpg", _cvat_box("bus", 1, 1, 9, 9)) + "</annotations>",
    )
    with pytest.raises(AnnotationError, match=r"annotations.xml: line \d+: unknown label 'bus'"):
        load_cvat(str(root))
    _write(root / "annotations.xml", "<annotations><image name='a.jpg'>")
    with pytest.raises(AnnotationError, match=r"annotations.xml: malformed CVAT XML at line 1"):
        load_cvat(str(root))
    _write(root / "annotations.xml", "<annotations><image name='café.jpg'/></annotations>", "latin-1")
    with pytest.raises(AnnotationError, match=r"malformed CVAT XML at line 1"):
        load_cvat(str(root))
    # Latin-1 with its declaration is valid XML, and read
    (root / "images" / "café.jpg").write_bytes(_image_bytes(4))
    _write(
        root / "annotations.xml",
        "<?xml version='1.0' encoding='ISO-8859-1'?><annotations><image name='café.jpg' width='64' height='48'>"
        + _cvat_box("car", 1, 1, 9, 9) + "</image></annotations>",
        "latin-1",
    )  # fmt: skip
    assert [r.file_name for r in load_cvat(str(root)).records] == ["café.jpg"]


def test_label_studio_bad_inputs_are_counted_or_one_line(tmp_path):
    root = tmp_path / "ls"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(_image_bytes(0))
    (root / "images" / "b.jpg").write_bytes(_image_bytes(1))
    tasks = [
        _ls_task(
            1,
            "/data/upload/1/0000aaaa-a.jpg",
            [_ls_result("RBC", 0, 0, 0, 0, "polygonlabels", [[1, 1], [5, 5]])],
        ),
        _ls_task(2, "/data/upload/1/0000bbbb-b.jpg", []),  # empty: kept, no objects
        _ls_task(3, "/data/upload/1/0000cccc-gone.jpg", [_ls_result("RBC", 1, 1, 5, 5)]),
        _ls_task(4, "/data/upload/1/0000dddd-b.jpg", [_ls_result("RBC", 1, 1, 5, 5)]),  # duplicate
        _ls_task(5, "../../../etc/b.jpg", [_ls_result("RBC", 1, 1, 5, 5)]),  # outside: the name only
    ]
    _write(root / "export.json", json.dumps(tasks), bom=True)
    data = load_label_studio(str(root / "export.json"), str(root / "images"), classes=["RBC"])
    assert sorted(r.file_name for r in data.records) == ["a.jpg", "b.jpg"]
    where, images = str(root / "export.json"), root / "images"
    assert data.report.entries == [
        ("bad_shape", f"{where}: task 1: result 0", "a polygon of 2 points"),
        ("missing_image", f"{where}: task 3", f"'/data/upload/1/0000cccc-gone.jpg' is not under {images}"),
        (
            "duplicate_image",
            f"{where}: task 4",
            f"b.jpg is also labelled at {where}: task 2 (not used twice)",
        ),
        (
            "duplicate_image",
            f"{where}: task 5",
            f"b.jpg is also labelled at {where}: task 2 (not used twice)",
        ),
    ]
    cases = {
        "unknown": (json.dumps([_ls_task(1, "a.jpg", [_ls_result("zebra", 1, 1, 5, 5)])]), r"task 1: result 0: unknown label 'zebra'"),
        "broken": ("[{", r"malformed JSON at line 1"),
        "latin": (json.dumps([_ls_task(1, "é.jpg", [])], ensure_ascii=False), r"not UTF-8 \(byte 0xe9"),
        "minimal": (json.dumps({"image": "a.jpg"}), r"a list of tasks"),
    }  # fmt: skip
    for name, (text, match) in cases.items():
        _write(root / f"{name}.json", text, "latin-1" if name == "latin" else "utf-8")
        with pytest.raises(AnnotationError, match=match):
            load_label_studio(str(root / f"{name}.json"), str(root / "images"), classes=["RBC"])


# -- one command per layout -------------------------------------------------------------------------
def _layout(tmp_path, kind):
    if kind == "labelme":
        return ["--labelme-root", str(_labelme_root(tmp_path / "lm"))]
    if kind == "cvat":
        return ["--cvat-root", str(_cvat_root(tmp_path / "cvat"))]
    root = _ls_root(tmp_path / "ls")
    return ["--ls-json", str(root / "export.json"), "--ls-images", str(root / "images")]


@pytest.mark.parametrize("kind", ["labelme", "cvat", "labelstudio"])
@pytest.mark.slow  # trains: left out of the mutation runs
def test_each_tool_export_trains_evaluates_and_mines_with_one_command(tmp_path, capsys, kind):
    flags = ["--dataset", kind, *_layout(tmp_path, kind)]
    train, val = build_datasets(_args(tmp_path, *flags))
    assert len(train) + len(val) == 12 and len(val) == 2  # --val-fraction 0.2 of 12, seeded
    assert (tmp_path / "out" / "splits" / "val.txt").read_text().count("\n") == 2
    argv = [*flags, "--min-size", "64", "--epochs", "1", "--round-epochs", "1", "--K", "3", "--initial", "4",
            "--max-rounds", "1", "--weights-backbone", "none", "--output-dir", str(tmp_path / "run"),
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rounds"] == 1 and summary["labelled_images"] == 4 + 3
    report = json.loads((tmp_path / "run" / "load_report.json").read_text())
    assert sum(report["train"]["boxes_per_class"].values()) == 2 * len(train)


def test_cvat_occluded_is_kept_and_the_xml_and_images_can_be_named_apart(tmp_path):
    root = _cvat_root(tmp_path / "cvat", n=2)
    xml = (root / "annotations.xml").read_text()
    (root / "annotations.xml").write_text(
        xml.replace('occluded="0" xtl="4.50"', 'occluded="1" xtl="4.50"', 1)
    )
    os.rename(root / "images", tmp_path / "elsewhere")
    flags = [
        "--dataset",
        "cvat",
        "--cvat-xml",
        str(root / "annotations.xml"),
        "--cvat-images",
        str(tmp_path / "elsewhere"),
    ]
    data = load_cvat(str(root / "annotations.xml"), images=str(tmp_path / "elsewhere"))
    records = {r.file_name: r for r in data.records}
    assert records["frame (0).jpg"].difficult.tolist() == [True, False]  # the occluded box, then the polygon
    assert records["frame (1).jpg"].difficult.tolist() == [False, False]
    assert _args(tmp_path, *flags).cvat_images == str(tmp_path / "elsewhere")
    with pytest.raises(AnnotationError, match=r"nowhere: no such folder \(--cvat-images"):
        load_cvat(str(root / "annotations.xml"), images=str(tmp_path / "nowhere"))
    with pytest.raises(
        AnnotationError, match=r"missing.xml: not found; --cvat-root \(or --cvat-xml\) is the folder"
    ):
        load_cvat(str(tmp_path / "missing.xml"))


def _one_labelme(tmp_path, shapes=None, **fields):
    """A LabelMe folder of one image and its JSON, the JSON's fields edited the way files go wrong."""
    root = tmp_path / "lm"
    root.mkdir()
    (root / "a.jpg").write_bytes(_image_bytes(1))
    shapes = shapes or [_labelme_shape("car", [[4, 5], [30, 28]], "rectangle")]
    _labelme_file(str(root / "a.json"), "a.jpg", shapes)
    data = json.loads((root / "a.json").read_text())
    data.update(fields)
    (root / "a.json").write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("value", ["800px", float("inf"), -3, 12.5, True])
def test_a_labelme_size_that_is_not_a_whole_number_names_the_file_and_field(tmp_path, value):
    root = _one_labelme(tmp_path, imageWidth=value)
    data = load_labelme(str(root), cache_dir=str(tmp_path / "cache"))  # the file is counted and skipped
    assert data.report.counts == {"bad_annotation_file": 1}
    (why,) = data.report.of("bad_annotation_file")
    assert "a.json" in why[0] and "field 'imageWidth' must be a whole number of pixels" in why[1]


def test_labelme_points_that_are_not_pairs_are_counted_not_read_as_other_boxes(tmp_path):
    triples = _labelme_shape("car", [[100, 100, 7], [200, 180, 9]], "rectangle")  # not [7, 9, 180, 200]
    root = _one_labelme(tmp_path, shapes=[triples, _labelme_shape("car", [[4, 5], [30, 28]], "rectangle")])
    data = load_labelme(str(root), cache_dir=str(tmp_path / "cache"))
    np.testing.assert_allclose(data.records[0].boxes, [[4, 5, 30, 28]])  # the good shape alone
    assert data.report.counts == {"bad_shape": 1}
    assert "pairs, got shape [2, 3]" in data.report.of("bad_shape")[0][1]


def test_a_labelme_group_id_that_is_a_list_is_counted(tmp_path):
    bad = _labelme_shape("car", [[4, 5], [30, 28]], "rectangle", group_id=[1, 2])
    root = _one_labelme(
        tmp_path, shapes=[bad, _labelme_shape("car", [[1, 1], [9, 9]], "rectangle", group_id=3)]
    )
    data = load_labelme(str(root), cache_dir=str(tmp_path / "cache"))
    np.testing.assert_allclose(data.records[0].boxes, [[1, 1, 9, 9]])
    assert data.report.counts == {"bad_shape": 1}


def test_a_labelme_image_path_of_dots_uses_the_jsons_name_for_the_embedded_image(tmp_path):
    root = _one_labelme(tmp_path, imagePath="..", imageData=base64.b64encode(_image_bytes(2)).decode())
    (root / "a.jpg").unlink()  # only the embedded image
    data = load_labelme(str(root), cache_dir=str(tmp_path / "cache"))
    assert [r.file_name for r in data.records] == ["a.jpg"]
    with Image.open(os.path.join(data.image_root, "a.jpg")) as im:
        assert im.size == (W, H)


def test_a_labelme_image_path_with_a_nul_byte_names_the_file_and_field(tmp_path):
    root = _one_labelme(tmp_path, imagePath="a\x00.jpg")
    data = load_labelme(str(root), cache_dir=str(tmp_path / "cache"))
    assert data.report.counts == {"bad_annotation_file": 1}
    assert "field 'imagePath' must be a file name" in data.report.of("bad_annotation_file")[0][1]


def test_labelme_image_data_that_is_not_base64_reads_the_image_on_disk(tmp_path):
    root = _one_labelme(tmp_path, imageData="not base64 !!")
    data = load_labelme(str(root), cache_dir=str(tmp_path / "cache"))
    assert [r.file_name for r in data.records] == ["a.jpg"]  # kept: its image is on disk
    assert data.report.counts == {"bad_image_data": 1}


@pytest.mark.parametrize("result", [{"value": {}}, "[]"])
def test_a_label_studio_result_that_is_not_a_list_is_refused_naming_the_task(tmp_path, result):
    bad = _ls_task(77, "/data/upload/1/0000004d-cell_0.jpg", [])
    bad["annotations"][0]["result"] = result  # its 9 boxes would be lost and the image trained as empty
    root = _ls_root(tmp_path / "ls", n=2, tasks_extra=[bad])
    with pytest.raises(
        AnnotationError, match=r"export.json: task 77: the annotation's 'result' must be a list"
    ):
        load_label_studio(str(root / "export.json"), str(root / "images"))


def test_a_cvat_video_export_is_named_as_such(tmp_path):
    root = tmp_path / "video"
    (root / "images").mkdir(parents=True)
    track = (
        '  <track id="0" label="car" source="manual">\n'
        '    <box frame="0" keyframe="1" outside="0" occluded="0" xtl="1" ytl="2" xbr="10" ybr="20" z_order="0"/>\n'
        "  </track>\n"
    )
    (root / "annotations.xml").write_text(CVAT_HEAD.format(n=1) + track + "</annotations>\n")
    with pytest.raises(AnnotationError, match=r"a CVAT video export \(<track> elements\)"):
        load_cvat(str(root), str(root / "images"))


def test_cvat_xml_with_entity_declarations_is_refused_as_the_docs_say(tmp_path):
    root = _cvat_root(tmp_path / "cvat", n=1)
    xml = (root / "annotations.xml").read_text()
    head, body = xml.split("<annotations>", 1)
    (root / "annotations.xml").write_text(
        head + '<!DOCTYPE annotations [<!ENTITY who "car">]>\n<annotations>' + body
    )
    with pytest.raises(AnnotationError, match="declares XML entities; refusing to expand them"):
        load_cvat(str(root), str(root / "images"))


def test_a_label_studio_size_that_disagrees_with_the_file_is_read_on_the_file_and_counted(tmp_path):
    """Label Studio's percentages are of the image it showed: a task whose original size says
    half the file's (32 x 24 for a 64 x 48 file) still gets its boxes in the file's pixels."""
    half = _ls_result("RBC", 6.25, 12.5, 37.5, 50)  # 4,6 .. 28,30 in pixels of 64 x 48
    half["original_width"], half["original_height"] = W // 2, H // 2
    second = dict(half, id="again")
    root = _ls_root(
        tmp_path / "ls", n=1, tasks_extra=[_ls_task(50, "/data/upload/1/00000032-odd.jpg", [half, second])]
    )
    (root / "images" / "odd.jpg").write_bytes(_image_bytes(3))
    data = load_label_studio(str(root / "export.json"), str(root / "images"))
    odd = next(r for r in data.records if r.file_name == "odd.jpg")
    np.testing.assert_allclose(odd.boxes, [[4, 6, 28, 30]] * 2, atol=1e-4)
    assert data.report.counts == {"size_mismatch": 1}  # once for the task
    ((reason, where, detail),) = data.report.entries
    assert "task 50" in where and "original size (32.0, 24.0), file (64, 48)" in detail


def test_split_files_divide_an_export_and_an_image_in_neither_joins_the_training_pool(caplog):
    from datasets.exports import split_by_names
    from datasets.records import Record, RecordSet
    from datasets.report import LoadReport

    report = LoadReport()
    report.add("clipped_box", "x.json", "box 0")
    records = [Record(k, f"{k}.jpg", 8, 8) for k in ("a", "b", "c", "d")]
    data = RecordSet(records, ("cat",), "/imgs", {1: 7}, report)
    with caplog.at_level("WARNING"):
        train, val = split_by_names(data, ["a", "b"], ["c"])
    assert [r.image_id for r in train.records] == ["a", "b", "d"] and [r.image_id for r in val.records] == [
        "c"
    ]
    assert "1 images are in neither split file" in caplog.text and "e.g. d" in caplog.text
    assert train.report is report and val.report.entries == []  # the load report stays with training
    assert (
        train.classes == val.classes == ("cat",)
        and val.label_to_cat_id == {1: 7}
        and val.image_root == "/imgs"
    )
    caplog.clear()
    with caplog.at_level("WARNING"):
        train, val = split_by_names(data, ["a", "b"], ["c", "d"])
    assert caplog.text == "" and len(train) == 2 and len(val) == 2


def test_label_studio_brushes_and_key_points_are_counted_and_choices_are_not_shapes(tmp_path):
    from datasets.exports import Item, label_studio_shapes
    from datasets.records import AnnotationError
    from datasets.report import LoadReport

    brush = {"type": "brushlabels", "value": {"rle": [0, 1], "brushlabels": ["RBC"]}}
    point = {"type": "keypointlabels", "value": {"x": 5, "y": 5, "keypointlabels": ["RBC"]}}
    choice = {"type": "choices", "value": {"choices": ["blurry"]}}
    box = _ls_result("RBC", 6.25, 12.5, 37.5, 50)
    item = Item("cell_0.jpg", "export.json: task 3")
    report = LoadReport()
    shapes = label_studio_shapes(item, [brush, choice, point, box], (W, H), report)
    assert [s.kind for s in shapes] == ["box"]
    assert report.entries == [
        ("unsupported_shape", "export.json: task 3: result 0", "brushlabels (not a box, polygon or ellipse)"),
        (
            "unsupported_shape",
            "export.json: task 3: result 2",
            "keypointlabels (not a box, polygon or ellipse)",
        ),
    ]
    with pytest.raises(AnnotationError, match=r"task 3: result 2: keypointlabels \(not a box"):
        label_studio_shapes(item, [choice, box, point], (W, H))  # a round's import: no report, one line


def test_each_labelme_shape_becomes_an_outline_or_a_counted_fate(tmp_path):
    """One file with every kind LabelMe saves, and the ways a shape goes wrong; the outlines and the
    report written out by hand."""
    import numpy as np

    from datasets.exports import parse_labelme
    from datasets.report import LoadReport

    shapes = [
        _labelme_shape("car", [[30, 20], [10, 5]], "rectangle", group_id=4),  # drawn from its far corner
        _labelme_shape("car", [[1, 1], [9, 1], [5, 8]], "polygon"),
        _labelme_shape("ball", [[20, 20], [23, 24]], "circle"),  # radius 5
        {"label": "old", "points": [[0, 0], [4, 0], [4, 4]]},  # LabelMe 3: no shape_type, a polygon
        _labelme_shape("  ", [[0, 0], [4, 4]], "rectangle"),  # no label
        _labelme_shape("car", [[1, 1], [2, 2]], "polygon"),  # two points
        _labelme_shape("car", [[1, 1]], "rectangle"),  # one corner
        _labelme_shape("car", [[1, 1], [2, 2]], "line"),
        _labelme_shape("car", [[1, 1], [2, 2]], "rectangle", group_id=True),
        _labelme_shape("car", "not points", "rectangle"),
    ]
    path = str(tmp_path / "a.json")
    _labelme_file(path, "a.jpg", shapes, size=(64, 48))
    report = LoadReport()
    item = parse_labelme(path, report)
    assert (item.name, item.size, item.embedded) == ("a.jpg", (64, 48), None)
    assert [(s.label, s.kind, s.group) for s in item.shapes] == [
        ("car", "box", 4), ("car", "polygon", None), ("ball", "polygon", None), ("old", "polygon", None),
    ]  # fmt: skip
    np.testing.assert_allclose(item.shapes[0].points, [[10, 5], [30, 20]])
    np.testing.assert_allclose(item.shapes[1].points, [[1, 1], [9, 1], [5, 8]])
    np.testing.assert_allclose(item.shapes[2].box, [15, 15, 25, 25], atol=0.1)
    where = [f"{path}: shapes[{k}]" for k in range(len(shapes))]
    assert report.entries[:5] == [
        ("bad_shape", where[4], "no label"),
        ("bad_shape", where[5], "a polygon of 2 points"),
        ("bad_shape", where[6], "a rectangle of 1 points"),
        ("unsupported_shape", where[7], "shape_type 'line' (not an object outline)"),
        ("bad_shape", where[8], "group_id must be a number or a name, got True"),
    ]
    assert report.entries[5][:2] == ("bad_shape", where[9]) and len(report.entries) == 6


def test_label_studio_ellipses_and_polygons_are_outlines_in_pixels():
    """Label Studio keeps x, y and the radii in percent of the image (radiusX of its width, radiusY of
    its height): an ellipse at 50%, 50% with radii 25%, 12.5% of a 64 x 48 image is centred at 32, 24
    with radii 16, 6."""
    from datasets.exports import Item, label_studio_shapes

    ellipse = _ls_result("RBC", 0, 0, 0, 0, "ellipselabels")
    ellipse["value"] = {
        "x": 50,
        "y": 50,
        "radiusX": 25,
        "radiusY": 12.5,
        "rotation": 0,
        "ellipselabels": ["RBC"],
    }
    polygon = _ls_result("WBC", 0, 0, 0, 0, "polygonlabels", [[25, 25], [75, 25], [50, 75]])
    item = Item("cell_0.jpg", "export.json: task 3")
    shapes = label_studio_shapes(item, [ellipse, polygon], (W, H))
    assert [(s.label, s.kind, s.where) for s in shapes] == [
        ("RBC", "polygon", "export.json: task 3: result 0"),
        ("WBC", "polygon", "export.json: task 3: result 1"),
    ]
    outline = shapes[0].points
    assert len(outline) >= 16
    np.testing.assert_allclose(np.hypot((outline[:, 0] - 32) / 16, (outline[:, 1] - 24) / 6), 1, atol=1e-6)
    np.testing.assert_allclose(outline.min(0), [16, 18], atol=1e-6)  # the extremes are on the outline
    np.testing.assert_allclose(outline.max(0), [48, 30], atol=0.5)
    np.testing.assert_allclose(shapes[1].points, [[16, 12], [48, 12], [32, 36]])
    stated_only = [dict(polygon, original_width=128, original_height=96)]  # no file size: the stated one
    np.testing.assert_allclose(
        label_studio_shapes(item, stated_only, (0, 0))[0].points, [[32, 24], [96, 24], [64, 72]]
    )


def test_image_names_are_found_by_path_base_name_or_upload_name_in_that_order():
    from datasets.exports import ImageNames

    names = ImageNames(["a/cat.jpg", "b/cat.jpg", "dog.png"])
    assert names.find("b/cat.jpg") == "b/cat.jpg"  # the path itself first
    assert names.find("elsewhere/cat.jpg") == "a/cat.jpg"  # then the first file of that base name
    assert names.find("b\\cat.jpg") == "b/cat.jpg"  # Windows separators
    assert names.find("/data/upload/3/1a2b3c4d-dog.png") == "dog.png"  # Label Studio's upload name
    assert names.find("/data/local-files/?d=b%2Fcat.jpg") == "b/cat.jpg"  # local files, quoted
    assert names.find("bird.jpg") is None


def test_image_files_walks_the_folder_sorted_skipping_hidden_ones(tmp_path):
    from datasets.exports import image_files

    for rel in (
        "b.jpg",
        "a.PNG",
        "sub/c.jpeg",
        "sub/deeper/d.jpg",
        ".hidden/e.jpg",
        "notes.txt",
        "sub/.x.jpg",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert image_files(str(tmp_path)) == ["a.PNG", "b.jpg", "sub/.x.jpg", "sub/c.jpeg", "sub/deeper/d.jpg"]


def test_an_embedded_image_is_named_by_its_kind_and_written_once(tmp_path):
    from datasets.exports import _place, _suffix

    png, jpg = _image_bytes(0, "PNG"), _image_bytes(0)
    assert (_suffix(png), _suffix(jpg)) == (".png", ".jpg")
    _place(str(tmp_path), "a.png", png, "unused")
    first = os.stat(tmp_path / "a.png").st_mtime_ns
    os.utime(tmp_path / "a.png", ns=(1, 1))
    _place(str(tmp_path), "a.png", png, "unused")  # the same bytes: left as they are
    assert os.stat(tmp_path / "a.png").st_mtime_ns == 1 != first
    _place(str(tmp_path), "a.png", png[:-1] + b"\0", "unused")  # the same size, other bytes: written
    assert (tmp_path / "a.png").read_bytes() == png[:-1] + b"\0"
    (tmp_path / "src.jpg").write_bytes(jpg)
    _place(str(tmp_path), "copy.jpg", None, str(tmp_path / "src.jpg"))  # on disk: copied
    assert (tmp_path / "copy.jpg").read_bytes() == jpg


@pytest.mark.parametrize("degrees", [30.0, 90.0, 200.0])
def test_rotated_rectangles_turn_clockwise_about_their_corner_or_centre_as_the_tools_say(degrees):
    """Against complex numbers: in image coordinates (y down) a clockwise turn by a is a multiplication
    by e^{ia}; Label Studio turns about the top-left corner, CVAT about the centre."""
    import cmath

    from datasets.exports import _rotated, _rotated_about_centre

    turn = cmath.exp(1j * math.radians(degrees))
    corner = complex(10, 20)
    expected = [corner + (complex(dx, dy) * turn) for dx, dy in ((0, 0), (30, 0), (30, 8), (0, 8))]
    np.testing.assert_allclose(
        _rotated(10, 20, 30, 8, degrees), [(z.real, z.imag) for z in expected], atol=1e-9
    )
    centre = complex(25, 24)
    box = [complex(10, 20), complex(40, 20), complex(40, 28), complex(10, 28)]
    expected = [centre + (z - centre) * turn for z in box]
    np.testing.assert_allclose(
        _rotated_about_centre(10, 20, 40, 28, degrees), [(z.real, z.imag) for z in expected], atol=1e-9
    )


def test_cvat_ellipses_and_rotated_boxes_are_outlines_with_masks(tmp_path):
    """With no polygon in the export, an ellipse and a rotated box still give masks: an ellipse is
    its 24-point outline, a box turned by 30 degrees its four turned corners; an image-level tag
    and a comment are no shapes."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(_image_bytes(1))
    shapes = (
        _cvat_box("car", 10, 10, 30, 20, rotation=30)  # 20 x 10 about 20,15, clockwise on the screen
        + '    <ellipse label="person" source="manual" occluded="0" cx="40.00" cy="30.00" rx="6.00" ry="4.00" '
        'z_order="0">\n    </ellipse>\n'
        + '    <tag label="car" source="manual">\n    </tag>\n    <!-- a comment -->\n'
    )
    (tmp_path / "annotations.xml").write_text(
        CVAT_HEAD.format(n=1) + _cvat_image(0, "a.jpg", shapes) + "</annotations>\n"
    )
    data = load_cvat(str(tmp_path))
    (record,) = data.records
    assert record.labels.tolist() == [2, 1] and record.masks is not None and len(record.masks) == 2
    xml = (tmp_path / "annotations.xml").read_text()
    where = f"{tmp_path / 'annotations.xml'}: line {_line(xml, 'rotation=')}"
    assert data.report.entries == [
        ("rotated_box", where, "kept as the axis-aligned box that holds it")
    ]  # no tag
    turned, ellipse = (np.asarray(m[0]).reshape(-1, 2) for m in record.masks)
    # clockwise with y down: each corner's offset from the centre times e^(i 30 deg), as complex numbers
    offsets = np.array([-10 - 5j, 10 - 5j, 10 + 5j, -10 + 5j]) * np.exp(1j * np.radians(30))
    expected = sorted(zip(np.round(20 + offsets.real, 4).tolist(), np.round(15 + offsets.imag, 4).tolist()))
    assert sorted(map(tuple, np.round(turned, 4).tolist())) == expected  # not the box that holds them
    unit = (ellipse - [40, 30]) / [6, 4]
    assert len(ellipse) == 24 and np.allclose(unit**2 @ [1, 1], 1.0)  # on the ellipse ...
    angles = np.sort(np.arctan2(unit[:, 1], unit[:, 0]) % (2 * np.pi))
    assert np.allclose(angles, np.arange(24) * 2 * np.pi / 24, atol=1e-9)  # ... once round, evenly


def test_a_labelme_json_read_field_by_field(tmp_path):
    """LabelMe 3 wrote polygons without a shape_type; a shape without a label, a polygon of two
    points and imageData that is not base64 are counted, not read; a circle is its outline, in its
    group; imagePath null is no name."""
    from datasets.exports import parse_labelme
    from datasets.report import LoadReport

    data = {
        "version": "3.16.7",
        "imagePath": "a.jpg",
        "imageData": "a@Gk=",  # "aGk=" (b"hi") with a character outside base64: refused, not skipped
        "imageWidth": 64,
        "imageHeight": 48,
        "shapes": [
            {"label": "cat", "points": [[1, 2], [3, 4], [5, 1]]},
            {"points": [[1, 1], [2, 2]], "shape_type": "rectangle"},
            {"label": "cat", "points": [[10, 10], [13, 14]], "shape_type": "circle", "group_id": 3},
            {"label": "cat", "points": [[1, 1], [2, 2]], "shape_type": None},
            {"label": "cat", "points": [[1, 1], [2, 2], [3, 3]], "shape_type": "circle"},
        ],
    }
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    report = LoadReport()
    item = parse_labelme(str(path), report)
    assert (item.name, item.size, item.embedded) == ("a.jpg", (64, 48), None)
    assert [(s.kind, len(s.points), s.group, s.where) for s in item.shapes] == [
        ("polygon", 3, None, f"{path}: shapes[0]"),
        ("polygon", 24, 3, f"{path}: shapes[2]"),  # a circle of radius 5 about 10,10
    ]
    assert np.allclose(np.hypot(*(item.shapes[1].points - [10, 10]).T), 5.0)
    assert [(reason, where, detail.split(" (")[0]) for reason, where, detail in report.entries] == [
        ("bad_image_data", str(path), "field 'imageData' is not base64"),
        ("bad_shape", f"{path}: shapes[1]", "no label"),
        ("bad_shape", f"{path}: shapes[3]", "a polygon of 2 points"),
        ("bad_shape", f"{path}: shapes[4]", "a circle of 3 points"),
    ]
    path.write_text(json.dumps({"imagePath": None, "shapes": []}))
    assert parse_labelme(str(path), LoadReport()).name == ""
    path.write_text(json.dumps({"shapes": [], "imageWidth": "", "imageHeight": None}))  # blank: not stated
    assert parse_labelme(str(path), LoadReport()).size == (0, 0)
    path.write_text(json.dumps({"shapes": []}))  # no imagePath, no size: nothing stated
    assert (parse_labelme(str(path), LoadReport()).name, parse_labelme(str(path), LoadReport()).size) == (
        "",
        (0, 0),
    )


def test_cvat_files_without_images_with_tracks_beside_images_and_a_nameless_image(tmp_path):
    from datasets.exports import parse_cvat

    path = tmp_path / "annotations.xml"
    path.write_text(CVAT_HEAD.format(n=0) + "</annotations>\n")
    assert parse_cvat(str(path)) == (["person", "car"], [])  # a task with no image: nothing to read
    track = '  <track id="0" label="car" source="manual">\n  </track>\n'
    path.write_text(
        CVAT_HEAD.format(n=1)
        + track
        + _cvat_image(0, "a.jpg", _cvat_box("car", 1, 2, 3, 4))
        + "</annotations>\n"
    )
    _, (item,) = parse_cvat(str(path))  # images beside a track: the images are read
    assert item.name == "a.jpg" and [s.box for s in item.shapes] == [[1, 2, 3, 4]]
    path.write_text(CVAT_HEAD.format(n=1) + track + "</annotations>\n")
    with pytest.raises(AnnotationError, match="a CVAT video export"):
        parse_cvat(str(path))
    path.write_text(
        CVAT_HEAD.format(n=1) + f'  <image id="0" width="{W}" height="{H}">\n  </image>\n</annotations>\n'
    )
    _, (item,) = parse_cvat(str(path))
    assert (item.name, item.size) == ("", (W, H))  # no name: found by no file, and counted later


def test_an_embedded_png_without_a_name_is_gathered_as_a_png_in_the_cache_folder_given(tmp_path):
    png = _image_bytes(3, "PNG")
    root = _one_labelme(tmp_path, imagePath="", imageData=base64.b64encode(png).decode())
    (root / "a.jpg").unlink()
    data = load_labelme(str(root), cache_dir=str(tmp_path / "own_cache"))
    assert [r.file_name for r in data.records] == ["a.png"]  # the JSON's name, the content's suffix
    assert data.image_root.startswith(str(tmp_path / "own_cache"))  # not the default cache folder


def test_cvat_labels_outside_the_classes_given_are_skipped_when_asked(tmp_path):
    root = _cvat_root(tmp_path / "cvat", n=2)
    data = load_cvat(str(root), classes=["car"], skip_unknown_classes=True)
    assert data.classes == ("car",) and [r.labels.tolist() for r in data.records] == [[1], [1]]
    assert data.report.counts == {"unknown_class": 2}  # each image's person polygon
    with pytest.raises(AnnotationError, match="person"):
        load_cvat(str(root), classes=["car"])
