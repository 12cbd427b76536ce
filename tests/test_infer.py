import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from datasets.torch_data import read_image
from infer import main as infer_main
from tests.helpers import tiny_demo
from tools.engine.inference import model_from_checkpoint, predict_tta
from train_asm_one import main as train_main

_TRAINED: dict[str, tuple[str, str]] = {}  # model -> (checkpoint, demo cache), trained once per module


@pytest.fixture(scope="module", autouse=True)
def _trained_root(tmp_path_factory):
    _TRAINED.clear()
    _TRAINED["root"] = (str(tmp_path_factory.mktemp("trained")), "")
    yield
    _TRAINED.clear()


def _checkpoint(tmp_path, model="fasterrcnn_mobilenet_v2_fpn"):
    """The last.pth of a 1-epoch demo run of ``model``, trained once per module (the tests only read
    it); the demo images it saw are copied to ``tmp_path/cache``, where ``_infer`` reads them."""
    if model not in _TRAINED:
        root = _TRAINED["root"][0]
        out, cache = os.path.join(root, f"ckpt_{model}"), os.path.join(root, "cache")
        argv = [
            *tiny_demo(12),
            "--strategy",
            "none",
            "--model",
            model,
            "--cache-dir",
            cache,
            "--output-dir",
            out,
        ]
        assert train_main(argv) == 0
        _TRAINED[model] = os.path.join(out, "last.pth"), cache
    ckpt, cache = _TRAINED[model]
    shutil.copytree(cache, tmp_path / "cache", dirs_exist_ok=True)
    return ckpt


def _infer(tmp_path, ckpt, *extra):
    out = str(tmp_path / "results.json")
    code = infer_main(
        [
            "--checkpoint",
            ckpt,
            "--out",
            out,
            "--score-thresh",
            "0.0",
            *extra,
        ]
    )  # without --dataset: the data of the run that wrote the checkpoint
    assert code == 0
    return out


def test_results_load_with_pycocotools_and_evaluate(tmp_path):
    ckpt = _checkpoint(tmp_path)
    for extra in ([], ["--tta-scales", "0.8", "1.2", "--tta-flip", "--tta-merge", "vote"]):
        out = _infer(tmp_path, ckpt, *extra)
        results = json.load(open(out))
        assert results and {"image_id", "category_id", "bbox", "score"} <= set(results[0])
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(out + ".gt.json")
            ev = COCOeval(gt, gt.loadRes(out), "bbox")
            ev.evaluate(), ev.accumulate(), ev.summarize()
            perfect = [  # the ground truth as detections: a perfect detector, AP exactly 1
                {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                for a in gt.dataset["annotations"]
            ]
            check = COCOeval(gt, gt.loadRes(perfect), "bbox")
            check.evaluate(), check.accumulate(), check.summarize()
        assert check.stats[0] == pytest.approx(1.0) and check.stats[1] == pytest.approx(1.0)
        assert len(ev.stats) == 12 and -1 < ev.stats[1] <= 1  # evaluated: -1 would mean no matching category
        assert {r["category_id"] for r in results} <= set(gt.getCatIds())
        assert len(results) <= 4 * 100


def test_mask_rle_decodes_to_the_predicted_mask_and_folder_input(tmp_path):
    ckpt = _checkpoint(tmp_path, "maskrcnn_mobilenet_v2_fpn")
    model, _ = model_from_checkpoint(ckpt, torch.device("cpu"))
    model.roi_heads.score_thresh = 0.0
    folder = tmp_path / "photos"
    folder.mkdir()
    src = next(p for p in (tmp_path / "cache").rglob("demo_000012.jpg"))
    shutil.copy(src, folder / "a.jpg")
    out = _infer(tmp_path, ckpt, "--images", str(folder))
    results = json.load(open(out))
    gt = json.load(open(out + ".gt.json"))
    assert [im["file_name"] for im in gt["images"]] == ["a.jpg"]
    image = read_image(str(folder / "a.jpg")).float().div(255)
    pred = predict_tta(model, image)
    assert len(results) == len(pred["scores"]) > 0
    for r, mask in zip(results, pred["masks"]):
        assert isinstance(r["segmentation"]["counts"], str)
        decoded = mask_utils.decode(
            {"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()}
        )
        np.testing.assert_array_equal(decoded, (mask > 0.5).astype(np.uint8))


def test_flip_tta_maps_boxes_back(tmp_path):
    ckpt = _checkpoint(tmp_path)
    model, _ = model_from_checkpoint(ckpt, torch.device("cpu"))
    model.roi_heads.score_thresh = 0.0
    src = next(p for p in (tmp_path / "cache").rglob("demo_000012.jpg"))
    image = read_image(str(src)).float().div(255)
    mirrored = predict_tta(model, image.flip(-1))
    assert len(mirrored["boxes"]) > 0  # score_thresh 0: the check below is never vacuous
    width = image.shape[-1]
    expected = np.stack(
        [
            width - mirrored["boxes"][:, 2],
            mirrored["boxes"][:, 1],
            width - mirrored["boxes"][:, 0],
            mirrored["boxes"][:, 3],
        ],
        1,
    )
    both = predict_tta(model, image, flip=True, iou=1.01)  # iou > 1: NMS keeps everything
    plain = predict_tta(model, image)
    assert len(both["boxes"]) == min(len(plain["boxes"]) + len(expected), 100)
    found = {tuple(np.round(b, 3)) for b in both["boxes"]}
    # the flipped boxes among the highest scores of the union (the cap keeps those), mapped back
    scores = np.concatenate([plain["scores"], mirrored["scores"]])
    kept = np.argsort(-scores, kind="stable")[: len(both["boxes"])]
    from_flip = [k - len(plain["scores"]) for k in kept if k >= len(plain["scores"])]
    assert len(from_flip) > 0 and all(tuple(np.round(expected[k], 3)) in found for k in from_flip[:5])
    with pytest.raises(SystemExit):
        infer_main(["--out", "x.json"])  # --checkpoint is required


def test_no_detection_says_why_pycocotools_cannot_read_it(tmp_path, caplog):
    ckpt = _checkpoint(tmp_path)
    out = str(tmp_path / "empty.json")
    code = infer_main(
        [
            "--checkpoint",
            ckpt,
            "--out",
            out,
            "--score-thresh",
            "1.01",
        ]
    )
    assert code == 0 and json.load(open(out)) == []
    assert "loadRes cannot read" in caplog.text and "lower --score-thresh" in caplog.text


def test_visualize_honours_a_threshold_below_the_models_own(tmp_path, recwarn, monkeypatch):
    import visualize
    from visualize import main

    ckpt = _checkpoint(tmp_path)
    seen, real = [], visualize.predict_tta

    def spy(model, *a, **k):
        seen.append(model.roi_heads.score_thresh)
        return real(model, *a, **k)

    monkeypatch.setattr(visualize, "predict_tta", spy)
    assert (
        main(
            [
                "--demo-train",
                "12",
                "--demo-val",
                "4",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--num",
                "2",
                "--checkpoint",
                ckpt,
                "--score-thresh",
                "0.01",
                "--out",
                str(tmp_path / "viz"),
            ]
        )
        == 0
    )
    assert seen == [0.0, 0.0]  # every score is kept, and filtered at --score-thresh by visualize
    assert not [w for w in recwarn if "not writable" in str(w.message)]


def test_unreadable_images_in_a_folder_are_skipped_and_reported(tmp_path, capsys, caplog):
    ckpt = _checkpoint(tmp_path)
    folder = tmp_path / "photos"
    folder.mkdir()
    src = next(p for p in (tmp_path / "cache").rglob("demo_000012.jpg"))
    shutil.copy(src, folder / "good.jpg")
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    data = src.read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])  # cut short: no end marker
    capsys.readouterr()
    out = _infer(tmp_path, ckpt, "--images", str(folder))
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["images"] == 1 and summary["skipped"] == 2
    assert sorted(os.path.basename(f) for f in summary["skipped_files"]) == ["broken.jpg", "cut.jpg"]
    assert {r["image_id"] for r in json.load(open(out))} <= {1} and "unreadable_image" in caplog.text


