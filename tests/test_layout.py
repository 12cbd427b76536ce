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


LIBRARY = ("asm", "datasets", "net", "tools")


def _library_modules():
    for package in LIBRARY:
        for name in sorted(os.listdir(os.path.join(ROOT, package))):
            if name.endswith(".py"):
                yield os.path.join(package, name)


# The entry's own layer: what train_asm_one.py's main is made of, reading the options as it does.
# tools/options.py turns options into frozen configs, tools/config.py layers config files under them;
# tools/setup.py (process, data, model), tools/resume.py (the resume rules), tools/run.py (the run's
# state), tools/rounds.py (a round), tools/round_cache.py (a round another run trained) and
# tools/report.py (what the user reads) are main's steps.
ENTRY_LAYER = ("options", "config", "setup", "resume", "run", "rounds", "round_cache", "report")


def test_options_stay_in_the_scripts_and_the_entry_layer():
    """Below the entry's layer, functions take plain values or frozen configs: no ``args.x`` (nor a
    parameter named ``args``) in asm/, datasets/, net/ or the rest of tools/ (the engine, the
    phase, the evaluators, checkpoints, mining, labelling)."""
    found = {}
    for path in _library_modules():
        if path in {os.path.join("tools", f"{m}.py") for m in ENTRY_LAYER}:
            continue
        tree = ast.parse(_source(path))
        uses = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "args"]
        uses += [n.lineno for n in ast.walk(tree) if isinstance(n, ast.arg) and n.arg == "args"]
        if uses:
            found[path] = sorted(set(uses))
    assert not found, f"options read below the scripts: {found}"


def test_the_checkpoint_format_has_one_home():
    """Only tools/checkpoint.py spells the file names and the keys of a run's checkpoint."""
    # the file names and the keys no other record of ours uses ("model", "config", "rng" are common words)
    keys = {"last.pth", "best.pth", "awaiting", "held_out", "last_outcomes", "log_lines", "epochs_done"}
    keys |= {"lr_scheduler", "early_stop", "round_stop", "train_records", "best_ap"}
    found = {}
    for path in [*_library_modules(), *(f"{s}.py" for s in SCRIPTS)]:
        if path == os.path.join("tools", "checkpoint.py"):
            continue
        tree = ast.parse(_source(path))
        docs = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
        }
        strings = [
            (n.lineno, n.value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
        ]
        bad = [(line, v) for line, v in strings if v in keys]
        if bad:
            found[path] = bad
    assert not found, f"checkpoint names spelt outside tools/checkpoint.py: {found}"


def test_the_entry_layer_sits_above_the_rest_of_tools():
    """The engine, the phase, evaluation, checkpoints and mining never import the modules the entry
    is made of (setup, resume, the run's state, a round): those build on them, never the reverse."""
    above = {f"tools.{m}" for m in ("setup", "resume", "run", "rounds")}
    found = {}
    for name in sorted(os.listdir(os.path.join(ROOT, "tools"))):
        if not name.endswith(".py") or name[:-3] in ENTRY_LAYER:
            continue
        tree = ast.parse(_source(os.path.join("tools", name)))
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        if modules & above:
            found[name] = sorted(modules & above)
    assert not found, f"tools/ modules below the entry import its layer: {found}"


ARGPARSE_BUILDERS = {"add_train_args", "add_asm_args", "add_data_args", "get_args_parser"}
LIBRARY_DIRS = ("tools", "asm", "datasets", "net")


def _python_files():
    yield from (f"{s}.py" for s in ("train_asm_one", "al_curve", "infer", "visualize"))
    for folder in LIBRARY_DIRS:
        yield from sorted(
            os.path.join(folder, n) for n in os.listdir(os.path.join(ROOT, folder)) if n.endswith(".py")
        )


def test_no_function_is_over_sixty_lines_outside_the_argparse_builders():
    long = []
    for path in _python_files():
        for node in ast.walk(ast.parse(_source(path))):
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.name not in ARGPARSE_BUILDERS
            ):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_the_entry_reads_in_one_sitting_and_the_optimizer_is_made_in_one_place():
    assert len(_source("train_asm_one.py").splitlines()) <= 400
    calls = []
    for path in _python_files():
        for node in ast.walk(ast.parse(_source(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == (
                "make_optimizer"
            ):
                calls.append(path)
    assert calls == [os.path.join("tools", "fit.py")], calls
