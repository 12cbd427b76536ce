"""A new user's own data: flat VOC without split files, caches that never hide a fix, YOLO txt,
per-instance mask PNGs, messages that name the fix, and progress lines in a piped log."""

import json
import logging
import os
import time

import numpy as np
import pytest
from PIL import Image

from datasets.build import DataOptions, build_datasets
from datasets.coco import decode_masks
from datasets.records import AnnotationError
from tests.helpers import coco_dict, make_voc, voc_xml, write_coco, write_image
from tools.runtime.progress import Heartbeat
from train_asm_one import get_args_parser, main


def _args(tmp_path, *argv):
    argv = [*argv, "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    return DataOptions.of(vars(get_args_parser().parse_args(argv)))


def _flat_voc(root, n=10, images=True):
    os.makedirs(root / "images", exist_ok=True)
    for i in range(n):
        os.makedirs(root / "annotations", exist_ok=True)
        (root / "annotations" / f"img{i}.xml").write_text(
            voc_xml(f"IMG_{i}.JPG", objects=(("cat", (5, 5, 30, 30)),))
        )
        if images:
            write_image(str(root / "images" / f"img{i}.png"))
    return root


def test_flat_voc_without_split_files_gets_a_seeded_split_written_for_reuse(tmp_path, caplog):
    root = _flat_voc(tmp_path / "flat")
    args = _args(
        tmp_path, "--dataset", "voc", "--voc-roots", str(root), "--discover-classes", "--val-fraction", "0.3"
    )
    train, val = build_datasets(args)
    assert len(train) == 7 and len(val) == 3 and train.classes == ("cat",)
    assert {r.file_name for r in train.records + val.records} == {f"images/img{i}.png" for i in range(10)}
    split_dir = tmp_path / "out" / "splits"
    assert sorted((split_dir / "val.txt").read_text().split()) == sorted(r.image_id for r in val.records)
    (split_dir / "val.txt").write_text("img0\nimg1\n")  # the user's edit of the written split is honoured
    train2, val2 = build_datasets(args)
    assert [r.image_id for r in val2.records] == ["img0", "img1"]


def test_a_fixed_dataset_is_seen_without_deleting_the_cache(tmp_path, caplog):
    root = _flat_voc(tmp_path / "flat", images=False)
    args = _args(tmp_path, "--dataset", "voc", "--voc-roots", str(root), "--discover-classes")
    with pytest.raises(
        ValueError, match=r"no training images found under .*missing_image.*check --voc-roots"
    ):
        build_datasets(args)
    for i in range(10):  # the user moves the images into place
        write_image(str(root / "images" / f"img{i}.png"))
    train, val = build_datasets(args)
    assert len(train) + len(val) == 10
    assert os.listdir(tmp_path / "cache")  # a cache exists and was not the problem
    no_cache = _args(
        tmp_path,
        "--dataset",
        "voc",
        "--voc-roots",
        str(root),
        "--discover-classes",
        "--no-cache",
        "--cache-dir",
        str(tmp_path / "cache2"),
    )
    build_datasets(no_cache)
    assert not os.path.exists(tmp_path / "cache2")


def test_entry_with_no_images_says_where_and_what_to_check(tmp_path, caplog):
    root = _flat_voc(tmp_path / "flat", images=False)
    code = main(
        [
            "--dataset",
            "voc",
            "--voc-roots",
            str(root),
            "--discover-classes",
            "--output-dir",
            str(tmp_path / "out"),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert code == 2 and "no training images found under" in caplog.text and "torchrun" not in caplog.text


def test_a_folder_of_neither_layout_is_named(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(AnnotationError, match="not a VOC folder.*Annotations/.*annotations/ \\+ images/"):
        build_datasets(_args(tmp_path, "--dataset", "voc", "--voc-roots", str(tmp_path / "x")))


def test_train_and_val_sharing_images_is_warned(tmp_path, caplog):
    root = make_voc(tmp_path / "voc", {"a": voc_xml("a.jpg"), "b": voc_xml("b.jpg")})
    args = _args(
        tmp_path,
        "--dataset",
        "voc",
        "--voc-roots",
        root,
        "--voc-train-split",
        "train",
        "--voc-val-split",
        "train",
        "--voc-classes",
        "cat",
    )
    with caplog.at_level(logging.WARNING):
        build_datasets(args)
    assert "share 2 of 2 evaluation images" in caplog.text


def _yolo(root, split=None, lines=None):
    img_dir = root / "images" / split if split else root / "images"
    lab_dir = root / "labels" / split if split else root / "labels"
    lab_dir.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("cat\ndog\n")
    for i in range(5):
        write_image(str(img_dir / f"{i}.jpg"), size=(100, 50))
        (lab_dir / f"{i}.txt").write_text(lines or "1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.3 0.3\n")
    return root


def test_yolo_txt_boxes_in_pixels_and_seeded_split(tmp_path):
    root = _yolo(tmp_path / "yolo")
    os.remove(root / "labels" / "4.txt")  # an image without a label file has no boxes
    train, val = build_datasets(_args(tmp_path, "--dataset", "folder", "--folder-root", str(root)))
    assert train.classes == ("cat", "dog") and len(train) + len(val) == 5
    rec = {r.image_id: r for r in train.records + val.records}
    np.testing.assert_allclose(rec["0"].boxes, [[40, 15, 60, 35], [0, 0, 25, 12.5]], atol=1e-4)  # 2nd clipped
    assert rec["0"].labels.tolist() == [2, 1] and len(rec["4"]) == 0
    assert train.report.counts.get("clipped_box", 0) + val.report.counts.get("clipped_box", 0) == 4


def test_yolo_ultralytics_splits(tmp_path):
    root = _yolo(tmp_path / "yolo", "train")
    _yolo(root, "val")
    train, val = build_datasets(_args(tmp_path, "--dataset", "folder", "--folder-root", str(root)))
    assert len(train) == len(val) == 5 and train.records[0].file_name == "images/train/0.jpg"


def test_a_lone_split_folder_is_the_pool_and_gets_a_seeded_split(tmp_path):
    root = _yolo(tmp_path / "coco128", "train2017")  # COCO128: images/train2017 + labels/train2017 only
    os.remove(root / "classes.txt")  # names come from ultralytics' yaml, given by path
    (tmp_path / "coco128.yaml").write_text("path: ../datasets/coco128\nnames:\n  0: person\n  1: bicycle\n")
    train, val = build_datasets(
        _args(
            tmp_path,
            "--dataset",
            "folder",
            "--folder-root",
            str(root),
            "--folder-classes",
            str(tmp_path / "coco128.yaml"),
        )
    )
    assert (
        train.classes == ("person", "bicycle")
        and (len(train), len(val)) == (4, 1)
        and not {r.image_id for r in train.records} & {val.records[0].image_id}
    )
    assert all(
        r.file_name.startswith("images/train2017/") and len(r) == 2 for r in train.records + val.records
    )
    assert (tmp_path / "out" / "splits" / "val.txt").read_text().split() == [val.records[0].image_id]
    _yolo(root, "test2017")  # a train* folder beside other splits is still the pool; classes.txt again
    assert len(build_datasets(_args(tmp_path, "--dataset", "folder", "--folder-root", str(root)))[0]) == 4


def test_several_split_folders_without_train_are_named(tmp_path):
    root = _yolo(tmp_path / "yolo", "a")
    _yolo(root, "b")
    with pytest.raises(ValueError, match=r"split folders \['a', 'b'\], none named train\*"):
        build_datasets(_args(tmp_path, "--dataset", "folder", "--folder-root", str(root)))


def test_missing_label_folder_of_a_split_is_named(tmp_path):
    root = _yolo(tmp_path / "yolo", "train")
    _yolo(root, "val")
    for name in os.listdir(root / "labels" / "val"):
        os.remove(root / "labels" / "val" / name)
    os.rmdir(root / "labels" / "val")
    with pytest.raises(AnnotationError, match=r"labels/val: no such folder \(the labels of .*images/val\)"):
        build_datasets(_args(tmp_path, "--dataset", "folder", "--folder-root", str(root)))


def test_yolo_segment_lines_become_masks(tmp_path):
    root = _yolo(tmp_path / "yolo", lines="0 0.1 0.2 0.5 0.2 0.5 0.8\n1 0.5 0.5 0.2 0.4\n")  # 100 x 50 images
    train, val = build_datasets(_args(tmp_path, "--dataset", "folder", "--folder-root", str(root)))
    rec = train.records[0]
    np.testing.assert_allclose(rec.boxes, [[10, 10, 50, 40], [40, 15, 60, 35]], atol=1e-4)
    assert (
        rec.labels.tolist() == [1, 2] and rec.masks[0] == [[10, 10, 50, 10, 50, 40]] and rec.masks[1] is None
    )
    masks = decode_masks(rec)  # a triangle, and the box line's box
    assert masks.shape == (2, 50, 100) and 0.4 < masks[0].sum() / (40 * 30) < 0.6
    assert masks[1].sum() == 20 * 20 and masks[1, 15:35, 40:60].all()


def test_one_coco_file_for_train_and_val_is_warned(tmp_path, caplog):
    data = coco_dict(
        images=((1, "a.jpg", 64, 48), (2, "b.jpg", 64, 48)),
        anns=((1, 1, [5, 5, 20, 20]), (2, 1, [10, 10, 30, 30])),
    )
    data["annotations"][0]["segmentation"] = [[5, 5, 25, 5, 25, 25]]
    path = write_coco(tmp_path / "coco128", data)
    images = str(tmp_path / "coco128" / "images")
    args = _args(
        tmp_path,
        "--dataset",
        "coco",
        "--coco-train-json",
        path,
        "--coco-train-images",
        images,
        "--coco-val-json",
        path,
        "--coco-val-images",
        images,
    )
    with caplog.at_level(logging.WARNING):
        train, val = build_datasets(args)
    assert train.records[0].masks is not None and "share 2 of 2 evaluation images" in caplog.text


@pytest.mark.parametrize(
    "line, message",
    [
        ("1 0.5 0.5", r"line 1: expected 'class cx cy w h' \(box\) or .*got 3"),
        ("1 0.1 0.1 0.2 0.2 0.3", "line 1: .*segment, 3 points or more.*got 6"),
        ("7 0.5 0.5 0.1 0.1", "line 1: class 7 outside 0..1"),
        ("a 0.5 0.5 0.1 0.1", "line 1: invalid literal"),
    ],
)
def test_bad_yolo_lines_name_file_and_line(tmp_path, line, message):
    root = _yolo(tmp_path / "yolo", lines=line + "\n")
    with pytest.raises(AnnotationError, match=message) as e:
        build_datasets(_args(tmp_path, "--dataset", "folder", "--folder-root", str(root)))
    assert "labels" in str(e.value) and ".txt" in str(e.value)


def test_pennfudan_mask_pngs_give_boxes_and_masks(tmp_path):
    root = tmp_path / "PennFudanPed"
    for i in range(4):
        write_image(str(root / "PNGImages" / f"FudanPed{i:05d}.png"), size=(40, 30))
        ids = np.zeros((30, 40), np.uint8)
        ids[2:10, 3:8] = 1
        ids[12:28, 20:39] = 2
        os.makedirs(root / "PedMasks", exist_ok=True)
        Image.fromarray(ids).save(root / "PedMasks" / f"FudanPed{i:05d}_mask.png")
    train, val = build_datasets(
        _args(tmp_path, "--dataset", "folder", "--folder-root", str(root), "--folder-classes", "pedestrian")
    )
    assert train.classes == ("pedestrian",) and len(train) == 3 and len(val) == 1
    rec = train.records[0]
    np.testing.assert_array_equal(rec.boxes, [[3, 2, 8, 10], [20, 12, 39, 28]])
    masks = decode_masks(rec)
    assert masks.shape == (2, 30, 40) and masks[0].sum() == 40 and masks[1].sum() == 16 * 19
    assert rec.image_id == os.path.basename(rec.file_name).removesuffix(".png")  # the image's stem
    assert rec.masks is not None and len(rec.masks) == 2  # the masks themselves, not boxes drawn as masks


def test_one_mask_value_over_two_people_is_two_objects_and_a_speck_is_dropped(tmp_path, caplog):
    """A 0/255 mask: two people (5x8 and 19x16 px) and a 2x2 speck, all 255. Two objects, one
    mask_split count naming the file; the speck (4 px < 16) is no object."""
    root = tmp_path / "PennFudanPed"
    for i in range(4):
        write_image(str(root / "PNGImages" / f"FudanPed{i:05d}.png"), size=(40, 30))
        ids = np.zeros((30, 40), np.uint8)
        ids[2:10, 3:8] = ids[12:28, 20:39] = ids[27:29, 2:4] = 255
        os.makedirs(root / "PedMasks", exist_ok=True)
        Image.fromarray(ids).save(root / "PedMasks" / f"FudanPed{i:05d}_mask.png")
    train, _ = build_datasets(
        _args(tmp_path, "--dataset", "folder", "--folder-root", str(root), "--folder-classes", "pedestrian")
    )
    rec = train.records[0]
    np.testing.assert_array_equal(rec.boxes, [[3, 2, 8, 10], [20, 12, 39, 28]])
    assert decode_masks(rec).sum((1, 2)).tolist() == [40, 16 * 19]
    assert train.report.counts["mask_split"] == 3  # the three training images
    source, detail = train.report.of("mask_split")[0]
    assert source.endswith("_mask.png") and detail.startswith("value 255: 3 separate regions, 2 objects")
    assert "mask_split" in caplog.text


def test_heartbeat_line_has_round_epoch_rate_and_etas(caplog):
    beat = Heartbeat(interval=0, enabled=True)
    now = time.monotonic()
    beat.set(phase_start=now - 100)  # the last phase took 100 s
    beat.end_phase()
    beat.set(round=2, rounds=5, phase="round2", epoch=1, epochs=4, phase_start=now - 60, first_epoch=0)
    with caplog.at_level(logging.INFO, logger="tools.runtime.progress"):
        beat.tick("train", 5, 10, 40, started=now - 10)
    line = caplog.text
    for part in (
        "round 2/5",
        "round2 epoch 2/4",
        "train 5/10",
        "4.0 images/s",
        "train ETA 0m10s",
        "phase ETA 1m40s",
        "run ETA ~6m40s",
    ):  # 60 s for 1.5 epochs: 100 s for the 2.5 left; then 3 rounds of 100 s
        assert part in line, part
    quiet = Heartbeat(interval=3600, enabled=True)
    quiet.tick("train", 1, 10, 8, started=now)
    assert len(caplog.records) == 1  # rate-limited


@pytest.mark.slow  # trains: left out of the mutation runs
def test_a_piped_run_prints_progress_lines(tmp_path, caplog, monkeypatch):
    from tools.runtime.progress import HEARTBEAT

    monkeypatch.setattr(HEARTBEAT, "interval", 0.0)
    monkeypatch.setattr(HEARTBEAT, "enabled", True)  # what a pipe gets: stderr is not a terminal
    with caplog.at_level(logging.INFO):
        code = main(
            [
                "--demo-train",
                "16",
                "--demo-val",
                "8",
                "--min-size",
                "64",
                "--batch-size",
                "4",
                "--epochs",
                "1",
                "--round-epochs",
                "1",
                "--K",
                "4",
                "--max-rounds",
                "1",
                "--initial",
                "8",
                "--workers",
                "0",
                "--certain-thre",
                "0.999",
                "--output-dir",
                str(tmp_path / "out"),
                "--cache-dir",
                str(tmp_path / "c"),
            ]
        )
    assert code == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "tools.runtime.progress"]
    assert any("round 1/1" in m and "images/s" in m and "phase ETA" in m for m in lines), lines[:5]
    assert any(m.startswith("progress: ") and "detect" in m for m in lines)
    assert "precision - (no certain boxes: the model's best score was 0." in caplog.text  # why the "-"


# -- issue 28: nothing lost without a word -------------------------------------------------------
def _folder(tmp_path, root, *extra):
    return build_datasets(_args(tmp_path, "--dataset", "folder", "--folder-root", str(root), *extra))


def test_labels_that_are_never_found_stop_the_load(tmp_path):
    root = _yolo(tmp_path / "yolo")
    for i in range(5):  # named after the whole file name, as some tools do
        os.rename(root / "labels" / f"{i}.txt", root / "labels" / f"{i}.jpg.txt")
    with pytest.raises(
        AnnotationError, match=r"(\d) of \1 images have no label file .*--allow-missing-labels"
    ):
        _folder(tmp_path, root)
    with pytest.raises(ValueError, match="hold no boxes at all"):  # allowed, but then nothing to learn from
        _folder(tmp_path, root, "--allow-missing-labels")


def test_pixel_coordinates_in_yolo_labels_are_refused(tmp_path):
    root = _yolo(tmp_path / "yolo", lines="0 50 25 20 10\n")
    with pytest.raises(AnnotationError, match=r"0.txt, line 1: coordinate 50 is not normalised to \[0, 1\]"):
        _folder(tmp_path, root)


def test_orphan_labels_and_shared_stems_are_counted(tmp_path):
    root = _yolo(tmp_path / "yolo")
    (root / "labels" / "gone.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    write_image(str(root / "images" / "0.png"), size=(100, 50))  # 0.jpg and 0.png
    train, val = _folder(tmp_path, root)
    counts = {
        k: train.report.counts.get(k, 0) + val.report.counts.get(k, 0)
        for k in ("orphan_label", "duplicate_stem")
    }
    assert counts == {"orphan_label": 2, "duplicate_stem": 2}  # each split's load reports them
    assert any("gone.txt" in src for src, _ in train.report.of("orphan_label"))


def test_orphan_mask_pngs_are_counted(tmp_path):
    root = tmp_path / "masks"
    for i in range(3):
        write_image(str(root / "PNGImages" / f"p{i}.png"), size=(40, 30))
    os.makedirs(root / "PedMasks")
    for i in range(4):  # p3 has no image
        ids = np.zeros((30, 40), np.uint8)
        ids[2:10, 3:8] = 1
        Image.fromarray(ids).save(root / "PedMasks" / f"p{i}_mask.png")
    train, _ = _folder(tmp_path, root)
    assert [os.path.basename(src) for src, _ in train.report.of("orphan_label")] == ["p3_mask.png"]


@pytest.mark.parametrize(
    "text, encoding, message",
    [
        ("names: [a, b\n", "utf-8", r"data.yaml line 2: not valid YAML"),
        ("names: {a: cat, b: dog}\n", "utf-8", r"'names' keys must be the class numbers 0, 1, 2"),
        ("names: {0: cat, 2: dog}\n", "utf-8", r"'names' has no class \[1\]"),
        ("names: [chat, café]\n", "latin-1", r"data.yaml: not UTF-8 text"),
    ],
)
def test_bad_class_name_files_end_in_one_clear_line(tmp_path, text, encoding, message):
    root = _yolo(tmp_path / "yolo")
    os.remove(root / "classes.txt")
    (root / "data.yaml").write_bytes(text.encode(encoding))
    with pytest.raises(AnnotationError, match=message):
        _folder(tmp_path, root)


def test_flat_voc_images_without_xml_and_foreign_filenames_are_handled(tmp_path):
    root = _flat_voc(tmp_path / "flat", n=6)
    write_image(str(root / "images" / "extra.jpg"))  # an image no XML describes
    xml = (root / "annotations" / "img0.xml").read_text()
    os.remove(root / "images" / "img0.png")  # its image is gone; its <filename> must not pick another image
    (root / "annotations" / "img0.xml").write_text(xml.replace("IMG_0.JPG", "img1.png"))
    train, val = build_datasets(
        _args(tmp_path, "--dataset", "voc", "--voc-roots", str(root), "--discover-classes")
    )
    files = [r.file_name for r in train.records + val.records]
    assert len(files) == len(set(files)) == 5  # img1.png once, with its own boxes
    report = {
        k: train.report.counts.get(k, 0) + val.report.counts.get(k, 0)
        for k in ("image_without_xml", "missing_image")
    }
    assert report == {"image_without_xml": 2, "missing_image": 1}  # each split's load counts the leftover


def _labelimg_xml(name: str, size: tuple[int, int], boxes) -> str:
    """An XML as LabelImg writes it beside its image: a Windows <path>, and (for files it could not
    size, such as a PNG named .jpg) width and height 0."""
    objects = "".join(
        f"\n\t<object>\n\t\t<name>{cls}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>"
        f"\n\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}</ymin>"
        f"\n\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>\n\t</object>"
        for cls, (x0, y0, x1, y1) in boxes
    )
    return (
        f"<annotation>\n\t<folder>fruits</folder>\n\t<filename>{name}</filename>\n"
        f"\t<path>C:\\Users\\me\\Desktop\\fruits\\{name}</path>\n\t<source>\n\t\t<database>Unknown</database>\n"
        f"\t</source>\n\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n"
        f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>{objects}\n</annotation>\n"
    )


@pytest.mark.slow  # trains: left out of the mutation runs
def test_labelimg_side_by_side_folder_trains_and_counts_what_it_fixed(tmp_path, capsys):
    """12 images with their XML in one folder; 3 are PNGs (RGBA, palette, RGB) named .jpg whose XML
    says 0 x 0. They load at their real size, are counted twice each (size_from_image,
    format_mismatch), the Windows <path> is never read, and one ASM round runs."""
    root = tmp_path / "fruits"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        name = f"apple_{i}.jpg"
        if i < 3:
            image = Image.fromarray(pixels).convert(("RGBA", "P", "RGB")[i])
            image.save(root / name, format="PNG")
            size = (0, 0)
        else:
            Image.fromarray(pixels).save(root / name, format="JPEG")
            size = (64, 48)
        boxes = [("apple" if i % 2 else "banana", (8, 6, 40, 30))]
        (root / f"apple_{i}.xml").write_text(_labelimg_xml(name, size, boxes))
    train, val = build_datasets(
        _args(tmp_path, "--dataset", "voc", "--voc-roots", str(root), "--discover-classes")
    )
    records = {r.image_id: r for r in train.records + val.records}
    assert len(records) == 12 and {(r.width, r.height) for r in records.values()} == {(64, 48)}
    assert records["apple_0"].file_name == "apple_0.jpg"  # inside the root: <path> not trusted
    report = train.report.counts | {
        k: v + train.report.counts.get(k, 0) for k, v in val.report.counts.items()
    }
    assert report["size_from_image"] == 3 and report["format_mismatch"] == 3
    mismatched = [d for _, d in train.report.of("format_mismatch") + val.report.of("format_mismatch")]
    assert sorted(mismatched) == ["a PNG (P) named .jpg", "a PNG (RGB) named .jpg", "a PNG (RGBA) named .jpg"]
    argv = ["--dataset", "voc", "--voc-roots", str(root), "--discover-classes", "--min-size", "64", "--epochs", "1",
            "--round-epochs", "1", "--K", "3", "--initial", "4", "--max-rounds", "1", "--weights-backbone", "none",
            "--output-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert main(argv) == 0
    summary = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rounds"] == 1 and summary["labelled_images"] == 4 + 3


def test_a_labelimg_folder_reads_upper_case_xml_and_skips_another_tools_xml(tmp_path):
    root = _flat_voc(tmp_path / "flat", n=6)
    os.rename(root / "annotations" / "img0.xml", root / "annotations" / "img0.XML")  # as Windows tools save
    (root / "annotations" / "settings.xml").write_text(
        '<?xml version="1.0"?>\n<settings><theme>dark</theme></settings>\n'
    )
    args = _args(
        tmp_path, "--dataset", "voc", "--voc-roots", str(root), "--discover-classes", "--val-fraction", "0.5"
    )
    train, val = build_datasets(args)
    ids = sorted(r.image_id for r in train.records + val.records)
    assert ids == [f"img{i}" for i in range(6)]  # img0 read from img0.XML; settings.xml not an image
    report = train.report if "settings" in str(train.report.entries) else val.report
    assert report.counts.get("bad_annotation_file") == 1
    ((path, why),) = report.of("bad_annotation_file")
    assert path.endswith("settings.xml") and "root element is <settings>, expected <annotation>" in why


@pytest.mark.slow  # trains an epoch: left out of the mutation runs
def test_each_fate_of_a_shared_folder_is_in_the_load_report_once(tmp_path):
    """An image without its XML, and two images of one stem, in a flat folder that both the training
    and the evaluation load scan: one entry each in load_report.json."""
    root = _flat_voc(tmp_path / "flat", n=6)
    write_image(str(root / "images" / "lonely.png"))  # no XML
    write_image(str(root / "images" / "img1.jpg"))  # img1.png has the same stem
    out = tmp_path / "run"
    argv = ["--dataset", "voc", "--voc-roots", str(root), "--discover-classes", "--val-fraction", "0.5"]
    argv += ["--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--strategy", "none"]
    argv += ["--epochs", "1", "--min-size", "64", "--batch-size", "2", "--eval-interval", "1"]
    assert main(argv) == 0
    report = json.loads((out / "load_report.json").read_text())
    entries = [tuple(e) for part in report.values() for e in part["entries"]]
    reasons = [r for r, *_ in entries]
    assert reasons.count("image_without_xml") == 1 and reasons.count("duplicate_stem") == 1, entries


def test_file_names_that_are_not_utf8_are_read_and_written_back_byte_for_byte(tmp_path, caplog):
    """Old archives hold Latin-1 names (b'caf\\xe9'): split files, the record cache and the images
    keep their bytes; a labelling tool's text files cannot, so --oracle none refuses them in one line."""
    from datasets.torch_data import read_image
    from tools.loop.setup import check_tool_names

    caplog.set_level(logging.ERROR)  # pytest-xdist cannot carry a captured line holding such a name

    root = os.fsencode(str(tmp_path / "latin"))
    os.makedirs(root)
    stems = [b"caf\xe9", b"na\xefve", *(b"img%d" % i for i in range(6))]
    for stem in stems:
        write_image(os.fsdecode(root + b"/" + stem + b".jpg"))
        with open(root + b"/" + stem + b".xml", "wb") as f:
            f.write(voc_xml("x.jpg", objects=(("cat", (5, 5, 30, 30)),)).encode())
    args = _args(tmp_path, "--dataset", "voc", "--voc-roots", os.fsdecode(root), "--discover-classes")
    for _ in range(2):  # the second load reads the split files and the cache written by the first
        train, val = build_datasets(args)
        names = {os.fsencode(r.file_name) for r in train.records + val.records}
        assert names == {s + b".jpg" for s in stems}
    split = (tmp_path / "out" / "splits" / "train.txt").read_bytes() + (
        tmp_path / "out" / "splits" / "val.txt"
    ).read_bytes()
    assert sorted(split.split()) == sorted(stems)  # the bytes, not a re-encoding
    odd = next(r for r in train.records + val.records if os.fsencode(r.file_name).startswith(b"caf"))
    assert tuple(read_image(os.path.join(train.image_root, odd.file_name)).shape) == (3, 48, 64)
    with pytest.raises(ValueError, match=r"--oracle none: 2 image file names .* are not UTF-8 \(b'"):
        check_tool_names(type(train)(train.records + val.records, train.classes, train.image_root))


def test_a_split_that_cannot_be_written_leaves_no_file(tmp_path):
    from datasets.common import seeded_split

    with pytest.raises(UnicodeEncodeError):  # a lone high surrogate has no bytes to go back to
        seeded_split(["a", "b", "c\ud800"], 0.34, 0, str(tmp_path / "splits"))
    assert not (tmp_path / "splits").exists() or os.listdir(tmp_path / "splits") == []


def test_instance_masks_split_by_8_connected_regions_at_the_speck_size():
    """_instances on hand-drawn id masks: value 1 is two 5x5 squares that touch at a corner (one
    8-connected object); value 2 one 3x3 square alone (small, but in one piece: kept); value 3 a
    4x4 region (16 px, kept) and a 3x5 one (15 px, dropped); value 4 two 4x4 regions (both kept)."""
    from datasets.folder import MIN_REGION, _instances
    from datasets.report import LoadReport

    assert MIN_REGION == 16
    ids = np.zeros((40, 40), np.uint8)
    ids[0:5, 0:5] = ids[5:10, 5:10] = 1
    ids[0:3, 20:23] = 2
    ids[15:19, 0:4] = 3
    ids[15:18, 10:15] = 3
    ids[25:29, 0:4] = ids[25:29, 10:14] = 4
    report = LoadReport()
    masks = _instances(ids, "m.png", report)
    assert [int(m.sum()) for m in masks] == [50, 9, 16, 16, 16]
    assert masks[0][4, 4] and masks[0][5, 5] and masks[1][1, 21] and masks[2][15, 0] and not masks[2][15, 10]
    assert masks[3][25, 0] and masks[4][25, 10]
    assert report.entries == [
        ("mask_split", "m.png", "value 3: 2 separate regions, 1 objects (under 16 px dropped)"),
        ("mask_split", "m.png", "value 4: 2 separate regions, 2 objects (under 16 px dropped)"),
    ]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("1 0.5 0.5 0.2 0.4", (1, [40, 15, 60, 35], None)),  # 100 x 50 pixels
        ("0 0.1 0.2 0.5 0.2 0.5 0.8", (0, [10, 10, 50, 40], [10, 10, 50, 10, 50, 40])),
        ("0 0.123456 0.2 0.5 0.2 0.5 0.8", (0, [12.3456, 10, 50, 40], [12.35, 10, 50, 10, 50, 40])),
        ("0 1.01 0.5 0.2 0.4", (0, [91, 15, 111, 35], None)),  # rounding past 1, up to 1.01, is read
        ("2 0.5 0.5 0.2 0.4", "class 2 outside 0..1"),
        ("0 1.011 0.5 0.2 0.4", "coordinate 1.011 is not normalised"),
        ("0 0.5 0.5 0.2", "got 4 fields"),
        ("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4", "got 8 fields"),  # a segment needs whole points
        ("0 0.1 0.1 0.2 0.2 0.3", "got 6 fields"),
        ("0 nan 0.5 0.2 0.4", "non-finite coordinate"),
        ("x 0.5 0.5 0.2 0.4", "invalid literal for int()"),
    ],
)
def test_a_yolo_line_in_pixels_or_a_one_line_error(line, expected):
    from datasets.folder import _yolo_line

    if isinstance(expected, str):
        with pytest.raises(
            AnnotationError, match=r"^l.txt, line 3: .*" + expected.replace("(", r"\(").replace(")", r"\)")
        ):
            _yolo_line(line.split(), "l.txt, line 3", 2, 100, 50)
        return
    cls, box, polygon = _yolo_line(line.split(), "l.txt, line 3", 2, 100, 50)
    assert cls == expected[0] and polygon == expected[2]
    np.testing.assert_allclose(box, expected[1], atol=1e-6)


def test_a_yolo_file_whose_boxes_all_fall_outside_is_counted_once(tmp_path):
    from datasets.folder import _yolo_record
    from datasets.report import LoadReport

    path = tmp_path / "a.txt"
    path.write_text("0 0.5 0.5 0.2 0.4\n\n1 0.1 0.2 0.5 0.2 0.5 0.8\n")  # a blank line between
    report = LoadReport()
    rec = _yolo_record(str(path), "a", "images/a.jpg", (100, 50), 2, report)
    assert (rec.image_id, rec.file_name, rec.width, rec.height) == ("a", "images/a.jpg", 100, 50)
    assert rec.labels.tolist() == [1, 2] and rec.labels.dtype == np.int64 and rec.boxes.dtype == np.float32
    assert rec.masks == [None, [[10, 10, 50, 10, 50, 40]]]
    assert _yolo_record(str(tmp_path / "none.txt"), "b", "b.jpg", (100, 50), 2, report).masks is None
    path.write_text("0 1.0 1.0 0.0 0.0\n")  # a box of no area at the corner
    lost = _yolo_record(str(path), "a", "a.jpg", (100, 50), 2, report)
    assert len(lost) == 0 and report.of("labels_lost") == [(str(path), "all 1 boxes dropped")]


def test_a_folder_of_jpegimages_alone_is_the_image_folder(tmp_path):
    from datasets.folder import _image_dir

    (tmp_path / "JPEGImages").mkdir()
    assert _image_dir(str(tmp_path), None) == str(tmp_path / "JPEGImages")
    (tmp_path / "images").mkdir()
    assert _image_dir(str(tmp_path), None) == str(tmp_path / "images")  # images/ first


def test_an_orphan_label_is_named_by_its_own_stem(tmp_path):
    """A YOLO label's stem is its name less .txt, even one ending in _mask; a mask's drops _mask."""
    from datasets.folder import _report_orphans
    from datasets.report import LoadReport

    (tmp_path / "a_mask.txt").write_text("")
    (tmp_path / "b.txt").write_text("")
    report = LoadReport()
    _report_orphans(str(tmp_path), "yolo", {"a_mask": "a_mask.jpg"}, "images", report)
    assert [(os.path.basename(s), d) for _, s, d in report.entries] == [("b.txt", "no image b.* in images")]
    (tmp_path / "c_mask.png").write_bytes(b"")
    report = LoadReport()
    _report_orphans(str(tmp_path), "masks", {"a_mask": "a_mask.png"}, "images", report)
    assert [(os.path.basename(s), d) for _, s, d in report.entries] == [
        ("c_mask.png", "no image c.* in images")
    ]


def test_a_masks_folder_with_masks_named_as_their_images(tmp_path):
    """masks/ (not PedMasks/) holding <stem>.png (no _mask suffix): the masks layout; without
    --folder-classes its one class is "object"; a stem asked for without an image is counted."""
    from datasets.folder import folder_layout, load_folder

    for i in range(2):
        write_image(str(tmp_path / "images" / f"im{i}.png"), size=(40, 30))
        ids = np.zeros((30, 40), np.uint8)
        ids[2:10, 3:8] = 1
        os.makedirs(tmp_path / "masks", exist_ok=True)
        Image.fromarray(ids).save(tmp_path / "masks" / f"im{i}.png")
    assert folder_layout(str(tmp_path)) == "masks"
    data = load_folder(str(tmp_path), stems=["im0", "im1", "gone"])
    assert data.classes == ("object",) and [r.image_id for r in data.records] == ["im0", "im1"]
    assert data.records[0].boxes.tolist() == [[3, 2, 8, 10]]
    (missing,) = data.report.of("missing_image")
    assert missing[1].endswith(os.path.join("images", "gone.jpg"))


def test_class_names_from_yaml_under_either_extension_and_from_dataset_yaml(tmp_path):
    from datasets.folder import read_class_names, yolo_classes

    (tmp_path / "names.yml").write_text("names: [cat, dog]\n")
    assert read_class_names(str(tmp_path / "names.yml")) == ["cat", "dog"]  # YAML, not two lines
    (tmp_path / "dataset.yaml").write_text("names: {0: cat, 1: dog}\n")
    assert yolo_classes(str(tmp_path)) == ["cat", "dog"]
