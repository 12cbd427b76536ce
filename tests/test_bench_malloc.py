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
def test_the_bench_runs_both_settings_on_the_same_numbers_and_prints_its_figures(
    capsys, tmp_path, monkeypatch
):
    seen = []
    real = bench.figures
    monkeypatch.setattr(bench, "figures", lambda runs: seen.append(runs) or real(runs))
    out = str(tmp_path / "figures.json")
    argv = ["--data", "demo", "--min-size", "64", "--steps", "2", "--batch-size", "1", "--eval-images", "1"]
    assert bench.main([*argv, "--repeat", "1", "--json-out", out]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with open(out) as f:
        assert json.load(f) == figures
    assert figures["same_losses"] is True  # one thread each, the same machine: only the allocator differs
    assert set(figures["peak_mb"]) == set(figures["train_s_per_image"]) == {"default", "kept"}
    (runs,) = seen  # each setting's child ran with its own allocator setting, as the child saw it
    assert [c["kept"] for c in runs["default"]] == [False] and [c["kept"] for c in runs["kept"]] == [True]
    assert all(c["train_s"] > 0 and c["peak_mb"] > 0 for s in runs for c in runs[s])


def test_the_figures_are_the_best_times_and_largest_peaks_of_each_setting():
    def child(train_s, eval_s, peak_mb, loss_sum=1.5):
        return {"kept": True, "train_s": train_s, "eval_s": eval_s, "peak_mb": peak_mb, "loss_sum": loss_sum}

    runs = {
        "default": [child(0.6, 0.30, 1000), child(0.5, 0.40, 1100)],
        "kept": [child(0.4, 0.25, 1120), child(0.45, 0.20, 1050)],
    }
    figures = bench.figures(runs)
    assert figures["train_speedup"] == 1.25  # 0.5 / 0.4
    assert figures["eval_speedup"] == 1.5  # 0.30 / 0.20
    assert figures["rss_ratio"] == round(1120 / 1100, 3)
    assert figures["same_losses"] is True
    runs["kept"][1]["loss_sum"] = 1.5000000000000002  # one bit off
    assert bench.figures(runs)["same_losses"] is False


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--steps", "0"], {}, "--steps must be at least 1, not 0"),
        (["--jobs", "-1"], {}, "--jobs must be at least 1, not -1"),
        (["--repeat", "0"], {}, "--repeat must be at least 1, not 0"),
        (["--bccd-root", "{tmp}/missing"], {}, "not a VOC folder"),
        (["--data", "demo", "--steps", "100000"], {}, "needs 200000 images; the data has"),
        ([], {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}, "GLIBC_TUNABLES sets glibc's malloc"),
        ([], {"MALLOC_MMAP_THRESHOLD_": "131072"}, "MALLOC_MMAP_THRESHOLD_ is set"),
    ],
)
def test_bad_input_is_one_line_before_any_child_starts(argv, env, message, tmp_path, monkeypatch, capsys):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(bench, "side_by_side", lambda *a, **k: pytest.fail("a child started"))
    with pytest.raises(SystemExit) as e:
        bench.main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert e.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: " in error and message in error
