"""EXIF orientation: images read upright everywhere; boxes drawn on the stored pixels turned with
them. The oracle is PIL's own ``ImageOps.exif_transpose`` applied to an image with a marked box."""

import json
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from datasets.coco import load_coco
from datasets.common import read_image_size
from datasets.exports import load_label_studio
from datasets.orientation import turn_boxes
from datasets.records import AnnotationError
from datasets.torch_data import read_image
from datasets.voc import load_voc
from tests.helpers import voc_xml

W, H = 64, 48  # the stored pixels
BOX = (5, 8, 25, 20)  # a box on them, x1 y1 x2 y2


def _marked(path, orientation, fmt="PNG"):
    """An image stored W x H with the pixels of BOX white, its EXIF orientation set."""
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[BOX[1] : BOX[3], BOX[0] : BOX[2]] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(
        path, format=fmt, exif=exif.tobytes(), **({"quality": 100} if fmt == "JPEG" else {})
    )


def _white_box(image: Image.Image):
    ys, xs = np.nonzero(np.asarray(image.convert("L")) > 128)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_boxes_turn_as_pil_turns_the_image(tmp_path, orientation):
    path = str(tmp_path / "a.png")
    _marked(path, orientation)
    with Image.open(path) as im:
        upright = ImageOps.exif_transpose(im)
    np.testing.assert_allclose(turn_boxes(np.array([BOX]), orientation, (W, H))[0], _white_box(upright))
    # and the decoder and the header read the image upright
    pixels = read_image(path).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(pixels, np.asarray(upright.convert("RGB")))
    assert read_image_size(path) == upright.size


