import os
import re
import time

import numpy as np
import pytest

import datasets.voc as voc
from datasets.records import AnnotationError
from datasets.voc import VOC_CLASSES, load_voc
from tests.helpers import make_voc, voc_xml

CLS = ["cat", "dog"]


def test_bccd_counts_and_exact_degenerate_report(bccd_root, tmp_path):
    parts = [load_voc(bccd_root, s, discover_classes=True, cache_dir=False) for s in ("trainval", "test")]
    assert parts[0].classes == ("Platelets", "RBC", "WBC")
    # tests/data/bccd: 12 images, 204 <object>s (Platelets 12, RBC 180, WBC 12: grep of the XML)
    assert sum(len(p) for p in parts) == 12
    assert sum(p.num_boxes() for p in parts) == 204 - 2
    entries = parts[0].report.entries + parts[1].report.entries
    assert sorted((r, os.path.basename(s)) for r, s, _ in entries) == [
        ("degenerate_box", "BloodImage_00338.xml"),
        ("degenerate_box", "BloodImage_00343.xml"),
    ]
    counts = np.bincount(np.concatenate([r.labels for p in parts for r in p.records]), minlength=4)
    assert counts[1:].tolist() == [12, 180 - 2, 12]  # both zero-area boxes are RBC
    rec = parts[0].records[0]
    assert (
        rec.file_name == "JPEGImages/BloodImage_00001.jpg"
    )  # <filename>, not <path> (trainval lists train first)
    assert (rec.width, rec.height) == (640, 480)


def test_second_load_hits_cache_and_change_invalidates_it(tmp_path, monkeypatch):
    root = make_voc(tmp_path / "VOC", {"a": voc_xml("a.jpg"), "b": voc_xml("b.jpg")})
    cache = str(tmp_path / "voc_cache")  # not the tests' default cache folder
    first = load_voc(root, "train", classes=CLS, cache_dir=cache)
    assert len(os.listdir(cache)) == 1 and os.listdir(cache)[0].startswith("voc-")

    def fail(path):
        raise AssertionError("parsed again despite the cache")

    monkeypatch.setattr(voc, "parse_voc_xml", fail)
    assert load_voc(root, "train", classes=CLS, cache_dir=cache).records == first.records
    xml = os.path.join(root, "Annotations", "a.xml")
    with open(xml, "w") as f:
        f.write(voc_xml("a.jpg", objects=[("dog", (1, 1, 9, 9))]))
    os.utime(xml, ns=(time.time_ns() + 10**9,) * 2)
    with pytest.raises(AssertionError, match="parsed again"):
        load_voc(root, "train", classes=CLS, cache_dir=cache)


def test_several_roots_and_default_classes(tmp_path):
    r07 = make_voc(
        tmp_path / "VOC2007", {"000001": voc_xml("000001.jpg", objects=[("person", (1, 1, 20, 20))])}
    )
    r12 = make_voc(tmp_path / "VOC2012", {"000001": voc_xml("000001.jpg", objects=[("dog", (2, 2, 20, 20))])})
    ds = load_voc([r07, r12], ["train", "train"], cache_dir=False)
    assert ds.classes == VOC_CLASSES
    assert [r.image_id for r in ds.records] == ["VOC2007/000001", "VOC2012/000001"]
    assert [r.file_name for r in ds.records] == [
        "VOC2007/JPEGImages/000001.jpg",
        "VOC2012/JPEGImages/000001.jpg",
    ]
    assert [int(r.labels[0]) for r in ds.records] == [
        VOC_CLASSES.index("person") + 1,
        VOC_CLASSES.index("dog") + 1,
    ]


@pytest.mark.parametrize(
    "text, match",
    [
        ("<annotation><filename>a.jpg</filename><object><name>cat", "malformed XML at line 1"),
        (
            "<annotation>\n<object><name>cat</name></object></annotation>",
            r"line 2: missing field <bndbox/xmin>",
        ),
        ("", "annotation file is empty"),
        (voc_xml(objects=[("cat", ("x", 1, 5, 5))]), "<bndbox/xmin> = 'x' is not a number"),
        ("<other/>", "expected <annotation>"),
    ],
)
def test_bad_xml_names_file_and_line(tmp_path, text, match):
    root = make_voc(tmp_path, {"a": text})
    with pytest.raises(AnnotationError, match=match) as info:
        load_voc(root, "train", classes=CLS, cache_dir=False)
    assert "a.xml" in str(info.value)


