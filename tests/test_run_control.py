"""MMDetection-style run control: a positional config, --auto-resume, --no-validate, --auto-scale-lr."""

import json
import os

import pytest
import yaml

from tests.test_asm_run import TINY
from tools.loop.config import parse_with_config
from tools.loop.options import OPTION_PRESETS
from tools.runtime.logs import read_jsonl
from train_asm_one import get_args_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _argv(tmp_path, name, *extra):
    return [
        *TINY,
        "--max-rounds",
        "1",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output-dir",
        str(tmp_path / name),
        *extra,
    ]


def test_help_lists_the_new_flags_and_models(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--roi-head {standard,pisa}",
        "--auto-resume",
        "--no-validate",
        "--auto-scale-lr",
        "--work-dir",
        "fasterrcnn_resnext101_32x4d_fpn",
        "maskrcnn_resnext50_32x4d_fpn",
        "MMDetection's tools/train.py",
    ):
        assert flag in text, flag


def test_a_positional_config_is_a_config_file(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "_base_": os.path.join(ROOT, "configs", "pisa_faster_rcnn_mnv2_fpn_12e_bccd_v1plus.yaml"),
                "K": 7,
            }
        )
    )
    args = parse_with_config(get_args_parser(), [str(cfg), "--lr", "0.5"], OPTION_PRESETS)
    assert (args.K, args.roi_head, args.dataset, args.lr) == (7, "pisa", "voc", 0.5)
    mmdet = parse_with_config(
        get_args_parser(), [os.path.join(ROOT, "configs", "pisa_faster_rcnn_x101_32x4d_fpn_12e_coco.yaml")]
    )
    assert (mmdet.model, mmdet.hlr_num, mmdet.carl_bias, mmdet.base_batch_size) == (
        "fasterrcnn_resnext101_32x4d_fpn",
        512,
        0.2,
        16,
    )


def test_the_same_command_with_auto_resume_continues(tmp_path, capsys):
    argv = _argv(tmp_path, "auto", "--auto-resume")
    assert main([*argv, "--exit-after-epochs", "1"]) == 3
    assert main(argv) == 0  # continues: no "holds another run", no restart
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    epochs = [
        (e["phase"], e["epoch"]) for e in read_jsonl(tmp_path / "auto" / "log.jsonl") if e["type"] == "epoch"
    ]
    assert epochs == [("pretrain", 0), ("round1", 0)]
    assert main(argv) == 0  # once more: finished already, nothing is trained again
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["weights_sha256"] == first["weights_sha256"] and again["epochs"] == first["epochs"] == 2


def test_no_validate_evaluates_each_phase_once_and_auto_scale_lr_scales(tmp_path, capsys, caplog):
    out = tmp_path / "nv"
    assert (
        main(_argv(tmp_path, "nv", "--epochs", "3", "--no-validate", "--auto-scale-lr", "--lr", "0.02")) == 0
    )
    evaluated = [
        (e["phase"], e["epoch"])
        for e in read_jsonl(out / "log.jsonl")
        if e["type"] == "epoch" and e["AP50"] is not None
    ]
    assert evaluated == [("pretrain", 2), ("round1", 0)]
    assert "AP-shift early stopping cannot stop" in caplog.text
    config = yaml.safe_load(open(out / "config.yaml"))
    assert (
        config["lr"] == 0.02 * 4 / 16 and config["auto_scale_lr"] is False and config["base_batch_size"] == 16
    )


def test_one_flag_style_with_the_old_spellings_as_hidden_aliases(capsys):
    from train_asm_one import get_args_parser

    parser = get_args_parser()
    old = parser.parse_args(
        ["--certain_thre", "0.7", "--batch_size", "2", "--num_epoches", "3", "--ap_shift_asm", "0"]
    )
    new = parser.parse_args(
        ["--certain-thre", "0.7", "--batch-size", "2", "--epochs", "3", "--ap-shift-asm", "0"]
    )
    assert vars(old) == vars(new)
    parser.print_help()
    text = capsys.readouterr().out
    assert "--certain-thre" in text and "--ap-shift-asm" in text
    assert "--certain_thre" not in text and "--batch_size" not in text and "--num_epoches" not in text
    assert "--ckpt" not in text and parser.parse_args(["--ckpt", "o"]).output_dir == "o"  # ASM_core's, hidden


def test_auto_scale_lr_scales_once_however_often_the_run_is_resumed(tmp_path):
    """--lr 0.02 at batch 4 against --base-batch-size 16 is 0.005, in the run's first phase and in
    every round after two resumes with --max-rounds raised (each resume once divided it by 4)."""
    argv = _argv(tmp_path, "scaled", "--epochs", "1", "--round-epochs", "1", "--K", "4", "--auto-scale-lr")
    argv += ["--lr", "0.02", "--warmup-iters", "0"]
    assert main(argv) == 0
    for rounds in ("2", "3"):
        assert main([*argv, "--resume", "--max-rounds", rounds]) == 0
    log = read_jsonl(tmp_path / "scaled" / "log.jsonl")
    peaks = {}
    for e in (e for e in log if e["type"] == "epoch"):
        peaks[e["phase"]] = max(peaks.get(e["phase"], 0.0), e["losses"]["lr"])
    assert list(peaks) == ["pretrain", "round1", "round2", "round3"]
    assert peaks == pytest.approx(dict.fromkeys(peaks, 0.005))
    with open(tmp_path / "scaled" / "config.yaml") as f:
        assert yaml.safe_load(f)["lr"] == pytest.approx(0.005)
