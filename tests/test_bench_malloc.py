"""bench/bench_malloc.py: its processes of both allocator settings run, apply the setting and sum the
same losses (the timing is its own business: never asserted here)."""

import importlib.util
import json
import os
import platform

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("bench_malloc", os.path.join(ROOT, "bench", "bench_malloc.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting exists on glibc only")
def test_the_bench_runs_both_settings_on_the_same_numbers_and_prints_its_figures(capsys, tmp_path):
    out = str(tmp_path / "figures.json")
    argv = ["--data", "demo", "--min-size", "64", "--steps", "2", "--batch-size", "1", "--eval-images", "1"]
    assert bench.main([*argv, "--repeat", "1", "--json-out", out]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with open(out) as f:
        assert json.load(f) == figures
    assert figures["same_losses"] is True  # one thread each, the same machine: only the allocator differs
    assert set(figures["peak_mb"]) == set(figures["train_s_per_image"]) == {"default", "kept"}
    assert figures["train_speedup"] > 0 and figures["rss_ratio"] > 0
