"""Every option of every script has the name, default, type and choices recorded in
tests/data/cli_options.json (written by ``python tests/cli_contract.py`` after a deliberate change)."""

import json

import pytest

from tests.cli_contract import RECORD, SCRIPTS, contract

with open(RECORD, encoding="utf-8") as f:
    RECORDED = json.load(f)


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_option_is_as_recorded(script):
    now = contract(script)
    assert sorted(now) == sorted(RECORDED[script]), "options added or removed"
    for option, facts in RECORDED[script].items():
        assert now[option] == facts, option


def test_the_record_holds_the_defaults_the_documents_promise():
    train = RECORDED["train_asm_one"]
    assert train["--K"]["default"] == 100 and train["--K"]["type"] == "int"  # README: --K 100
    assert "v1+" in train["--strategy"]["choices"] and "topk_v2" in train["--strategy"]["choices"]


def test_help_lists_one_spelling_of_each_flag_and_the_old_ones_still_parse():
    from train_asm_one import get_args_parser

    parser = get_args_parser()
    text = parser.format_help()
    assert "--certain-thre" in text and "--certain_thre" not in text  # ASM_core's spelling, hidden
    assert "--batch-size" in text and "--batch_size" not in text
    assert parser.parse_args(["--certain_thre", "0.7"]).certain_thre == 0.7
    assert "--ckpt" not in text and parser.parse_args(["--ckpt", "out"]).output_dir == "out"
    assert "  --K K " in text or "  --K K\n" in text  # a flag with one spelling is shown as it is