def test_external_entity_and_entity_bomb_are_never_expanded(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("cat")
    xxe = f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>'
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "cat"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
        + "".join(f'<!ENTITY {c} "{("&" + p + ";") * 10}">' for p, c in zip("bcdefgh", "cdefghi"))
        + "]>"
    )
    for name, prolog, ref in (("xxe", xxe, "&x;"), ("bomb", bomb, "&i;")):
        text = voc_xml(extra=prolog).replace("<name>cat</name>", f"<name>{ref}</name>")
        root = make_voc(tmp_path / name, {"a": text})
        with pytest.raises(AnnotationError, match="(?i)entit"):
            load_voc(root, "train", classes=CLS, cache_dir=False)


def test_missing_and_unreadable_images_are_counted_skips(tmp_path):
    root = make_voc(
        tmp_path,
        {"a": voc_xml("a.jpg"), "b": voc_xml("b.jpg"), "c": voc_xml("c.jpg")},
        images={"a.jpg": (64, 48)},
    )
    with open(os.path.join(root, "JPEGImages", "c.jpg"), "wb") as f:
        f.write(b"not a jpeg")
    ds = load_voc(root, "train", classes=CLS, cache_dir=False)
    assert [r.image_id for r in ds.records] == ["a"]
    assert ds.report.counts == {"missing_image": 1, "unreadable_image": 1}
    assert ds.report.of("missing_image")[0][0].endswith("b.xml")


def test_boxes_clipped_or_dropped_when_degenerate(tmp_path):
    objects = [
        ("cat", (5, 5, 30, 30)),
        ("cat", (10, 10, 10, 20)),
        ("dog", (30, 5, 20, 25)),
        ("dog", (-5, 40, 100, 60)),
        ("cat", (70, 50, 90, 60)),
    ]
    root = make_voc(tmp_path, {"a": voc_xml("a.jpg", size=(64, 48), objects=objects)})
    ds = load_voc(root, "train", classes=CLS, cache_dir=False)
    rec = ds.records[0]
    np.testing.assert_array_equal(rec.boxes, [[5, 5, 30, 30], [0, 40, 64, 48]])
    assert rec.labels.tolist() == [1, 2]
    assert ds.report.counts == {"degenerate_box": 3, "clipped_box": 1}


def test_unknown_class_errors_or_skips_with_flag(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml(objects=[("cat", (1, 1, 9, 9)), ("zebra", (2, 2, 9, 9))])})
    with pytest.raises(AnnotationError, match=r"unknown class 'zebra'; known classes: \['cat', 'dog'\]"):
        load_voc(root, "train", classes=CLS, cache_dir=False)
    ds = load_voc(root, "train", classes=CLS, skip_unknown_classes=True, cache_dir=False)
    assert ds.records[0].labels.tolist() == [1]
    assert ds.report.counts == {"unknown_class": 1}
    assert load_voc(root, "train", discover_classes=True, cache_dir=False).classes == ("cat", "zebra")


def test_file_name_outside_root_is_rejected(tmp_path):
    for bad in ("../../etc/passwd", "/etc/passwd"):
        root = make_voc(tmp_path / bad.replace("/", "_"), {"a": voc_xml(bad)}, images={})
        with pytest.raises(AnnotationError, match="field 'filename'"):
            load_voc(root, "train", classes=CLS, cache_dir=False)


def test_duplicate_split_ids_and_missing_files(tmp_path):
    root = make_voc(tmp_path, {"a": voc_xml("a.jpg")}, split_ids=["a", "a"])
    ds = load_voc(root, "train", classes=CLS, cache_dir=False)
    assert len(ds) == 1 and ds.report.counts == {"duplicate_image": 1}
    with pytest.raises(AnnotationError, match="split file not found"):
        load_voc(root, "val", classes=CLS, cache_dir=False)
    root2 = make_voc(tmp_path / "b", {"a": voc_xml("a.jpg")}, split_ids=["a", "zz"])
    with pytest.raises(AnnotationError, match="zz.xml: annotation file not found"):
        load_voc(root2, "train", classes=CLS, cache_dir=False)


