"""Bad options, configs, checkpoints and output folders: one clear line and exit code 2, never a traceback."""

import json
import os
import pickle
import shutil

import pytest
import torch

from tools.runtime.logs import read_jsonl
from train_asm_one import main

TINY = [
    "--demo-train",
    "16",
    "--demo-val",
    "4",
    "--min-size",
    "64",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--warmup-iters",
    "2",
    "--epochs",
    "2",
    "--K",
    "4",
    "--initial",
    "8",
    "--round-epochs",
    "1",
    "--max-rounds",
    "1",
    "--ap-range",
    "10",
]


def _run(tmp_path, name, *extra):
    out = str(tmp_path / name)
    return main([*TINY, "--cache-dir", str(tmp_path / "cache"), "--output-dir", out, *extra]), out


def _error(caplog) -> str:
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "Traceback" not in caplog.text
    return errors[0].getMessage()


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--certain-thre", "0.2", "--uncertain-thre", "0.5"],
            "--uncertain-thre (0.5) must not exceed --certain-thre",
        ),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--round-epochs", "0"], "--round-epochs must be at least 1"),
        (["--min-size", "0"], "--min-size must be at least 1"),
        (["--min-size", "16"], "--min-size must be at least 32"),
        (["--max-size", "50"], "--max-size (50) must be at least --min-size (64)"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--lr", "-0.1"], "--lr must be > 0.0"),
        (["--momentum", "2"], "--momentum must be <= 1.0"),
        (
            ["--cer-ratio", "0.7", "--uncer-ratio", "0.6"],
            "--cer-ratio (0.7) must be below --uncer-ratio (0.6)",
        ),
        (["--max-rounds", "-1"], "--max-rounds must be >= 0"),
        (["--K", "0"], "--K must be at least 1"),
        (["--gt-iou", "0"], "--gt-iou must be > 0.0"),
        (["--certain-precision", "1.5"], "--certain-precision must be <= 1.0"),
        (["--certain-precision", "1.0"], "--certain-precision must be below 1.0 (a lower bound"),
        (["--certain-precision", "0"], "--certain-precision must be > 0.0"),
        (["--certain-precision", "nan"], "--certain-precision must be a finite number"),
        (["--certain-agreement", "1.5"], "--certain-agreement must be <= 1.0"),
        (["--certain-agreement", "0"], "--certain-agreement must be > 0.0"),
        (["--certain-agreement", "nan"], "--certain-agreement must be a finite number"),
        (["--candidates", "0"], "--candidates must be at least 1"),
        (["--lr-steps", "1.5"], "--lr-steps are fractions"),
        (["--warmup-iters", "-1"], "--warmup-iters must be >= 0"),
        (["--max-passes", "0"], "--max-passes must be at least 1"),
        (["--review-cost", "-1"], "--review-cost must be >= 0.0"),
        (["--move-cost", "nan"], "--move-cost must be a finite number"),
        (["--base-batch-size", "0"], "--base-batch-size must be at least 1"),
        (["--hlr-pos-fraction", "1.5"], "--hlr-pos-fraction must be <= 1.0"),
        (["--carl-bias", "-0.1"], "--carl-bias must be >= 0.0"),
        (["--isr-k", "inf"], "--isr-k must be a finite number"),
        (["--hlr-num", "0"], "--hlr-num must be at least 1"),
        (["--strategy", "random", "--candidates", "4"], "--candidates needs the model's detections"),
    ],
)
def test_bad_options_are_refused_before_any_data_loads(tmp_path, caplog, flags, message):
    code, out = _run(tmp_path, "run", *flags)
    assert code == 2
    assert message in _error(caplog)
    assert not os.path.exists(tmp_path / "cache")  # refused before the demo data was built


def test_an_initial_pool_larger_than_the_data(tmp_path, caplog):
    code, out = _run(tmp_path, "run", "--initial", "500")
    assert code == 2 and "--initial 500.0 gives 500 images; the pool has 16" in _error(caplog)
    assert not os.path.exists(out)  # nothing written


def test_an_output_dir_that_is_a_file(tmp_path, caplog):
    (tmp_path / "file").write_text("x")
    code, _ = _run(tmp_path, "file")
    assert code == 2 and "exists and is not a folder" in _error(caplog)


