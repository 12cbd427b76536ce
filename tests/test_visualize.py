import numpy as np
from PIL import Image

from datasets.records import Record
from tools.runtime.drawing import (
    AL_COLOR,
    DELETED_COLOR,
    MOVED_COLOR,
    PRED_COLOR,
    SL_COLOR,
    contact_sheet,
    draw_boxes,
    draw_sa,
    round_sheet,
)


def test_sa_boxes_carry_their_colours_and_deleted_boxes_are_dashed(tmp_path):
    image = Image.new("RGB", (200, 120), (128, 128, 128))
    sa = Record("a", "a.jpg", 200, 120, [[10, 30, 60, 90], [80, 30, 130, 90]], [1, 2])
    out = draw_sa(image, sa, [True, False], ["cat", "dog"], deleted_boxes=np.array([[140, 40, 190, 110]]))
    out.save(tmp_path / "sa.png")
    png = np.asarray(Image.open(tmp_path / "sa.png"))
    assert png.shape == (120, 200, 3)
    assert tuple(png[60, 10]) == SL_COLOR and tuple(png[60, 59]) == SL_COLOR  # left/right edges of the SL box
    assert tuple(png[60, 80]) == AL_COLOR and tuple(png[89, 100]) == AL_COLOR
    edge = [tuple(png[y, 140]) for y in range(50, 108)]
    assert DELETED_COLOR in edge and (128, 128, 128) in edge  # dashed: gaps between the dashes
    assert tuple(png[60, 35]) == (128, 128, 128)  # inside a box: untouched