def test_a_written_annotation_names_each_field_as_voc_does():
    """voc_xml against the VOC schema's element names, read with plain XPath, and read back whole."""
    from lxml import etree

    from datasets.records import Record

    rec = Record("a", "sub/a.jpg", 64, 48, [[1.5, 2, 30, 40], [5, 6, 7, 8]], [2, 1], difficult=[False, True])
    text = voc.voc_xml(rec, ["cat", "dog"])
    root = etree.fromstring(text.encode())
    assert root.tag == "annotation" and text.count("\n") > 10  # one element a line: a person reads it
    assert [root.findtext(p) for p in ("filename", "path", "size/width", "size/height", "size/depth")] == [
        "a.jpg", "sub/a.jpg", "64", "48", "3",
    ]  # fmt: skip
    objects = root.findall("object")
    assert [(o.findtext("name"), o.findtext("difficult")) for o in objects] == [("dog", "0"), ("cat", "1")]
    assert [o.findtext(f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax") for o in objects[:1]] == [
        "1.5", "2.0", "30.0", "40.0",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        {"split": "val"},
        {"classes": ["dog", "cat"]},
        {"discover_classes": True, "classes": None},
        {"skip_unknown_classes": True},
        {"check_images": False},
        {"folders": ("Annotations", "JPEGImages2")},
    ],
)
def test_the_record_cache_keeps_each_option_apart(tmp_path, monkeypatch, change):
    xml = voc_xml("a.jpg", objects=(("dog", (1, 1, 20, 20)),))
    root = make_voc(tmp_path / "voc", {"a": xml}, split="train")
    make_voc(tmp_path / "voc", {"a": xml}, split="val")
    os.makedirs(os.path.join(root, "JPEGImages2"))
    os.link(os.path.join(root, "JPEGImages", "a.jpg"), os.path.join(root, "JPEGImages2", "a.jpg"))
    calls = []
    real = voc._load_voc_uncached
    monkeypatch.setattr(voc, "_load_voc_uncached", lambda *a: calls.append(1) or real(*a))
    base = {"split": "train", "classes": ["dog"], "cache_dir": str(tmp_path / "cache")}
    load_voc(root, **base)
    load_voc(root, **base)
    assert len(calls) == 1  # the same options: read from the cache
    load_voc(root, **{**base, **change})
    assert len(calls) == 2  # another option: read again


@pytest.mark.parametrize(
    "made, folders, expected",
    [
        (("Annotations", "JPEGImages"), None, ("Annotations", "JPEGImages", False)),
        (("annotations", "images"), None, ("annotations", "images", True)),
        (("annotations", "images"), ("annotations", None), ("annotations", "images", True)),
        (("Annotations", "JPEGImages"), (None, "JPEGImages"), ("Annotations", "JPEGImages", True)),
        (("annotations", "JPEGImages"), (None, "JPEGImages"), ("annotations", "JPEGImages", True)),
        (("annots", "images"), ("annots", None), ("annots", "images", True)),
        (("annots", "pics"), ("annots", "pics"), ("annots", "pics", True)),
    ],
)
def test_the_layout_takes_the_given_folders_and_the_usual_names_for_the_rest(
    tmp_path, made, folders, expected
):
    for name in made:
        os.makedirs(tmp_path / name)
    ann, img, flat = voc.voc_layout(str(tmp_path), folders)
    assert (ann, img, flat) == (str(tmp_path / expected[0]), str(tmp_path / expected[1]), expected[2])


def test_a_missing_given_folder_names_its_option(tmp_path):
    os.makedirs(tmp_path / "annots")
    with pytest.raises(
        AnnotationError, match=r"images: no such folder \(--voc-images-dir, under the VOC root"
    ):
        voc.voc_layout(str(tmp_path), ("annots", None))
    with pytest.raises(AnnotationError, match=r"gone: no such folder \(--voc-annotations-dir"):
        voc.voc_layout(str(tmp_path), ("gone", "annots"))


@pytest.mark.parametrize("suffix", [".xml", ".XML", ".Xml"])
def test_an_xml_file_is_found_whatever_the_case_of_its_extension(tmp_path, suffix):
    (tmp_path / f"a{suffix}").write_text("<annotation/>")
    assert voc.xml_file(str(tmp_path), "a") == str(tmp_path / f"a{suffix}")
    assert voc.xml_file(str(tmp_path), "b") == str(tmp_path / "b.xml")  # none: the usual name


@pytest.mark.parametrize(
    "size, message",
    [
        ("", "<size> missing or zero and check_images=False"),
        ("<size><width>0</width><height>48</height></size>", "<size> missing or zero"),
        ("<size><width>64</width><height>0</height></size>", "<size> missing or zero"),
        ("<size><width>1</width><height>1</height></size>", None),  # the smallest size is a size
    ],
)
def test_without_reading_the_images_the_xml_must_hold_a_size(tmp_path, size, message):
    xml = "<annotation><filename>a.jpg</filename>" + size + "<object><name>dog</name><bndbox><xmin>0</xmin>"
    xml += "<ymin>0</ymin><xmax>1</xmax><ymax>1</ymax></bndbox></object></annotation>"
    os.makedirs(tmp_path / "voc" / "Annotations" / "sub")
    unnamed = xml.replace("<filename>a.jpg</filename>", "")  # no <filename>: the stem's .jpg
    root = make_voc(tmp_path / "voc", {"sub/a": xml, "sub/b": unnamed}, images={}, split="train")
    if message is None:
        rec, other = load_voc(root, "train", classes=["dog"], check_images=False, cache_dir=False).records
        assert (rec.image_id, rec.file_name, rec.width, rec.height) == ("sub/a", "JPEGImages/a.jpg", 1, 1)
        assert (other.image_id, other.file_name) == ("sub/b", "JPEGImages/b.jpg")
        assert rec.difficult.tolist() == [False]  # no <difficult>: not difficult
        return
    with pytest.raises(AnnotationError, match=re.escape(message)):
        load_voc(root, "train", classes=["dog"], check_images=False, cache_dir=False)


