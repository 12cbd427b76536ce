"""The house rules of the layout: command lines at the root, tools/ a library, the merge plain rules."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("train_asm_one", "al_curve", "infer", "visualize", "import_labels", "labelstudio_round")


def _source(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def _py_files(folder):
    """Every Python file under ``folder`` (relative to the root), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        found += [os.path.relpath(os.path.join(dirpath, f), ROOT) for f in filenames if f.endswith(".py")]
    return sorted(found)


@pytest.mark.parametrize("path", _py_files("tools"))
def test_tools_is_a_library(path):
    tree = ast.parse(_source(path))
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
    assert (
        len(source.splitlines()) <= 250
    )  # as ruff format writes it (the rules and the errors of certain boxes)
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
    for path in _py_files(package):
        bad = {m for m in _imports(path) if m.split(".")[0] in NEVER[package]}
        if bad:
            found[path] = sorted(bad)
    assert not found, f"{package}/ imports what it never may: {found}"


def _imports(path):
    """The absolute modules a file imports (``from tools.runtime import dist``: ``tools.runtime.dist``)."""
    tree = ast.parse(_source(path))
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module and not n.level:
            modules |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return modules


# tools/ in three rooms: the run loop reads the options and the Run; the engine takes plain values; the
# runtime helpers know neither. Each may import only the rooms below it.
ROOMS = {"runtime": set(), "engine": {"runtime"}, "loop": {"runtime", "engine"}}


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_each_room_of_tools_imports_only_the_rooms_below_it(room):
    found = {}
    for path in _py_files(os.path.join("tools", room)):
        used = {m.split(".")[1] for m in _imports(path) if m.startswith("tools.") and len(m.split(".")) > 2}
        bad = used - ROOMS[room] - {room}
        if bad:
            found[path] = sorted(bad)
    assert not found, f"tools/{room}/ imports rooms above it: {found}"


def test_tools_keeps_at_most_two_modules_flat():
    flat = [n for n in os.listdir(os.path.join(ROOT, "tools")) if n.endswith(".py") and n != "__init__.py"]
    assert len(flat) <= 2, flat
    assert set(ROOMS) <= set(os.listdir(os.path.join(ROOT, "tools")))


LIBRARY = ("asm", "datasets", "net", "tools")


def _library_modules():
    for package in LIBRARY:
        yield from _py_files(package)


def test_options_stay_in_the_scripts_and_the_run_loop():
    """Below tools/loop/, functions take plain values or frozen configs: no ``args.x`` (nor a
    parameter named ``args``) in asm/, datasets/, net/, tools/engine/ or tools/runtime/."""
    found = {}
    for path in _library_modules():
        if path.startswith(os.path.join("tools", "loop") + os.sep):
            continue
        tree = ast.parse(_source(path))
        uses = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "args"]
        uses += [n.lineno for n in ast.walk(tree) if isinstance(n, ast.arg) and n.arg == "args"]
        if uses:
            found[path] = sorted(set(uses))
    assert not found, f"options read below the scripts: {found}"


def test_the_checkpoint_format_has_one_home():
    """Only tools/engine/checkpoint.py spells the file names and the keys of a run's checkpoint."""
    # the file names and the keys no other record of ours uses ("model", "config", "rng" are common words)
    keys = {"last.pth", "best.pth", "awaiting", "held_out", "last_outcomes", "log_lines", "epochs_done"}
    keys |= {"lr_scheduler", "early_stop", "round_stop", "train_records", "best_ap"}
    found = {}
    for path in [*_library_modules(), *(f"{s}.py" for s in SCRIPTS)]:
        if path == os.path.join("tools", "engine", "checkpoint.py"):
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
    assert not found, f"checkpoint names spelt outside tools/engine/checkpoint.py: {found}"


ARGPARSE_BUILDERS = {"add_train_args", "add_asm_args", "add_data_args", "get_args_parser"}
LIBRARY_DIRS = ("tools", "asm", "datasets", "net")


def _python_files():
    yield from (f"{s}.py" for s in SCRIPTS)
    for folder in (*LIBRARY_DIRS, "bench"):
        yield from _py_files(folder)


def test_no_benchmark_file_is_over_five_hundred_lines():
    long = {p: n for p in _py_files("bench") if (n := len(_source(p).splitlines())) > 500}
    assert not long, long


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
    for path in (p for p in _python_files() if not p.startswith("bench")):  # benches time it
        for node in ast.walk(ast.parse(_source(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == (
                "make_optimizer"
            ):
                calls.append(path)
    assert calls == [os.path.join("tools", "engine", "fit.py")], calls
