"""Learning-curve tool: outputs, a user sampler, and resuming an interrupted run."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import tools.engine.epoch
from al_curve import main
from asm.samplers import BaseSampler
from datasets.coco import decode_masks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = [
    "--demo-train",
    "24",
    "--demo-val",
    "6",
    "--min-size",
    "64",
    "--train-batch-size",
    "4",
    "--workers",
    "0",
    "--warmup-iters",
    "2",
    "--deterministic",
    "--epochs",
    "1",
    "--seed-batch",
    "8",
    "--step-size",
    "4",
    "--steps",
    "2",
    "--seeds",
    "0",
    "1",
    "--ap-range",
    "10",
]


class LastIdsSampler(BaseSampler):
    def rank(self, candidates, **context):
        return [int(i.rsplit("_", 1)[-1]) for i in candidates]


def _run(tmp_path, name, *extra):
    out = str(tmp_path / name)
    return main([*TINY, "--cache-dir", str(tmp_path / "cache"), "--output-dir", out, *extra]), out


def test_curves_written_and_resume_gives_the_same_json(tmp_path):
    samplers = ["--samplers", "random", "entropy", "--seeds", "0"]  # two seeds: the fresh-process test
    code, full = _run(tmp_path, "full", *samplers, "--x-axis", "boxes")
    assert code == 0
    data = json.load(open(os.path.join(full, "curves.json")))
    assert [(c["sampler"], c["seed"], len(c["steps"])) for c in data["curves"]] == [
        ("random", 0, 2),
        ("entropy", 0, 2),
    ]
    for c in data["curves"]:
        assert [s["images"] for s in c["steps"]] == [8, 12]
        assert c["steps"][1]["human_drawn_boxes"] >= c["steps"][0]["human_drawn_boxes"]
    rows = list(csv.DictReader(open(os.path.join(full, "curves.csv"))))
    assert len(rows) == 4 and set(rows[0]) == {
        "sampler",
        "seed",
        "step",
        "images",
        "human_drawn_boxes",
        "AP50",
        "AP75",
        "AP",
        "segm_AP",
        "segm_AP50",
    }
    assert rows[0]["segm_AP"] == ""  # a box model has no mask AP
    with Image.open(os.path.join(full, "curves.png")) as im:
        assert im.size[0] > 100 and len(set(im.convert("L").tobytes())) > 10  # something is drawn
    code, part = _run(tmp_path, "part", *samplers, "--x-axis", "boxes", "--exit-after-steps", "1")
    assert code == 3
    code, part = _run(tmp_path, "part", *samplers, "--x-axis", "boxes")
    assert code == 0
    assert json.load(open(os.path.join(part, "curves.json"))) == data


def test_user_sampler_al_ratio_continue_mode_and_asm_logs(tmp_path, monkeypatch):
    import matplotlib.axes

    plotted, plot = {}, matplotlib.axes.Axes.plot

    def spy(self, xs, ys, *rest, label=None, **kw):
        plotted[label] = (list(xs), [round(float(y), 6) for y in ys])
        return plot(self, xs, ys, *rest, label=label, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    asm_log = tmp_path / "asm" / "log.jsonl"
    asm_log.parent.mkdir()
    asm_log.write_text(
        "".join(
            json.dumps({"type": "round", "labelled_images": n, "human_drawn_total": 3 * n, "AP50": n / 20})
            + "\n"
            for n in (8, 12)
        )
    )
    code, out = _run(
        tmp_path,
        "user",
        "--samplers",
        "tests.test_al_curve:LastIdsSampler",
        "al_ratio",
        "--seeds",
        "0",
        "--certain-thre",
        "0.05",
        "--uncertain-thre",
        "0.04",
        "--gt-iou",
        "0.1",
        "--resume-or-load",
        "continue",
        "--asm-logs",
        str(asm_log),
    )
    assert code == 0
    curves = json.load(open(os.path.join(out, "curves.json")))["curves"]
    assert [c["sampler"] for c in curves] == ["LastIdsSampler", "al_ratio"]
    assert curves[0]["steps"][1]["images"] == 12
    ckpt = torch.load(os.path.join(out, "LastIdsSampler_seed0.pth"), weights_only=True)
    ids = [r["image_id"] for r in ckpt["records"]][8:]
    assert ids == sorted(ids, reverse=True)  # the plug-in's ranking decided the step
    al = curves[1]["steps"]
    pool = torch.load(os.path.join(out, "al_ratio_seed0.pth"), weights_only=True)["records"]  # appended to
    boxes = [sum(len(r["boxes"]) for r in pool[: step["images"]]) for step in al]
    assert al[0]["human_drawn_boxes"] == boxes[0]  # the seed batch: every GT box drawn by hand
    # later steps: the new images' GT boxes less those the model confirmed (SL at --certain-thre 0.05)
    assert al[0]["human_drawn_boxes"] < al[1]["human_drawn_boxes"] <= boxes[1]
    assert al[1]["images"] > al[0]["images"]
    assert plotted["ASM asm"] == ([8, 12], [0.4, 0.6])  # --asm-logs: the ASM run's rounds on the plot
    assert main(["--samplers", "nope", "--output-dir", str(tmp_path / "bad")]) == 2


def test_sampler_flag_spellings():
    from al_curve import get_args_parser

    args = get_args_parser().parse_args(["--sampler", "tests.test_al_curve:LastIdsSampler"])
    assert args.samplers == ["tests.test_al_curve:LastIdsSampler"]


def _fresh_process(script: str, args: list[str]) -> subprocess.CompletedProcess:
    """``script`` in a new interpreter without MKL_CBWR preset: the script must make itself
    reproducible (both runs of a comparison at the session's thread count)."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    return subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_deterministic_curves_repeat_in_fresh_processes(tmp_path):
    results = []
    for name in ("first", "second"):
        out = tmp_path / name
        proc = _fresh_process(
            "al_curve.py",
            [
                *TINY,
                "--samplers",
                "random",
                "--seeds",
                "0",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--output-dir",
                str(out),
            ],
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(json.load(open(out / "curves.json")))
        assert "# threads:" in (out / "config.yaml").read_text()  # the environment is recorded
    assert results[0] == results[1]


def test_plot_without_matplotlib_warns_and_keeps_going(tmp_path, monkeypatch, caplog):
    from tools.runtime.curves import plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    steps = [
        {"images": 4, "human_drawn_boxes": 10, "AP50": 0.1},
        {"images": 8, "human_drawn_boxes": 20, "AP50": 0.2},
    ]
    plot([{"sampler": "random", "seed": 0, "steps": steps}], str(tmp_path / "curves.png"), "images", [])
    assert not (tmp_path / "curves.png").exists() and "matplotlib is not installed" in caplog.text


def test_mask_rcnn_curves_train_on_masks_and_report_mask_ap(tiny_coco_root, tmp_path, monkeypatch):
    """al_curve.py with Mask R-CNN: masks in the targets, segm AP per step in curves.json and the plot.
    The model trains for real; its evaluation sees a perfect detector (the ground truth, masks
    included), so the mask AP each step reports must be exactly 1."""

    def perfect(model, loader, device, desc="detect", masks=True):
        records = loader.dataset.records
        for _, targets in loader:
            indices = [int(t["index"]) for t in targets]
            yield (
                indices,
                [
                    {
                        "boxes": r.boxes,
                        "labels": r.labels,
                        "scores": np.ones(len(r), np.float32),
                        "masks": decode_masks(r).astype(np.float32),
                    }
                    for r in (records[i] for i in indices)
                ],
            )

    monkeypatch.setattr(tools.engine.epoch, "predictions", perfect)
    out = str(tmp_path / "mask")
    val_json = os.path.join(tiny_coco_root, "annotations", "instances_val2017.json")
    code = main(
        [
            "--dataset",
            "coco",
            "--coco-train-json",
            os.path.join(tiny_coco_root, "annotations", "instances_train2017.json"),
            "--coco-train-images",
            os.path.join(tiny_coco_root, "train2017"),
            "--coco-val-json",
            val_json,
            "--coco-val-images",
            os.path.join(tiny_coco_root, "val2017"),
            "--model",
            "maskrcnn_mobilenet_v2_fpn",
            "--min-size",
            "96",
            "--train-batch-size",
            "4",
            "--workers",
            "0",
            "--warmup-iters",
            "2",
            "--epochs",
            "1",
            "--seed-batch",
            "2",
            "--step-size",
            "2",
            "--steps",
            "2",
            "--seeds",
            "0",
            "--samplers",
            "random",
            "--amp",
            "--output-dir",
            out,
        ]
    )
    assert code == 0
    steps = json.load(open(os.path.join(out, "curves.json")))["curves"][0]["steps"]
    assert len(steps) == 2 and all(
        s["segm_AP"] == pytest.approx(1.0) and s["segm_AP50"] == pytest.approx(1.0) for s in steps
    )
    with Image.open(os.path.join(out, "curves.png")) as im:
        assert im.size[0] >= 1000  # two panels: box and mask AP