def test_the_record_cache_keeps_the_class_list_apart_from_discovering_it(tmp_path, monkeypatch):
    xml = voc_xml("a.jpg", objects=(("dog", (1, 1, 20, 20)),))
    root = make_voc(tmp_path / "voc", {"a": xml}, split="train")
    cache = str(tmp_path / "cache")
    voc_classes = load_voc(root, "train", cache_dir=cache)  # the 20 VOC classes
    discovered = load_voc(root, "train", discover_classes=True, cache_dir=cache)
    assert len(voc_classes.classes) == 20 and discovered.classes == ("dog",)


@pytest.mark.parametrize(
    "size, expected",
    [
        ("", (0, 0)),  # no <size>: unknown, read from the image later
        ("<size></size>", (0, 0)),  # an empty <size>: the same
        ("<size><width>640</width><height>480</height></size>", (640, 480)),
    ],
)
def test_a_vocs_size_is_read_as_whole_pixels_or_zero_when_absent(tmp_path, size, expected):
    path = tmp_path / "a.xml"
    path.write_text(f"<annotation><filename>a.jpg</filename>{size}</annotation>")
    d = voc.parse_voc_xml(str(path))
    assert (d["width"], d["height"]) == expected
    assert type(d["width"]) is int and type(d["height"]) is int


@pytest.mark.parametrize("field", ["width", "height"])
@pytest.mark.parametrize("value, why", [("640.5", "is not an integer"), ("wide", "is not a number")])
def test_a_vocs_bad_size_names_the_file_and_the_field(tmp_path, field, value, why):
    path = tmp_path / "a.xml"
    other = "height" if field == "width" else "width"
    path.write_text(f"<annotation><size><{field}>{value}</{field}><{other}>8</{other}></size></annotation>")
    with pytest.raises(
        AnnotationError, match=f"^{re.escape(str(path))}: line 1: field <size/{field}> = '{value}' {why}"
    ):
        voc.parse_voc_xml(str(path))


def test_a_named_annotation_folder_finds_the_usual_image_folder(tmp_path):
    """--voc-annotations-dir alone: the images are in images/ or else JPEGImages/."""
    (tmp_path / "annots").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    assert voc.voc_layout(str(tmp_path), ("annots", None)) == (
        str(tmp_path / "annots"),
        str(tmp_path / "JPEGImages"),
        True,
    )
    (tmp_path / "images").mkdir()
    assert voc.voc_layout(str(tmp_path), ("annots", None))[1] == str(tmp_path / "images")


def test_voc_details_read_from_the_files(tmp_path):
    """A difficult object keeps its flag; the split defaults to trainval; a coordinate of 1e9 is
    read, one above it refused; an id that climbs out with Windows separators is refused."""
    root = make_voc(
        tmp_path / "VOC",
        {"a": voc_xml("a.jpg", objects=[("dog", (1, 1, 9, 9))]).replace("<difficult>0", "<difficult>1")},
        split="trainval",
    )
    (record,) = load_voc(root, classes=CLS, cache_dir=False).records
    assert record.difficult.tolist() == [True]
    path = tmp_path / "n.xml"
    path.write_text(
        "<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>1000000000</xmax><ymax>2</ymax></bndbox></object></annotation>"
    )
    assert voc.parse_voc_xml(str(path))["objects"][0][2][2] == 1e9
    path.write_text(path.read_text().replace("1000000000", "1000000000.5"))
    with pytest.raises(AnnotationError, match="is not a finite pixel value"):
        voc.parse_voc_xml(str(path))
    with open(os.path.join(root, "ImageSets", "Main", "trainval.txt"), "a") as f:
        f.write("..\\secret\n")  # ..\secret
    with pytest.raises(AnnotationError, match=r"line 2: image id '\.\.\\\\secret' leaves the dataset root"):
        voc.read_split(root, "trainval")
