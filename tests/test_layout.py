"""The house rules of the layout: command lines at the root, tools/ a library, the merge plain rules."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("train_asm_one", "al_curve", "infer", "visualize", "import_labels", "labelstudio_round")


def _source(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize(
    "name", sorted(n for n in os.listdir(os.path.join(ROOT, "tools")) if n.endswith(".py"))
)
def test_tools_is_a_library(name):
    tree = ast.parse(_source(os.path.join("tools", name)))
    mains = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Compare) and isinstance(n.left, ast.Name) and n.left.id == "__name__"
    ]
    path_edits = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and n.attr == "path"
        and isinstance(n.value, ast.Name)
        and n.value.id == "sys"
    ]
    assert not mains and not path_edits


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_import_only_the_library(script):
    tree = ast.parse(_source(f"{script}.py"))
    imported = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & set(SCRIPTS), "a script imports another script"
    assert "sys.path" not in _source(f"{script}.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help(script, capsys):
    module = __import__(script)
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out


def test_the_merge_is_plain_rules():
    source = _source(os.path.join("asm", "merge.py"))
    assert len(source.splitlines()) <= 240  # as ruff format writes it
    assert "import threading" not in source and "concurrent" not in source


# The layering's nevers: which of our packages each layer may not import (torch is allowed only where
# tensors are the data: datasets for loading, net for models, tools for the loops).
NEVER = {
    "asm": {"tools", "net", "torch", "torchvision", *SCRIPTS},
    "datasets": {"tools", "net", "asm", *SCRIPTS},
    "net": {"tools", "datasets", "asm", *SCRIPTS},
    "tools": set(SCRIPTS),
}


@pytest.mark.parametrize("package", sorted(NEVER))
def test_layers_never_import_what_sits_above_them(package):
    found = {}
    for name in sorted(os.listdir(os.path.join(ROOT, package))):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(_source(os.path.join(package, name)))
        modules = {
            n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level
        }
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        bad = {m for m in modules if m.split(".")[0] in NEVER[package]}
        if bad:
            found[name] = sorted(bad)
    assert not found, f"{package}/ imports what it never may: {found}"
