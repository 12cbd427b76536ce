import glob
import os

import pytest
import yaml

from tests.helpers import tiny_demo
from tools.loop.config import load_config, merge_dicts, parse_with_config
from train_asm_one import get_args_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_multi_level_base_and_later_wins(tmp_path):
    _write(tmp_path / "base" / "a.yaml", {"lr": 0.1, "K": 5, "min_size": 100})
    _write(tmp_path / "base" / "b.yaml", {"_base_": "a.yaml", "lr": 0.2, "voc-classes": ["x"]})
    _write(tmp_path / "other.yaml", {"K": 7})
    top = _write(tmp_path / "c.yaml", {"_base_": ["base/b.yaml", "other.yaml"], "min_size": 300})
    assert load_config(top) == {"lr": 0.2, "K": 7, "min_size": 300, "voc_classes": ["x"]}
    assert merge_dicts({"a": {"x": 1, "y": 2}, "b": 1}, {"a": {"y": 3}}) == {"a": {"x": 1, "y": 3}, "b": 1}


def test_precedence_defaults_config_cfg_options_command_line(tmp_path):
    cfg = _write(tmp_path / "c.yaml", {"lr": 0.5, "K": 9, "strategy": "topk_v2", "epochs": 3})
    parser = get_args_parser()
    defaults = parser.parse_args([])
    args = parse_with_config(
        get_args_parser(), ["--config", cfg, "--cfg-options", "K=11", "epochs=4", "--epochs", "5"]
    )
    assert (args.lr, args.K, args.strategy, args.epochs) == (0.5, 11, "topk_v2", 5)
    assert args.min_size == defaults.min_size


def test_unknown_key_lists_valid_keys_and_cycles_fail(tmp_path):
    cfg = _write(tmp_path / "c.yaml", {"learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"unknown config keys \['learning_rate'\]; valid keys: .*'lr'"):
        parse_with_config(get_args_parser(), ["--config", cfg])
    with pytest.raises(ValueError, match="key=value"):
        parse_with_config(get_args_parser(), ["--cfg-options", "lr"])
    _write(tmp_path / "x.yaml", {"_base_": "y.yaml"})
    _write(tmp_path / "y.yaml", {"_base_": "x.yaml"})
    with pytest.raises(ValueError, match="cycle"):
        load_config(str(tmp_path / "x.yaml"))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_shipped_configs_parse(path):
    """Every key the file itself sets (read here with plain yaml, not through the loader) reaches the
    parsed options with its value; the keys it inherits come through its ``_base_`` chain."""
    args = parse_with_config(get_args_parser(), ["--config", path])
    with open(path) as f:
        own = {k: v for k, v in yaml.safe_load(f).items() if k != "_base_"}
    assert own, path
    for key, value in own.items():
        got = getattr(args, key.replace("-", "_"))
        assert (list(got) if isinstance(got, tuple) else got) == value, (path, key)


def test_demo_config_is_the_default_run():
    from tools.loop.options import OPTION_PRESETS

    demo = parse_with_config(
        get_args_parser(),
        ["--config", os.path.join(ROOT, "configs", "faster_rcnn_mnv2_fpn_12e_demo_v1plus.yaml")],
        OPTION_PRESETS,
    )
    plain = parse_with_config(get_args_parser(), [], OPTION_PRESETS)  # as train_asm_one.py parses
    assert {k: v for k, v in vars(demo).items() if k != "config"} == {
        k: v for k, v in vars(plain).items() if k != "config"
    }


@pytest.mark.slow  # trains: left out of the mutation runs
def test_resolved_config_is_written_and_reproduces_the_run(tmp_path):
    out = tmp_path / "run"
    argv = [
        *tiny_demo(8),
        "--strategy",
        "none",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output-dir",
        str(out),
        "--cfg-options",
        "lr=0.005",
    ]
    assert main(argv) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["lr"] == 0.005 and saved["epochs"] == 1 and "cfg_options" not in saved
    again = parse_with_config(get_args_parser(), ["--config", str(out / "config.yaml")])
    assert {k: v for k, v in vars(again).items() if k not in ("config", "config_file")} == {
        **saved,
        "cfg_options": [],
    }


def test_asm_core_defaults_sit_under_config_files_and_flags(tmp_path):
    from tools.loop.config import parse_with_config
    from tools.loop.options import ASM_CORE_DEFAULTS, OPTION_PRESETS
    from train_asm_one import get_args_parser

    parse = lambda *argv: parse_with_config(get_args_parser(), list(argv), OPTION_PRESETS)  # noqa: E731
    plain = parse("--dataset", "voc", "--voc-roots", str(tmp_path))  # the general defaults, not the demo's
    assert (plain.ap_range, plain.round_train, plain.mining_gate) == (4, "pool", 0.0)
    demo = parse()  # the demo's own (tools.loop.options.DEMO_DEFAULTS), under any flag
    assert (demo.round_train, demo.certain_precision, demo.certain_thre, demo.eval_interval) == (
        "replay",
        None,  # the general certainty rule: the demo shows the defaults at work
        0.8,
        2,
    )
    assert parse("--certain-precision", "none").certain_precision is None
    assert (plain.certain_precision, plain.certain_agreement) == (None, None)
    core = parse("--asm-core-defaults")
    assert {k: getattr(core, k) for k in ASM_CORE_DEFAULTS} == ASM_CORE_DEFAULTS
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ap_thre: 0.2\n")
    mixed = parse("--asm-core-defaults", "--config", str(cfg), "--ap-range", "6")
    assert (mixed.ap_thre, mixed.ap_range, mixed.ap_shift_asm) == (0.2, 6, 0.001)


@pytest.mark.parametrize(
    "script, argv, hint",
    [
        ("train_asm_one", ["--certain-thresh", "0.9"], "did you mean --certain-thre"),
        ("al_curve", ["--warmup-iter", "5"], "did you mean --warmup-iters"),
        ("infer", ["--checkpnt", "w.pth"], "did you mean --checkpoint"),
        ("visualize", ["--score-thres", "0.5"], "did you mean --score-thresh"),
        ("import_labels", ["--label", "x.json"], "did you mean --labels"),
        ("labelstudio_round", ["push", "--runs", "out"], "did you mean --run"),
    ],
)
def test_an_unknown_option_is_named_with_the_closest_known_ones(script, argv, hint, capsys, caplog):
    """Before any positional config is looked up: the mistyped option's value is not a config file."""
    module = __import__(script)
    try:
        code = module.main(argv)
    except SystemExit as e:
        code = e.code
    text = capsys.readouterr().err + caplog.text
    assert code == 2 and f"unknown option {argv[-2] if script != 'labelstudio_round' else '--runs'}" in text
    assert hint in text and "config not found" not in text
