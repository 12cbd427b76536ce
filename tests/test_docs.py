"""The documents: a short README, results rendered from the JSON, a CLI reference that cannot drift,
and no development talk."""

import glob
import importlib
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs", "_hooks"))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import cli_reference  # noqa: E402
import render_results  # noqa: E402


def _read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def test_the_readme_is_short_and_shows_both_commands():
    text = _read("README.md")
    assert len(text.splitlines()) <= 250
    assert "python -m pip install -e . && python train_asm_one.py --K 100" in text
    test_command = 'python -m pip install -e ".[dev,docs,labelstudio-server]" && python -m pytest -q'
    assert test_command in text
    ci = _read(os.path.join(".ci", "run"))
    assert '-e ".[dev,docs,labelstudio-server]"' in ci and "python -m pytest -q" in ci
    assert "mkdocs build --strict" in ci


def test_no_document_speaks_of_development_sessions():
    paths = [
        "README.md",
        "BENCHMARKS.md",
        "CHANGELOG.md",
        *glob.glob("docs/**/*.md", root_dir=ROOT, recursive=True),
    ]
    found = {
        p: i
        for p in paths
        for i, line in enumerate(_read(p).splitlines(), 1)
        if any(w.strip(".,;:()*'`\"").lower() in ("session", "sessions") for w in line.split())
    }
    assert not found, found


def test_the_rendered_results_match_the_json():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "render_results.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["changed"] == []


def test_a_figure_changed_in_its_json_is_caught(tmp_path, monkeypatch, capsys):
    docs = tmp_path / "docs"
    shutil.copytree(os.path.join(ROOT, "docs"), docs, ignore=shutil.ignore_patterns("_hooks"))
    shutil.copy(os.path.join(ROOT, "BENCHMARKS.md"), tmp_path / "BENCHMARKS.md")
    monkeypatch.setattr(render_results, "ROOT", str(tmp_path))
    monkeypatch.setattr(render_results, "DOCS", str(docs))
    assert render_results.main(["--check"]) == 0
    data = json.loads((docs / "bench_demo_cpu.json").read_text())
    data["ap50"] = 0.5
    (docs / "bench_demo_cpu.json").write_text(json.dumps(data))
    assert render_results.main(["--check"]) == 1
    assert "out of date: BENCHMARKS.md, docs/results.md" in capsys.readouterr().err
    assert render_results.main([]) == 0  # written again
    assert "AP50 0.500" in (tmp_path / "BENCHMARKS.md").read_text()
    assert render_results.main(["--check"]) == 0


def test_a_missing_json_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(render_results, "ROOT", str(tmp_path))
    monkeypatch.setattr(render_results, "DOCS", str(tmp_path))
    assert render_results.main(["--check"]) == 1


@pytest.mark.parametrize("script", cli_reference.SCRIPTS)
def test_the_cli_reference_holds_every_option_of_every_script(script):
    text = cli_reference.script_reference(script)
    parser = importlib.import_module(script).get_args_parser()
    for action in parser._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert f"`{option}`" in text, option
    assert "<!-- cli-reference -->" in _read(os.path.join("docs", "cli.md"))


def test_the_mutation_row_says_the_share_killed_the_time_and_the_survivors_not_examined():
    row = render_results._mutation(
        {
            "killed": 850,
            "mutants": 1000,
            "killed_fraction": 0.85,
            "wall_s": 899.6,
            "reasons": {"not examined": 50},
        }
    )
    assert row == "850 of 1000 mutants killed (0.850), 900 s; 50 survivors not examined (5.0%)"
    timed = {"killed": 1, "mutants": 2, "killed_fraction": 0.5, "wall_s": 700.2, "setup_s": 210.4}
    assert render_results._mutation(timed).startswith(
        "1 of 2 mutants killed (0.500), 700 s (210 s of it before the first mutant); 0 survivors"
    )
    assert "wall time not recorded" in render_results._mutation(
        {"killed": 1, "mutants": 2, "killed_fraction": 0.5, "wall_s": None}
    )