def _voc_root(tmp_path, size):
    root = tmp_path / "voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    _marked(str(root / "JPEGImages" / "a.jpg"), 6, "JPEG")
    (root / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", size, (("cat", BOX),)))
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    return root


@pytest.mark.parametrize("size", [(W, H), (0, 0)])
def test_labelimg_boxes_drawn_on_the_stored_pixels_are_turned_upright(tmp_path, size):
    """LabelImg shows the stored pixels (its XML states their size, or none): the box is turned."""
    root = _voc_root(tmp_path, size)
    data = load_voc(str(root), "train", classes=["cat"], cache_dir=False)
    (r,) = data.records
    upright = ImageOps.exif_transpose(Image.open(root / "JPEGImages" / "a.jpg"))
    assert (r.width, r.height) == upright.size == (H, W)
    np.testing.assert_allclose(r.boxes[0], _white_box(upright), atol=1)  # JPEG edges: within a pixel
    assert data.report.counts.get("exif_turned") == 1 and "size_mismatch" not in data.report.counts


def test_label_studio_boxes_are_on_the_upright_image_as_the_browser_showed_it(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    _marked(str(images / "a.png"), 6)
    upright = ImageOps.exif_transpose(Image.open(images / "a.png"))
    x1, y1, x2, y2 = _white_box(upright)  # drawn where the browser showed the white box
    uw, uh = upright.size
    value = {
        "x": 100 * x1 / uw,
        "y": 100 * y1 / uh,
        "width": 100 * (x2 - x1) / uw,
        "height": 100 * (y2 - y1) / uh,
    }
    result = {
        "type": "rectanglelabels",
        "original_width": uw,
        "original_height": uh,
        "value": {**value, "rectanglelabels": ["cat"]},
    }
    task = {
        "id": 1,
        "data": {"image": "/data/upload/1/0000abcd-a.png"},
        "annotations": [{"id": 1, "result": [result], "was_cancelled": False}],
    }
    (tmp_path / "export.json").write_text(json.dumps([task]))
    data = load_label_studio(str(tmp_path / "export.json"), str(images))
    (r,) = data.records
    np.testing.assert_allclose(r.boxes[0], [x1, y1, x2, y2], atol=1e-3)
    assert "exif_turned" not in data.report.counts and "size_mismatch" not in data.report.counts


def _coco(tmp_path, size, segmentation):
    _marked(str(tmp_path / "a.png"), 8)
    ann = {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "bbox": [BOX[0], BOX[1], BOX[2] - BOX[0], BOX[3] - BOX[1]],
        "iscrowd": 0,
        "area": 1.0,
        "segmentation": segmentation,
    }
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": size[0], "height": size[1]}],
        "annotations": [ann],
        "categories": [{"id": 1, "name": "cat"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_coco_stating_the_stored_size_turns_boxes_and_polygons(tmp_path):
    square = [BOX[0], BOX[1], BOX[2], BOX[1], BOX[2], BOX[3], BOX[0], BOX[3]]
    data = load_coco(_coco(tmp_path, (W, H), [square]), str(tmp_path))
    (r,) = data.records
    upright = ImageOps.exif_transpose(Image.open(tmp_path / "a.png"))
    assert (r.width, r.height) == upright.size and data.report.counts.get("exif_turned") == 1
    np.testing.assert_allclose(r.boxes[0], _white_box(upright))
    xs, ys = np.asarray(r.masks[0][0]).reshape(-1, 2).T
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max(), ys.max()], _white_box(upright))


def test_coco_stating_the_upright_size_is_read_as_is_and_rle_on_stored_pixels_is_refused(tmp_path):
    data = load_coco(_coco(tmp_path, (H, W), []), str(tmp_path))  # the upright size: drawn upright
    np.testing.assert_allclose(data.records[0].boxes[0], BOX)
    assert "exif_turned" not in data.report.counts
    rle = {"size": [H, W], "counts": [0, W * H]}
    with pytest.raises(
        AnnotationError, match=r"image id 1: RLE masks drawn on the stored pixels .* orientation 8"
    ):
        load_coco(_coco(tmp_path, (W, H), rle), str(tmp_path))


def test_a_png_whose_stream_does_not_decode_is_counted_at_load_not_met_in_training(tmp_path):
    """Valid chunk checksums over a compressed stream that does not inflate: PIL's verify passes it."""
    import struct
    import zlib

    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    at = data.find(b"IDAT")
    n = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 14 : at + 34] = b"\x00" * 20
    data[at + 4 + n : at + 8 + n] = struct.pack(">I", zlib.crc32(bytes(data[at : at + 4 + n])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    with Image.open(path) as im:
        im.verify()  # the checksums hold
    assert read_image_size(str(path)) == "unreadable_image"
    loaded = load_coco(_coco_plain(tmp_path), str(tmp_path))
    assert loaded.records == [] and loaded.report.counts == {"unreadable_image": 1}


def _coco_plain(tmp_path):
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0, "area": 25.0}
        ],
        "categories": [{"id": 1, "name": "cat"}],
    }
    path = os.path.join(tmp_path, "plain.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def test_a_cvat_image_stating_its_stored_size_has_its_shapes_turned_upright(tmp_path):
    """CVAT states each image's size; the stored one on a photo turned by EXIF says the boxes and
    polygons were drawn on the stored pixels: both are turned with the image."""
    from datasets.exports import load_cvat

    root = tmp_path / "cvat"
    (root / "images").mkdir(parents=True)
    _marked(str(root / "images" / "a.png"), 6)
    x1, y1, x2, y2 = BOX
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
        "<meta><task><labels><label><name>cat</name></label></labels></task></meta>"
        f'<image id="0" name="a.png" width="{W}" height="{H}">'
        f'<box label="cat" occluded="0" xtl="{x1}" ytl="{y1}" xbr="{x2}" ybr="{y2}" z_order="0"/>'
        f'<polygon label="cat" occluded="0" points="{x1},{y1};{x2},{y1};{x2},{y2};{x1},{y2}" z_order="0"/>'
        "</image></annotations>"
    )
    (root / "annotations.xml").write_text(xml)
    data = load_cvat(str(root))
    (r,) = data.records
    upright = ImageOps.exif_transpose(Image.open(root / "images" / "a.png"))
    assert (r.width, r.height) == upright.size == (H, W) and data.report.counts == {"exif_turned": 1}
    np.testing.assert_allclose(r.boxes, [_white_box(upright)] * 2)
    xs, ys = np.asarray(r.masks[1][0]).reshape(-1, 2).T
    np.testing.assert_allclose([xs.min(), ys.min(), xs.max(), ys.max()], _white_box(upright))
