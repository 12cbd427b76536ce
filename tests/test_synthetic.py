import filecmp
import os

import numpy as np

from datasets.synthetic import DEMO_CLASSES, load_demo, render_image, write_demo


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_demo_is_deterministic_for_a_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_demo(str(a), seed=3, num_train=12, num_val=4)
    write_demo(str(b), seed=3, num_train=12, num_val=4)
    write_demo(str(c), seed=4, num_train=12, num_val=4)
    files = _files(a)
    assert files == _files(b) and len(files) == 2 * 16 + 3 + 2 + 1
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors
    assert not filecmp.cmp(
        a / "VOC/JPEGImages/demo_000000.jpg", c / "VOC/JPEGImages/demo_000000.jpg", shallow=False
    )


def test_demo_statistics_and_both_loaders_agree(demo_cache):
    voc = load_demo("train", "voc", num_train=120, num_val=20, cache_dir=demo_cache)
    coco = load_demo("train", "coco", num_train=120, num_val=20, cache_dir=demo_cache)
    assert voc.classes == coco.classes == DEMO_CLASSES
    assert len(voc) == len(coco) == 120 and voc.report.counts == {} and coco.report.counts == {}
    for v, c in zip(voc.records, coco.records):
        assert v.file_name == c.file_name and (v.width, v.height) == (c.width, c.height)
        np.testing.assert_allclose(v.boxes, c.boxes, atol=1e-3)
        assert v.labels.tolist() == c.labels.tolist()
        assert c.masks is not None and len(c.masks) == len(c)
    boxes = np.concatenate([r.boxes for r in voc.records])
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert 30 <= sides.min() and sides.max() <= 93  # v5: upright 42-92 px shapes (a square: 0.75 of it)
    assert all(192 <= r.width <= 256 and 192 <= r.height <= 256 for r in voc.records)
    assert any(len(r) == 0 for r in voc.records)  # some negatives
    assert set(np.concatenate([r.labels for r in voc.records]).tolist()) == {1, 2, 3, 4}
    assert max(len(r) for r in voc.records) <= 3
    assert len(load_demo("val", num_train=120, num_val=20, cache_dir=demo_cache)) == 20


def test_the_demo_draws_upright_shapes_and_the_pretraining_turned_ones():
    """Squares and crosses of the demo have axis-aligned edges (2 and 4 distinct x values); the same
    image drawn for the backbone's pretraining (``rotate=True``) turns them."""
    upright, turned = 0, 0
    for index in range(40):
        _, flat = render_image(0, index, rotate=False)
        _, rotated = render_image(0, index)
        for (label, poly), (label_r, poly_r) in zip(flat, rotated):
            xy, xy_r = np.reshape(poly, (-1, 2)), np.reshape(poly_r, (-1, 2))
            if label == label_r and DEMO_CLASSES[label - 1] in ("square", "cross"):
                distinct = len(np.unique(np.round(xy[:, 0], 1)))
                assert distinct == (2 if DEMO_CLASSES[label - 1] == "square" else 4)
                upright += 1
                turned += len(np.unique(np.round(xy_r[:, 0], 1))) > distinct
    assert upright >= 10 and turned >= upright // 2
