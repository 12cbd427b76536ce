"""bench/asm_efficiency.py: the analysis on hand-made curves, and a --quick run on a BCCD slice."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("asm_efficiency", os.path.join(ROOT, "bench", "asm_efficiency.py"))
eff = importlib.util.module_from_spec(spec)
spec.loader.exec_module(eff)


def _curve(method, seed, points):
    return {"method": method, "seed": seed,
            "points": [{"images": 10 * (k + 1), "human_drawn_boxes": b, "AP50": ap, "AP75": 0.0, "AP": ap / 2}
                       for k, (b, ap) in enumerate(points)]}  # fmt: skip


def test_box_fractions_and_comparison_with_random():
    curves = [
        _curve("supervised", 0, [(1000, 0.80)]),
        _curve("random", 0, [(100, 0.50), (300, 0.70), (600, 0.76), (1000, 0.80)]),
        _curve("v1+", 0, [(100, 0.50), (150, 0.73), (250, 0.80)]),
        _curve("entropy", 0, [(100, 0.50), (300, 0.60)]),
    ]
    summary = eff.analyse(curves, 1000, ["random", "entropy", "v1+"])
    assert summary["supervised_ap50"] == {"mean": 0.8, "std": 0.0}
    assert summary["box_fraction"]["random"] == {"90pct": 0.6, "95pct": 0.6, "100pct": 1.0}  # 0.70 < 0.72 at 300
    assert summary["box_fraction"]["v1+"] == {"90pct": 0.15, "95pct": 0.25, "100pct": 0.25}
    assert summary["box_fraction"]["entropy"]["90pct"] is None  # never reached
    # random at 150 boxes: 0.55 (linear between its points); at 250: 0.65; the initial pool is left out
    vs = summary["vs_random"]["v1+"]
    assert vs["at_or_above_everywhere"] and vs["min_margin_ap50"] == pytest.approx(0.15)
    below = eff.analyse(curves + [_curve("topk_v2", 0, [(100, 0.40), (400, 0.70)])], 1000, ["random", "topk_v2"])
    assert below["vs_random"]["topk_v2"] == {"min_margin_ap50": -0.02, "at_or_above_everywhere": False}
    table = eff.tables(curves, summary, ["random", "entropy", "v1+"])
    assert "| v1+ | 15.0% | 25.0% | 25.0% |" in table and "| entropy | never | never | never |" in table


def test_a_level_counts_only_when_every_seed_reaches_it():
    curves = [_curve("supervised", s, [(1000, 0.8)]) for s in (0, 1)]
    curves += [_curve("random", 0, [(200, 0.8)]), _curve("random", 1, [(200, 0.5), (400, 0.7)])]
    summary = eff.analyse(curves, 1000, ["random"])
    assert summary["box_fraction"]["random"]["100pct"] is None
    assert summary["box_fraction"]["random"]["90pct"] is None


def test_quick_run_on_a_bccd_slice_and_its_resume(bccd_root, tmp_path, capsys):
    out = str(tmp_path / "eff")
    argv = ["--quick", "--bccd-root", bccd_root, "--output-dir", out]
    assert eff.main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(first["box_fraction_to_100pct"]) == {"random", "entropy", "v1+", "topk_v2"}
    assert first["supervised_ap50"] is not None and "v1+" in first["asm_vs_random"]
    with open(os.path.join(out, "curves.json")) as f:
        data = json.load(f)
    methods = {c["method"] for c in data["curves"]}
    assert methods == {"supervised", "random", "entropy", "v1+", "topk_v2"}
    starts = {c["method"]: c["points"][0]["human_drawn_boxes"] for c in data["curves"] if c["method"] != "supervised"}
    assert len(set(starts.values())) == 1  # one shared initial pool
    assert all(len(c["points"]) == 2 for c in data["curves"] if c["method"] != "supervised")
    assert os.path.getsize(os.path.join(out, "efficiency.png")) > 1000
    # running the same command again reuses every finished method
    assert eff.main(argv) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: v for k, v in again.items() if k != "wall_s"} == {k: v for k, v in first.items() if k != "wall_s"}
    assert again["wall_s"] < first["wall_s"]


def test_missing_data_root_is_a_clear_error(tmp_path, capsys):
    assert eff.main(["--quick", "--bccd-root", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "is not a VOC root" in capsys.readouterr().err


@pytest.mark.parametrize("value, n, expected", [(0.1, 205, 20), (4, 16, 4), (0.001, 10, 1)])
def test_counts(value, n, expected):
    from asm.pools import image_count

    assert image_count(value, n) == expected