@pytest.mark.parametrize(
    "text, message",
    [
        ("K: 1.5\n", "K must be an integer"),
        ("epochs: null\n", "epochs is null"),
        ("strategy: v9\n", "strategy must be one of"),
        ("lr: abc\n", "lr: could not convert"),
        ("deterministic: maybe\n", "deterministic must be true or false"),
        ("batch_size: [1, 2]\n", "batch_size takes one value"),
        ("no_such_key: 1\n", "unknown config keys ['no_such_key']"),
        ("- a list\n", "must be a mapping"),
        ("K: [\n", "not valid YAML"),
        ("_base_: 5\n", "_base_ must be a file name or a list of them, got 5"),
        ("_base_: [null]\n", "_base_ must be a file name or a list of them, got [None]"),
        ("3: 4\n", "key 3 is not an option name"),
        ("K: [1, 2\n", "line 2: not valid YAML"),
    ],
)
def test_bad_config_values_name_the_file_and_key(tmp_path, caplog, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, _ = _run(tmp_path, "run", "--config", str(path))
    assert code == 2 and message in _error(caplog)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real checkpoint, cut after the first epoch."""
    tmp = tmp_path_factory.mktemp("ckpt")
    code, out = _run(tmp, "cut", "--exit-after-epochs", "1")
    assert code == 3
    return os.path.join(out, "last.pth")


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _write(tmp_path, name, fill) -> str:
    path = str(tmp_path / name)
    fill(path)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp, ck: str(tmp / "nothere.pth"), "checkpoint not found"),
        (lambda tmp, ck: _write(tmp, "empty.pth", lambda p: open(p, "wb").close()), "the file is empty"),
        (
            lambda tmp, ck: _write(
                tmp, "cut.pth", lambda p: open(p, "wb").write(open(ck, "rb").read()[:4096])
            ),
            "not a readable checkpoint",
        ),
        (
            lambda tmp, ck: _write(tmp, "text.pth", lambda p: open(p, "w").write("hello")),
            "not a readable checkpoint",
        ),
        (lambda tmp, ck: _write(tmp, "evil.pth", lambda p: torch.save({"model": Payload()}, p)), "refused"),
        (
            lambda tmp, ck: _write(tmp, "pickle.pth", lambda p: pickle.dump({"a": 1}, open(p, "wb"))),
            "not written by this tool",
        ),
        (
            lambda tmp, ck: _write(tmp, "weights.pth", lambda p: torch.save({"model": {}}, p)),
            "not a train_asm_one.py checkpoint (no 'optimizer'",
        ),
        (lambda tmp, ck: _write(tmp, "list.pth", lambda p: torch.save([1, 2], p)), "holds a list"),
    ],
)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.slow  # its checkpoint trains an epoch: left out of the mutation runs
def test_unusable_checkpoints_explain_themselves(tmp_path, caplog, checkpoint, make, message):
    (tmp_path / "resume").mkdir()  # the checkpoint's folder is the run's folder
    code, _ = _run(tmp_path, "resume", "--resume", make(tmp_path / "resume", checkpoint))
    assert code == 2 and message in _error(caplog)
    assert "pwned" not in caplog.text


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(classes=["a", "b"]), "made for the classes ['a', 'b']"),
        (lambda c: c.update(format=99), "written by a newer version of this tool (format 99"),
        (
            lambda c: c["model"].update({k: torch.zeros(3) for k in list(c["model"])[-1:]}),
            "another model or class count",
        ),
        (
            lambda c: c["optimizer"]["param_groups"].append(dict(c["optimizer"]["param_groups"][0])),
            "optimizer state does not fit",
        ),
    ],
)
@pytest.mark.slow  # its checkpoint trains an epoch: left out of the mutation runs
def test_checkpoints_of_another_setup_are_refused(tmp_path, caplog, checkpoint, edit, message):
    ckpt = torch.load(checkpoint, weights_only=True)
    edit(ckpt)
    (tmp_path / "resume").mkdir()
    path = str(tmp_path / "resume" / "other.pth")
    torch.save(ckpt, path)
    code, _ = _run(tmp_path, "resume", "--resume", path)
    assert code == 2 and message in _error(caplog)


@pytest.mark.slow  # trains: left out of the mutation runs
def test_an_output_dir_holds_one_run(tmp_path, caplog, checkpoint):
    out = os.path.dirname(checkpoint)
    work = tmp_path / "cut"
    shutil.copytree(out, work)
    code, _ = _run(tmp_path, "cut")  # neither --resume nor --overwrite
    assert code == 2 and "holds another run" in _error(caplog) and "--overwrite" in _error(caplog)
    # a live process holds the folder
    (work / ".lock").write_text(f"{__import__('socket').gethostname()} {os.getpid()}")
    caplog.clear()
    code, _ = _run(tmp_path, "cut", "--resume", str(work / "last.pth"))
    assert code == 2 and f"in use by process {os.getpid()}" in _error(caplog)
    # a lock left by a killed process is taken over; a torn temp file and records written after the
    # last checkpoint are cleaned by the resume
    (work / ".lock").write_text(f"{__import__('socket').gethostname()} 4194000")
    (work / ".tmp_abc.pth").write_bytes(b"torn")
    with open(work / "log.jsonl", "a") as f:
        f.write(json.dumps({"type": "epoch", "phase": "pretrain", "epoch": 1, "stale": True}) + "\n")
    code, _ = _run(tmp_path, "cut", "--resume", str(work / "last.pth"))
    assert code == 0
    assert not (work / ".lock").exists() and not (work / ".tmp_abc.pth").exists()
    epochs = [(e["phase"], e["epoch"]) for e in read_jsonl(work / "log.jsonl") if e["type"] == "epoch"]
    assert len(epochs) == len(set(epochs)) and not any(e.get("stale") for e in read_jsonl(work / "log.jsonl"))
    # --overwrite starts over
    code, _ = _run(tmp_path, "cut", "--overwrite", "--max-rounds", "0")
    assert code == 0
    assert [e["epoch"] for e in read_jsonl(work / "log.jsonl") if e["type"] == "epoch"] == [0, 1]


# -- data files: VOC, COCO, images --------------------------------------------------------------
VOC_XML = """<annotation><filename>a.jpg</filename><size><width>{w}</width><height>48</height></size>
<object><name>cat</name><difficult>{d}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>{x2}</xmax>
<ymax>9</ymax></bndbox></object></annotation>"""


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"w": "inf"}, "<size/width> = 'inf' is not a finite pixel value"),
        ({"w": "1e400"}, "is not a finite pixel value"),
        ({"w": "64.5"}, "<size/width> = '64.5' is not an integer"),
        ({"d": "1e400"}, "<difficult> = '1e400' is not a finite"),
        ({"x2": "nan"}, "<bndbox/xmax> = 'nan' is not a finite"),
        ({"x2": "ten"}, "<bndbox/xmax> = 'ten' is not a number"),
    ],
)
def test_voc_numbers_are_checked(tmp_path, fields, message):
    from datasets.records import AnnotationError
    from datasets.voc import parse_voc_xml

    path = tmp_path / "a.xml"
    path.write_text(VOC_XML.format(**{"w": "64", "d": "0", "x2": "9", **fields}))
    with pytest.raises(AnnotationError, match="a.xml: line") as e:
        parse_voc_xml(str(path))
    assert message in str(e.value)


def _coco(**changes):
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 3, "name": "cat"}],
        "annotations": [
            {
                "id": 7,
                "image_id": 1,
                "category_id": 3,
                "bbox": [1, 1, 8, 8],
                "iscrowd": 0,
                "segmentation": [[1, 1, 9, 1, 9, 9]],
            }
        ],
    }
    for path, value in changes.items():
        *keys, last = path.split(".")
        node = data
        for k in keys:
            node = node[int(k)] if k.isdigit() else node[k]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return data


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"images.0.id": 522418.5}, "images[0] needs integer 'id'"),
        ({"images.0.id": 2**70}, "out of the 64-bit range"),
        ({"images.0.file_name": 12}, "'file_name' is 12, not a string"),
        ({"images.0.width": -5}, "out of range"),
        ({"images": None}, "'images' must be a list"),
        ({"annotations": {"a": 1}}, "'annotations' must be a list"),
        ({"annotations.0.image_id": 1.5}, "annotations[0] needs integer 'image_id'"),
        ({"annotations.0.category_id": 2**70}, "annotations[0] needs integer"),
        ({"annotations.0.bbox": [1, 1, float("inf"), 8]}, "annotations[0]"),
        ({"annotations.0.iscrowd": "no"}, "'iscrowd' must be 0 or 1, got 'no'"),
        ({"categories.0.id": 3.5}, "integer 'id' and a 'name'"),
        (
            {"annotations.0.segmentation": [[1, 1, 9, 1, 9]]},
            "annotation id 7: segmentation polygon 0 needs an even number",
        ),
        ({"annotations.0.segmentation": [[1, 1, 9, 1, "x", 9]]}, "not a finite number"),
        ({"annotations.0.segmentation": {"size": [48, 64]}}, "RLE dict with 'counts' and 'size'"),
        ({"annotations.0.segmentation": {"size": [48, 64], "counts": "!!bad"}}, "RLE cannot be decoded"),
        ({"annotations.0.segmentation": {"size": [10, 10], "counts": [100]}}, "is not the image's"),
    ],
)
def test_coco_fields_are_checked(changes, message):
    from datasets.coco import load_coco
    from datasets.records import AnnotationError

    with pytest.raises(AnnotationError) as e:
        load_coco(_coco(**changes), "/", check_images=False, source="bad.json")
    assert "bad.json" in str(e.value) and message in str(e.value)


def test_coco_files_without_annotations_or_too_deep(tmp_path, caplog):
    from datasets.coco import load_coco, read_json
    from datasets.records import AnnotationError

    data = load_coco(_coco(annotations=KeyError), "/", check_images=False, source="img.json")
    assert len(data) == 1 and "no 'annotations' key: all 1 images are negatives" in caplog.text
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AnnotationError, match="nested too deeply"):
        read_json(str(deep))


def test_broken_huge_and_16_bit_images(tmp_path):
    import numpy as np
    from PIL import Image

    from datasets.common import read_image_size
    from datasets.torch_data import read_image

    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:-400])  # the header survives, the end of the scan does not
    assert read_image_size(str(tmp_path / "ok.jpg")) == (64, 48)
    assert read_image_size(str(tmp_path / "cut.jpg")) == "truncated_image"
    (tmp_path / "padded.jpg").write_bytes(
        data + b"\x00" * 1190
    )  # zero padding after the end marker: complete
    assert read_image_size(str(tmp_path / "padded.jpg")) == (64, 48)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    assert read_image_size(str(tmp_path / "junk.png")) == "unreadable_image"
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")  # 400 MP of one bit: a small file
    assert read_image_size(str(tmp_path / "bomb.png")) == "image_too_large"
    assert read_image_size(str(tmp_path / "none.png")) == "missing_image"
    grey = (np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)  # 0 .. 61420
    Image.fromarray(grey).save(tmp_path / "deep.png")
    image = read_image(str(tmp_path / "deep.png"))
    assert image.shape == (3, 48, 64) and image.dtype == torch.uint8
    assert 0 < image.float().mean() < 255 and image.max() == round(
        61420 / 65535 * 255
    )  # scaled, not clipped white
    with pytest.raises(OSError, match="cut.jpg: cannot read image"):
        read_image(str(tmp_path / "cut.jpg"))


def test_the_load_report_names_the_first_files_of_each_kind(caplog):
    import logging

    from datasets.report import LoadReport

    report = LoadReport()
    for k in range(12):
        report.add("missing_image", f"ann/{k}.xml", f"img/{k}.jpg")
    report.add("truncated_image", "ann/t.xml", "img/t.jpg")
    with caplog.at_level(logging.INFO, logger="datasets.report"):
        report.log("VOC train")
    shown = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert sum("missing_image: ann/" in m for m in shown) == 10 and any("... 2 more" in m for m in shown)
    assert any("truncated_image: ann/t.xml img/t.jpg" in m for m in shown)
    assert "12 missing_image, 1 truncated_image" in caplog.text


# -- issue 28: run folders, split files, configs --------------------------------------------------
def _voc_devkit(root, ids=("a", "b", "c", "d")):
    from tests.helpers import make_voc, voc_xml

    make_voc(
        root,
        {i: voc_xml(f"{i}.jpg", objects=(("cat", (5, 5, 30, 30)),)) for i in ids},
        split="trainval",
        split_ids=list(ids),
    )
    return str(root)


def test_a_typo_in_a_voc_split_name_is_an_error_listing_the_splits(tmp_path, caplog):
    root = _voc_devkit(tmp_path / "VOC")
    code, out = _run(
        tmp_path,
        "run",
        "--dataset",
        "voc",
        "--voc-roots",
        root,
        "--voc-classes",
        "cat",
        "--voc-train-split",
        "trainvall",
    )
    message = _error(caplog)
    assert (
        code == 2
        and "no such split file (--voc-train-split 'trainvall')" in message
        and "['trainval']" in message
    )


def test_split_ids_cannot_leave_the_dataset_root(tmp_path, caplog):
    root = _voc_devkit(tmp_path / "VOC")
    with open(os.path.join(root, "ImageSets", "Main", "evil.txt"), "w") as f:
        f.write("a\n../../../outside\n")
    code, _ = _run(
        tmp_path,
        "run",
        "--dataset",
        "voc",
        "--voc-roots",
        root,
        "--voc-classes",
        "cat",
        "--voc-train-split",
        "evil",
    )
    assert code == 2 and "evil.txt line 2: image id '../../../outside' leaves the dataset root" in _error(
        caplog
    )


def test_bad_yaml_in_cfg_options_is_one_line(tmp_path, caplog):
    code, _ = _run(tmp_path, "run", "--cfg-options", "K=[1,")
    assert code == 2 and "--cfg-options 'K=[1,': the value is not valid YAML" in _error(caplog)


@pytest.mark.slow  # trains: left out of the mutation runs
def test_a_run_stopped_before_its_first_checkpoint_restarts_with_the_same_command(tmp_path):
    out = tmp_path / "early"
    out.mkdir()
    (out / "config.yaml").write_text("K: 4\n")  # what a run killed during its first epoch leaves
    (out / "log.jsonl").write_text("")
    (out / ".lock").write_text("")  # an empty lock: its writer died before finishing it
    code, _ = _run(tmp_path, "early", "--max-rounds", "0")
    assert code == 0 and (out / "last.pth").is_file() and not (out / ".lock").exists()


@pytest.mark.slow  # trains: left out of the mutation runs
def test_overwrite_draws_a_flat_folders_split_again(tmp_path, capsys):
    from datasets.synthetic import demo_root

    demo = demo_root(0, 16, 4, str(tmp_path / "cache"))
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    (flat / "annotations").mkdir()
    names = sorted(os.listdir(os.path.join(demo, "VOC", "Annotations")))
    for name in names[:10]:
        shutil.copy(os.path.join(demo, "VOC", "Annotations", name), flat / "annotations" / name)
        shutil.copy(os.path.join(demo, "VOC", "JPEGImages", name[:-4] + ".jpg"), flat / "images")
    argv = [
        "--dataset",
        "voc",
        "--voc-roots",
        str(flat),
        "--discover-classes",
        "--max-rounds",
        "0",
        "--initial",
        "4",
    ]
    code, out = _run(tmp_path, "run", *argv)
    assert code == 0 and len(open(os.path.join(out, "splits", "train.txt")).read().split()) == 8
    for name in names[10:]:  # the dataset grows
        shutil.copy(os.path.join(demo, "VOC", "Annotations", name), flat / "annotations" / name)
        shutil.copy(os.path.join(demo, "VOC", "JPEGImages", name[:-4] + ".jpg"), flat / "images")
    code, out = _run(tmp_path, "run", *argv, "--overwrite")
    assert code == 0 and len(open(os.path.join(out, "splits", "train.txt")).read().split()) == 16


def test_a_training_coco_file_without_annotations_names_the_file_and_the_key(tmp_path):
    from datasets.build import DataOptions, build_datasets
    from tests.helpers import coco_dict, write_coco

    data = coco_dict()
    del data["annotations"]
    train = write_coco(tmp_path / "train", data)
    val = write_coco(tmp_path / "val", coco_dict())
    opts = DataOptions.of(
        {
            "dataset": "coco",
            "coco_train_json": train,
            "coco_train_images": str(tmp_path / "train" / "images"),
            "coco_val_json": val,
            "coco_val_images": str(tmp_path / "val" / "images"),
            "output_dir": str(tmp_path / "out"),
        }
    )
    with pytest.raises(ValueError) as e:
        build_datasets(opts)
    assert str(e.value).startswith(f"{train}: no 'annotations' key, so its 1 images hold no boxes")


def test_a_certain_agreement_that_is_not_a_number_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        _run(tmp_path, "run", "--certain-agreement", "tight")
    assert stop.value.code == 2
    assert "--certain-agreement: expected a number or 'none', got 'tight'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "cache")