def test_contact_sheet_tiles():
    tiles = [Image.new("RGB", (300, 200), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    sheet = np.asarray(contact_sheet(tiles, columns=2, cell=100))
    assert sheet.shape == (134, 200, 3)  # rows as tall as the scaled tiles (100x67)
    assert tuple(sheet[10, 10]) == (255, 0, 0) and tuple(sheet[10, 110]) == (0, 255, 0)
    assert tuple(sheet[80, 10]) == (0, 0, 255) and tuple(sheet[100, 150]) == (32, 32, 32)


def test_cli_draws_ground_truth_sheet(tmp_path):
    from visualize import main

    out = tmp_path / "viz"
    assert (
        main(
            [
                "--demo-train",
                "8",
                "--demo-val",
                "4",
                "--cache-dir",
                str(tmp_path / "c"),
                "--num",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(list(out.glob("*.png"))) == 4  # 3 images + the sheet


def test_labels_stay_inside_the_picture_on_a_filled_background():
    image = Image.new("RGB", (200, 120), (128, 128, 128))
    out = np.asarray(draw_boxes(image, [[150, 0, 200, 60]], [1], ["a_long_class_name"], (255, 0, 0)))
    # no room above the box: the label goes inside it; too wide for the right edge: shifted left
    assert tuple(out[3, 198]) == (255, 0, 0) and tuple(out[3, 120]) == (255, 0, 0)
    assert tuple(out[60, 100]) == (128, 128, 128)
    big = draw_boxes(Image.new("RGB", (2000, 1500)), [[500, 500, 900, 900]], [1], ["cat"], (0, 200, 0))
    rows = np.flatnonzero((np.asarray(big)[:500, 500:560] == (0, 200, 0)).all(-1).any(1))
    assert (
        25 <= rows.max() - rows.min() + 1 <= 60 and rows.max() < 500
    )  # the label's height follows the image (about 1/45 of its side + margin)


def test_masks_are_blended_in_the_box_colour():
    image = Image.new("RGB", (100, 80), (0, 0, 0))
    mask = np.zeros((1, 80, 100), np.float32)
    mask[0, 40:60, 40:70] = 0.9
    out = np.asarray(draw_boxes(image, [[35, 35, 75, 65]], [1], ["cell"], (200, 100, 0), masks=mask))
    assert tuple(out[50, 55]) == (90, 45, 0) and tuple(out[38, 55]) == (0, 0, 0)


def test_round_sheet_has_a_legend_file_names_and_ratios(tmp_path):
    from asm.merge import MergeResult

    Image.new("RGB", (200, 120), (128, 128, 128)).save(tmp_path / "cells_007.jpg")
    sa = Record(
        "7", "cells_007.jpg", 200, 120, [[10, 30, 60, 90], [80, 30, 130, 90], [140, 20, 190, 60]], [1, 1, 2]
    )
    result = MergeResult(
        sa,
        np.array([True, False, False]),
        2,
        1,
        1,
        2,
        0,
        0,
        1,
        ratio=2 / 3,
        deleted_boxes=np.array([[20, 95, 60, 115]]),
        moved=np.array([False, False, True]),
    )
    sheet = round_sheet([result], str(tmp_path), ["RBC", "WBC"])
    sheet.save(tmp_path / "sheet.png")
    px = np.asarray(sheet)
    legend_colors = {tuple(c) for c in px[13, :].tolist()}
    assert {AL_COLOR, SL_COLOR, MOVED_COLOR, DELETED_COLOR} <= legend_colors
    caption = px[26 + 120 : 26 + 142, :200]  # the strip under the 200x120 tile: light text on dark
    assert (caption > 200).all(-1).sum() > 50 and (caption == 24).all(-1).mean() > 0.5
    assert tuple(px[26 + 60, 10]) == SL_COLOR and tuple(px[26 + 60, 80]) == AL_COLOR
    assert tuple(px[26 + 40, 140]) == MOVED_COLOR


def _flat_voc_run(tmp_path):
    """A 1-epoch run on a flat VOC folder, whose train/val split is seeded and written to <run>/splits."""
    from tests.helpers import voc_xml
    from train_asm_one import main as train_main

    root = tmp_path / "kangaroo"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    for k in range(10):
        (root / "annotations" / f"k{k}.xml").write_text(
            voc_xml(f"k{k}.jpg", size=(96, 64), objects=(("kangaroo", (20, 16, 60, 48)),))
        )
        pixels = np.random.default_rng(k).integers(0, 255, (64, 96, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"k{k}.jpg")
    run = tmp_path / "run"
    assert (
        train_main(
            [
                "--dataset",
                "voc",
                "--voc-roots",
                str(root),
                "--voc-classes",
                "kangaroo",
                "--min-size",
                "64",
                "--epochs",
                "1",
                "--strategy",
                "none",
                "--val-fraction",
                "0.3",
                "--output-dir",
                str(run),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    return root, run


def test_visualize_a_checkpoint_draws_its_own_runs_val_split_and_photos(tmp_path, monkeypatch, caplog):
    from visualize import main

    root, run = _flat_voc_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ckpt = str(run / "best.pth") if (run / "best.pth").exists() else str(run / "last.pth")
    assert main(["--checkpoint", ckpt, "--out", str(tmp_path / "viz"), "--score-thresh", "0.99"]) == 0
    val = (run / "splits" / "val.txt").read_text().split()
    assert sorted(p.stem for p in (tmp_path / "viz").glob("*.png") if p.stem != "sheet") == sorted(
        f"images_{s}" for s in val
    )
    assert list(elsewhere.iterdir()) == []  # nothing written into the working folder
    assert "no prediction scored >= --score-thresh 0.99 on 3 images (best score 0." in caplog.text
    # the run's folder instead of a file: its best checkpoint, its own split lists
    assert main(["--checkpoint", str(run), "--out", str(tmp_path / "viz_dir"), "--score-thresh", "0.99"]) == 0
    assert sorted(p.name for p in (tmp_path / "viz_dir").glob("*.png")) == sorted(
        p.name for p in (tmp_path / "viz").glob("*.png")
    )
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.png"):
        Image.open(root / "images" / "k0.jpg").save(photos / name)
    assert (
        main(
            [
                "--checkpoint",
                ckpt,
                "--images",
                str(photos),
                "--out",
                str(tmp_path / "viz2"),
                "--score-thresh",
                "0.0",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "viz2").glob("*.png")) == ["a.png", "b.png", "sheet.png"]
    drawn = np.asarray(Image.open(tmp_path / "viz2" / "a.png"))
    assert ((drawn == PRED_COLOR).all(-1)).sum() > 20  # the predictions are drawn
    assert main(["--images", str(photos), "--out", str(tmp_path / "viz3")]) == 2  # photos need a model
