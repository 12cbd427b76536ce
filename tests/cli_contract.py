"""The command line as a contract: each option of each script, its name, default, type and choices.

    python tests/cli_contract.py    # writes tests/data/cli_options.json after a deliberate change

A user's scripts and configs name these options; :mod:`tests.test_cli_contract` checks the parsers
against the recorded file, so a renamed flag or a changed default is a decision, seen in review."""

from __future__ import annotations

import importlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD = os.path.join(ROOT, "tests", "data", "cli_options.json")
SCRIPTS = ("train_asm_one", "al_curve", "infer", "visualize", "import_labels", "labelstudio_round")


def _plain(value):
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def contract(script: str) -> dict[str, dict]:
    """``option -> {dest, default, type, choices, nargs, const, action, required}`` of ``script``."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    parser = importlib.import_module(script).get_args_parser()
    return {
        "/".join(a.option_strings) or a.dest: {
            "dest": a.dest,
            "default": _plain(a.default),
            "type": _plain(a.type),
            "choices": _plain(a.choices),
            "nargs": a.nargs,
            "const": _plain(a.const),
            "action": type(a).__name__,
            "required": a.required,
        }
        for a in parser._actions
    }


if __name__ == "__main__":
    from datasets.atomic import atomic_write_text  # noqa: E402

    record = {script: contract(script) for script in SCRIPTS}
    atomic_write_text(RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORD}")
