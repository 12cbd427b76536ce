"""bench/bench_frozen_bn.py: its comparison runs and finds the two layers equal (the timing is its
own business: never asserted here)."""

import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "bench_frozen_bn", os.path.join(ROOT, "bench", "bench_frozen_bn.py")
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_the_bench_compares_equal_layers_and_prints_its_figures(capsys, tmp_path):
    out = str(tmp_path / "figures.json")
    argv = ["--steps", "1", "--pairs", "1", "--min-size", "64", "--batch-size", "1", "--json-out", out]
    assert bench.main(argv) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with open(out) as f:
        assert json.load(f) == figures
    assert figures["bit_identical"] is True  # two processes, one SGD step each: the same weights
    assert figures["gradients_identical"] is True
    assert figures["frozen_layers"] == 52  # MobileNetV2's features: every BatchNorm
    assert figures["step_time_ratio"] > 0 and figures["eval_time_ratio_in_process"] > 0
    assert set(figures["step_s"]) == set(figures["minflt"]) == {"ours", "torchvision"}
