import numpy as np
from PIL import Image

from datasets.records import Record
from tools.drawing import AL_COLOR, DELETED_COLOR, SL_COLOR, contact_sheet, draw_sa


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
    assert sheet.shape == (200, 200, 3)
    assert tuple(sheet[10, 10]) == (255, 0, 0) and tuple(sheet[10, 110]) == (0, 255, 0)
    assert tuple(sheet[110, 10]) == (0, 0, 255) and tuple(sheet[150, 150]) == (32, 32, 32)


def test_cli_draws_ground_truth_sheet(tmp_path):
    from visualize import main

    out = tmp_path / "viz"
    assert main(["--demo-train", "8", "--demo-val", "4", "--cache-dir", str(tmp_path / "c"), "--num", "3",
                 "--out", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 4  # 3 images + the sheet
