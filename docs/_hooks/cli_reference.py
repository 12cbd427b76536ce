"""MkDocs hook: the CLI reference page, generated from the scripts' own argparse parsers when the
site builds, so it cannot drift from ``--help``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = ("train_asm_one", "al_curve", "infer", "visualize", "import_labels", "labelstudio_round")
PLACEHOLDER = "<!-- cli-reference -->"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(action: argparse.Action) -> str:
    if action.default in (None, argparse.SUPPRESS) or isinstance(action, argparse._StoreTrueAction):
        return ""
    return f"`{action.default}`"


def _help(action: argparse.Action, prog: str) -> str:
    """The help text as ``--help`` prints it (``%(default)s`` and the like filled in)."""
    text = action.help or ""
    if text == argparse.SUPPRESS:
        return ""
    return text % dict(vars(action), prog=prog) if "%(" in text else text


def script_reference(name: str) -> str:
    """One script's options as Markdown: a table per argument group (option, default, help)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    parser = importlib.import_module(name).get_args_parser()
    description = (parser.description or "").strip().split("\n\n")[0]
    lines = [f"## `{name}.py`", "", _cell(description), ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        lines += [f"### {group.title}", "", "| option | default | help |", "| --- | --- | --- |"]
        for a in actions:
            names = ", ".join(f"`{s}`" for s in a.option_strings) or f"`{a.dest}` (positional)"
            choices = f" (one of: {', '.join(map(str, a.choices))})" if a.choices else ""
            lines.append(f"| {names} | {_cell(_default(a))} | {_cell(_help(a, parser.prog) + choices)} |")
        lines.append("")
    return "\n".join(lines)


def reference() -> str:
    return "\n".join(script_reference(name) for name in SCRIPTS)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if PLACEHOLDER in markdown:
        return markdown.replace(PLACEHOLDER, reference())
    return markdown