def test_a_checkpoint_without_a_config_is_named(tmp_path, caplog):
    path = str(tmp_path / "weights.pth")
    torch.save({"model": {}}, path)
    assert infer_main(["--checkpoint", path, "--out", str(tmp_path / "r.json")]) == 2
    assert "not a train_asm_one.py checkpoint (no 'config', 'classes', 'label_to_cat_id')" in caplog.text


def test_a_runs_folder_is_its_best_checkpoint_and_an_empty_folder_is_named(tmp_path, caplog):
    ckpt = _checkpoint(tmp_path)
    by_file = json.load(open(_infer(tmp_path, ckpt, "--split", "val")))
    by_folder = json.load(open(_infer(tmp_path, os.path.dirname(ckpt), "--split", "val")))
    assert by_folder == by_file  # a 1-epoch supervised run: its best.pth is its last.pth
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    assert infer_main(["--checkpoint", str(empty), "--out", str(tmp_path / "r.json")]) == 2
    assert f"{empty}: a folder without best.pth or last.pth" in caplog.text
    assert infer_main(["--checkpoint", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "r.json")]) == 2
    assert "checkpoint not found" in caplog.text and not (tmp_path / "r.json").exists()


def test_data_flags_without_a_dataset_are_refused_not_ignored(tmp_path, caplog):
    ckpt = _checkpoint(tmp_path)
    argv = ["--checkpoint", ckpt, "--out", str(tmp_path / "r.json"), "--demo-train", "12", "--voc-roots=x"]
    assert infer_main(argv) == 2 and not (tmp_path / "r.json").exists()
    assert "--demo-train --voc-roots would be ignored: without --dataset" in caplog.text
    assert infer_main([*argv[:4], "--dataset", "demo", "--demo-train", "12", "--demo-val", "4",
                       "--cache-dir", str(tmp_path / "cache")]) == 0  # fmt: skip


def test_a_folder_of_unreadable_images_only_ends_non_zero_with_the_counts(tmp_path, capsys, caplog):
    ckpt = _checkpoint(tmp_path)
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        (folder / name).write_bytes(b"\xff\xd8 not really an image")
    code = infer_main(["--checkpoint", ckpt, "--out", str(tmp_path / "r.json"), "--images", str(folder)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and summary["images"] == 0 and summary["skipped"] == 2
    assert "no image could be read: 2 skipped" in caplog.text
