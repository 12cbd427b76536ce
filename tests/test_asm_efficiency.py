"""bench/asm_efficiency.py: the analysis on hand-made curves, failures, and a --quick run on a BCCD slice."""

import importlib.util
import json
import os
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location(
    "asm_efficiency", os.path.join(ROOT, "bench", "asm_efficiency.py")
)
eff = importlib.util.module_from_spec(spec)
spec.loader.exec_module(eff)
from bench import efficiency_analysis as ana  # noqa: E402
from bench import study_runs as runs  # noqa: E402


def _curve(method, seed, points, reviewed=0, moved=0):
    curve = {
        "method": method,
        "seed": seed,
        "points": [
            {
                "images": 10 * (k + 1),
                "human_drawn_boxes": b,
                "AP50": ap,
                "AP50/a": ap / 2,
                "AP75": 0.0,
                "AP": ap / 2,
                "reviewed": reviewed * k,
                "moved": moved * k,
            }
            for k, (b, ap) in enumerate(points)
        ],
    }
    eff.with_cost([curve], review_cost=0.2, move_cost=0.5)
    return curve


def test_box_and_cost_fractions_auc_and_comparison_with_random():
    curves = [
        _curve("supervised", 0, [(1000, 0.80)]),
        _curve("random", 0, [(100, 0.50), (300, 0.70), (600, 0.76), (1000, 0.80)]),
        _curve("v1+", 0, [(100, 0.50), (150, 0.73), (250, 0.80), (1000, 0.82)], reviewed=100, moved=10),
        _curve("entropy", 0, [(100, 0.50), (300, 0.60)]),
    ]
    summary = eff.analyse(curves, 1000, ["random", "entropy", "v1+"])
    assert summary["supervised"] == {"mean": 0.8, "std": 0.0}
    assert summary["box_fraction"]["random"] == {
        "90pct": 0.6,
        "95pct": 0.6,
        "100pct": 1.0,
    }  # 0.70 < 0.72 at 300
    assert summary["box_fraction"]["v1+"] == {"90pct": 0.15, "95pct": 0.25, "100pct": 0.25}
    # cost at the 100% point: 250 drawn + 0.2 x 200 reviewed + 0.5 x 20 moved = 300
    assert (
        summary["cost_fraction"]["v1+"]["100pct"] == 0.3
        and summary["cost_fraction"]["random"]["100pct"] == 1.0
    )
    assert summary["box_fraction"]["entropy"]["90pct"] is None  # never reached
    assert summary["auc"]["v1+"] > summary["auc"]["random"] > summary["auc"]["entropy"]
    # step interpolation at random's points: at 300 boxes v1+ had measured 0.80 (its point at 250),
    # at 600 too, at 1000 0.82; round 1 (300) is left out of the minimum, like the shared initial pool
    vs = summary["vs_random"]["v1+"]
    assert vs["at_or_above_after_round1"] and vs["min_margin_ap50"] == pytest.approx(0.02)
    assert vs["mean_margin_per_round"] == {
        1: pytest.approx(0.1),
        2: pytest.approx(0.04),
        3: pytest.approx(0.02),
    }
    # at equal images: 0.73 - 0.70 in round 1, 0.80 - 0.76 in round 2, 0.82 - 0.80 in round 3; no
    # reseeded random: no noise floor
    assert vs["margin_at_equal_images"] == pytest.approx(0.02)
    assert vs["round1_gap_ap50"] == pytest.approx(0.03) and vs["noise_floor_ap50"] is None
    below = eff.analyse(
        curves + [_curve("topk_v2", 0, [(100, 0.40), (200, 0.1), (400, 0.70), (1000, 0.70)])],
        1000,
        ["random", "topk_v2"],
    )
    assert below["vs_random"]["topk_v2"]["min_margin_ap50"] == pytest.approx(-0.1)  # 0.70 at 1000 vs 0.80
    assert not below["vs_random"]["topk_v2"]["at_or_above_after_round1"]
    per_class = {"a": eff.analyse(curves, 1000, ["random", "entropy", "v1+"], "AP50/a")}
    assert (
        per_class["a"]["supervised"]["mean"] == 0.4
        and per_class["a"]["box_fraction"]["v1+"]["100pct"] == 0.25
    )
    table = eff.tables(curves, summary, per_class, ["random", "entropy", "v1+"], 1000)
    assert (
        "| v1+ | 15.0% | 25.0% | 25.0% | 30.0% |" in table
        and "| entropy | never | never | never | never |" in table
    )


def test_a_level_counts_only_when_every_seed_reaches_it():
    curves = [_curve("supervised", s, [(1000, 0.8)]) for s in (0, 1)]
    curves += [_curve("random", 0, [(200, 0.8)]), _curve("random", 1, [(200, 0.5), (400, 0.7)])]
    summary = eff.analyse(curves, 1000, ["random"])
    assert summary["box_fraction"]["random"]["100pct"] is None
    assert summary["box_fraction"]["random"]["90pct"] is None


def test_a_method_that_dies_is_reported_and_the_others_go_on(monkeypatch):
    def fine(args, root, seed, method, n_train, threads):
        return _curve(method, seed, [(100, 0.5)])

    def dies(args, root, seed, method, n_train, threads):
        if method == "topk_v2":
            raise RuntimeError("exit code 1: FloatingPointError: non-finite loss")
        return fine(args, root, seed, method, n_train, threads)

    monkeypatch.setattr(runs, "sampler_curve", fine)
    monkeypatch.setattr(runs, "asm_curve", dies)
    args = eff.get_args_parser().parse_args(
        ["--seeds", "1", "2", "--methods", "random", "v1+", "topk_v2", "--jobs", "3", "--no-share-round0"]
    )
    curves, failed = runs.run_all(args, "root", 100)
    assert sorted((c["method"], c["seed"]) for c in curves) == sorted(
        (m, s) for s in (1, 2) for m in ("supervised", "random", "v1+")
    )
    assert [(f["method"], f["seed"]) for f in failed] == [("topk_v2", 1), ("topk_v2", 2)]
    assert "non-finite" in failed[0]["error"]


def test_quick_run_on_a_bccd_slice_and_its_resume(bccd_root, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "eff")
    argv = [
        "--quick",
        "--bccd-root",
        bccd_root,
        "--output-dir",
        out,
        "--methods",
        "random",
        "v1+",
        "--seeds",
        "1",
        "--jobs",
        "2",
        "--json-out",
        str(tmp_path / "docs" / "eff.json"),
        "--quick-images",
        "6",
        "3",
    ]
    assert eff.main(argv) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["default_method"] == "v1+" and first["seeds"] == [1] and first["failed"] == []
    assert set(first["box_fraction_to_100pct"]) == set(first["box_fraction_to_95pct"]) == {"random", "v1+"}
    # the same trainer for every method: round 0 is one model (deterministic), the baseline draws every box
    assert first["round0_identical"] is True and first["baseline"] == "random"
    assert set(first["vs_random"]) == {"v1+"} and first["protocol"] == "v3"
    with open(tmp_path / "docs" / "eff.json") as f:
        data = json.load(f)
    assert {c["method"] for c in data["curves"]} == {"supervised", "random", "v1+"}
    assert set(data["per_class"]) == {"RBC", "WBC", "Platelets"}
    starts = {c["method"]: c["points"][0] for c in data["curves"] if c["method"] != "supervised"}
    assert len({p["human_drawn_boxes"] for p in starts.values()}) == 1  # one shared initial pool
    assert len({p["AP50"] for p in starts.values()}) == 1  # and one initial model
    random_run = next(c for c in data["curves"] if c["method"] == "random")
    assert random_run["points"][-1]["reviewed"] == 0 and random_run["points"][-1]["moved"] == 0
    sup = next(c for c in data["curves"] if c["method"] == "supervised")
    assert sup["points"][-1]["human_drawn_boxes"] == data["settings"]["total_boxes"]
    assert all(
        len(c["points"]) == 2 and "cost" in c["points"][1]
        for c in data["curves"]
        if c["method"] != "supervised"
    )
    assert os.path.getsize(os.path.join(out, "efficiency.png")) > 1000
    assert all(c["run_s"] > 0 for c in data["curves"])  # each run's process time
    assert set(first["reused_rounds"]) == {"random", "v1+"} and first["reused_rounds"]["random"] == 0
    # the runs share one cache (--round-cache): every round trained is stored there, once
    trained = sum(len(c["points"]) - 1 for c in data["curves"] if c["method"] != "supervised")
    assert len(os.listdir(os.path.join(out, "round_cache"))) == trained - first["reused_rounds"]["v1+"]
    # evaluation on val + test: the slice's first 3 images of each
    with open(os.path.join(out, "bccd_root", "ImageSets", "Main", "eval.txt")) as f:
        assert len(f.read().split()) == 6
    # running the same command again reuses every finished method: no training process starts
    monkeypatch.setattr(runs, "run_tool", lambda *a: pytest.fail(f"reran {a[0]}"))
    assert eff.main(argv) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: v for k, v in again.items() if k != "wall_s"} == {
        k: v for k, v in first.items() if k != "wall_s"
    }


def test_missing_data_root_is_a_clear_error(tmp_path, capsys):
    assert (
        eff.main(["--quick", "--bccd-root", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")]) == 2
    )
    assert "is not a VOC root" in capsys.readouterr().err


@pytest.mark.parametrize("value, n, expected", [(0.1, 205, 20), (4, 16, 4), (0.001, 10, 1)])
def test_counts(value, n, expected):
    from asm.pools import image_count

    assert image_count(value, n) == expected


def test_round0_identical_compares_every_same_trainer_method_of_a_seed():
    curves = [
        _curve("random", 1, [(100, 0.5), (200, 0.6)]),
        _curve("v1+", 1, [(100, 0.5), (150, 0.7)]),
        _curve("random", 2, [(90, 0.4)]),
        _curve("v1+", 2, [(90, 0.4 + 1e-4)]),
        _curve("al_curve/random", 1, [(100, 0.1)]),
    ]  # another trainer: not compared
    assert eff.round0_identical(curves) == {1: True, 2: False}


def test_quick_study_on_a_flat_voc_folder_that_is_not_bccd(tmp_path, capsys):
    """A user's own labelled set: the data options go to every run, the classes come from the data."""
    from datasets.synthetic import demo_root

    demo = demo_root(0, 16, 4, str(tmp_path / "cache"))
    flat = tmp_path / "my_voc"
    flat.mkdir()
    os.symlink(os.path.join(demo, "VOC", "JPEGImages"), flat / "images")
    os.symlink(os.path.join(demo, "VOC", "Annotations"), flat / "annotations")
    out = str(tmp_path / "eff")
    argv = [
        "--quick",
        "--seeds",
        "3",
        "--jobs",
        "2",
        "--output-dir",
        out,
        "--dataset",
        "voc",
        "--voc-roots",
        str(flat),
        "--discover-classes",
        "--val-fraction",
        "0.25",
    ]
    assert eff.main(argv) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["failed"] == [] and last["round0_identical"] is True and "v1+" in last["vs_random"]
    with open(os.path.join(out, "efficiency.json")) as f:
        data = json.load(f)
    assert data["settings"]["train_images"] == 15 and "--discover-classes" in data["settings"]["data_flags"]
    assert set(data["per_class"]) == set(data["settings"]["classes"]) and "RBC" not in data["per_class"]


def test_unknown_options_are_refused(tmp_path):
    with pytest.raises(SystemExit) as e:
        eff.main(["--quick", "--output-dir", str(tmp_path), "--voc-rootz", "x"])
    assert e.value.code == 2


def test_a_failed_run_says_why_from_its_log_lines(tmp_path):
    """The entry logs to stdout: a run that stops with exit 5 (diverged) must say so, not '?'."""
    script = (
        "import sys; print('12:00:00 INFO train_asm_one: pretrain epoch 5'); "
        "print('12:00:01 ERROR train_asm_one: pretrain: training diverged 4 times (loss spike)'); "
        "print('12:00:02 INFO tools: closing'); sys.exit(5)"
    )
    log = str(tmp_path / "bench.log")
    with pytest.raises(
        RuntimeError, match=r"exit code 5: .*ERROR train_asm_one: pretrain: training diverged"
    ):
        runs.run_tool([sys.executable, "-c", script], log, None)
    assert "pretrain epoch 5" in open(log).read()  # the log keeps the run's lines


def test_step_interpolation_credits_neither_side_with_a_value_it_did_not_measure():
    """Random is concave: (100, 0.10), (200, 0.50), (300, 0.55), (400, 0.60); ASM: (150, 0.40),
    (250, 0.52), (330, 0.58). A straight line through random reads 0.30 at 150 boxes (ASM +0.10); a
    step through random reads 0.10 there (ASM +0.30). Both credit ASM with random's not-yet-measured
    gain. At random's own points, ASM's last measurement on no more boxes: 0.40 at 200 (-0.10) and
    0.52 at 300 (-0.03). At 400 ASM's curve had ended (330): neither side measured that budget's ASM,
    so it is not compared (reading 0.58 there would credit random with 70 boxes ASM never had)."""
    random = _curve("random", 1, [(100, 0.10), (200, 0.50), (300, 0.55), (400, 0.60)])
    asm = _curve("v1+", 1, [(100, 0.10), (150, 0.40), (250, 0.52), (330, 0.58)])
    vs = ana.versus_random([asm], {1: random["points"]})
    assert vs["mean_margin_per_round"] == {1: pytest.approx(-0.10), 2: pytest.approx(-0.03)}
    assert vs["min_margin_ap50"] == pytest.approx(-0.03) and not vs["at_or_above_after_round1"]
    assert vs["margin_at_equal_images"] == pytest.approx(-0.03)  # 0.52 - 0.55; then 0.58 - 0.60
    same = ana.versus_random([_curve("v1+", 1, [(100, 0.1), (200, 0.5), (300, 0.55)])], {1: random["points"]})
    assert same["min_margin_ap50"] == 0.0 and same["at_or_above_after_round1"]  # equal curves: no margin
    assert vs["above_below_equal"] == [0, 1, 0] and same["above_below_equal"] == [0, 0, 1]
    assert same["round1_gap_ap50"] == 0.0 and same["noise_floor_ap50"] is None  # no noise runs given
    assert ana.step_index(random["points"], "human_drawn_boxes", 99) is None
    assert ana.step_index(asm["points"], "human_drawn_boxes", 331) is None  # past its last point
    assert vs["margins_by_lead"] == {0: {"n": 1, "min": -0.03, "above_below_equal": [0, 1, 0]}}


def test_margins_are_split_by_how_many_rounds_asm_is_ahead():
    """Random (100, 0.1), (200, 0.3), (300, 0.5), (400, 0.6); ASM saves boxes: (100, 0.1), (150, 0.3),
    (190, 0.45), (280, 0.58), (410, 0.7). At random's 300 boxes ASM had measured its round 3 (280):
    a round ahead, +0.08. At 400 its last point on no more boxes is still round 3, random's round
    too: lead 0, -0.02 (the same round, so for v1+ the same images)."""
    random = _curve("random", 1, list(zip([100, 200, 300, 400], [0.1, 0.3, 0.5, 0.6])))
    asm = _curve("v1+", 1, list(zip([100, 150, 190, 280, 410], [0.1, 0.3, 0.45, 0.58, 0.7])))
    vs = ana.versus_random([asm], {1: random["points"]})
    assert vs["margins_by_lead"] == {
        0: {"n": 1, "min": -0.02, "above_below_equal": [0, 1, 0]},
        1: {"n": 1, "min": 0.08, "above_below_equal": [1, 0, 0]},
    }
    assert vs["above_below_equal"] == [1, 1, 0] and vs["min_margin_ap50"] == pytest.approx(-0.02)


def test_a_finished_run_is_reused_only_with_the_flags_it_was_made_with(tmp_path, monkeypatch):
    calls = []

    def fake_tool(cmd, log_path, threads):
        calls.append(cmd)
        with open(os.path.join(os.path.dirname(log_path), "log.jsonl"), "w") as f:
            f.write(json.dumps({"type": "round", "round": 0, "AP50": 0.5}) + "\n")
        return '{"ap50": 0.5}\n'

    monkeypatch.setattr(runs, "run_tool", fake_tool)
    out = str(tmp_path / "run")
    weights = tmp_path / "shared" / "w.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"")
    flags = ["--seed", "1", "--lr", "0.01", "--deterministic", "--weights-backbone", str(weights)]
    assert runs.run_flags(flags, out, None)[0]["AP50"] == 0.5 and len(calls) == 1
    assert runs.run_flags(list(flags), out, None) and len(calls) == 1  # the same flags: reused
    by_another_route = str(tmp_path / "run" / ".." / "shared" / "w.pth")  # a clone reached another way
    assert runs.run_flags([*flags[:-1], by_another_route], out, None) and len(calls) == 1
    with pytest.raises(RuntimeError, match=r"other flags \(--lr 0.01 -> 0.005\): remove the folder"):
        runs.run_flags([*flags[:3], "0.005", *flags[4:]], out, None)
    with pytest.raises(RuntimeError, match=r"--certain-precision \(absent\) -> 0.9"):
        runs.run_flags([*flags, "--certain-precision", "0.9"], out, None)
    assert len(calls) == 1  # nothing ran under the wrong name
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "last.pth").write_bytes(b"")
    with pytest.raises(RuntimeError, match="flags were not recorded"):
        runs.run_flags(flags, str(legacy), None)


def test_a_started_copy_records_where_it_started_and_keeps_its_own_files(tmp_path, monkeypatch):
    """--share-round0: a method's folder starts as a copy of the seed's initial phase, and is reused
    only for the same start."""
    calls = []

    def fake_tool(cmd, log_path, threads):
        calls.append(cmd)
        return '{"ap50": 0.5}\n'

    monkeypatch.setattr(runs, "run_tool", fake_tool)
    start = tmp_path / "round0"
    start.mkdir()
    for name, text in (("last.pth", "model"), ("log.jsonl", '{"type": "round", "round": 0}\n')):
        (start / name).write_text(text)
    for name in runs.COPIED_NOT:
        (start / name).write_text("the initial phase's own")
    out = str(tmp_path / "random")
    flags = ["--seed", "1", "--strategy", "random"]
    assert runs.run_flags(flags, out, None, str(start)) == [{"type": "round", "round": 0}]
    assert (tmp_path / "random" / "last.pth").read_text() == "model"
    assert not (tmp_path / "random" / "bench.log").exists()  # run_tool (faked here) writes its own
    assert (tmp_path / "random" / "summary.json").read_text() == '{"ap50": 0.5}'  # this run's
    with open(tmp_path / "random" / runs.FLAGS_FILE) as f:
        assert json.load(f) == [*flags, "--bench-start-from", str(start)]
    assert runs.run_flags(flags, out, None, str(start)) and len(calls) == 1  # the same start: reused
    with pytest.raises(RuntimeError, match=r"--bench-start-from .*round0 -> \(absent\)"):
        runs.run_flags(flags, out, None)


def test_each_seeds_initial_phase_is_trained_once_and_every_method_starts_from_it(monkeypatch):
    """Round 0 jobs first; the methods of a seed continue its folder; the bound trains alone."""
    started, running, overlaps = [], set(), []

    def fake_entry(args, data_flags, seed, out, extra, threads, start_from=None):
        if out in running:
            overlaps.append(out)  # two processes would train one folder
        running.add(out)
        if (os.path.basename(out), None) not in started:  # run_flags: a finished folder is not run again
            started.append((os.path.basename(out), start_from and os.path.basename(start_from)))
            if "round0" in out:
                time.sleep(0.1)  # the methods of this seed arrive while it trains
        running.discard(out)
        return [{"type": "round", "round": 0, "labelled_images": 2, "human_drawn_total": 3, "AP50": 0.1}]

    monkeypatch.setattr(runs, "run_entry", fake_entry)
    argv = ["--seeds", "1", "2", "--methods", "random", "v1+/fixed", "random/reseed", "--jobs", "3"]
    curves, failed = runs.run_all(eff.get_args_parser().parse_args(argv), [], 100)
    assert not failed and len(curves) == 2 + 6 and not overlaps
    assert sorted(started[:2]) == [("asm_round0_seed1", None), ("asm_round0_seed2", None)]
    assert sorted(n for n, _ in started).count("asm_round0_seed1") == 1  # once, though 4 jobs needed it
    methods = {n: s for n, s in started if "round0" not in n}
    assert methods.pop("asm_supervised_seed1") is None and methods.pop("asm_supervised_seed2") is None
    assert methods == {
        f"asm_{m}_seed{seed}": f"asm_round0_seed{seed}"
        for m in ("random", "v1plus_fixed", "random_reseed")
        for seed in (1, 2)
    }
    del started[:]
    runs.run_all(eff.get_args_parser().parse_args([*argv, "--no-share-round0"]), [], 100)
    assert all(s is None for _, s in started) and not any("round0" in n for n, _ in started)
    del started[:]  # another trainer's curves only: no initial phase to share
    monkeypatch.setattr(runs, "sampler_curve", lambda *a: _curve("al_curve/random", a[2], [(100, 0.5)]))
    runs.run_all(eff.get_args_parser().parse_args(["--seeds", "1", "--methods", "al_curve/random"]), [], 100)
    assert [n for n, _ in started] == ["asm_supervised_seed1"]


def test_jobs_start_longest_first_and_the_short_noise_runs_last():
    argv = ["--seeds", "1", "2", "--methods", "random", ana.NOISE, "v1+/fixed", "--supervised-seeds", "1"]
    assert runs.job_order(eff.parse(argv)[0]) == [
        (runs.ROUND0, 1),
        (runs.ROUND0, 2),
        ("supervised", 1),
        ("random", 1),
        ("random", 2),  # random first: the other methods may load its rounds (--round-cache)
        ("v1+/fixed", 1),
        ("v1+/fixed", 2),
        (ana.NOISE, 1),
        (ana.NOISE, 2),
    ]
    argv = ["--seeds", "3", "--methods", "al_curve/random", "random"]  # nothing mines a shared round 0
    assert runs.job_order(eff.parse([*argv, "--no-share-round0"])[0]) == [
        ("supervised", 3),
        ("random", 3),
        ("al_curve/random", 3),
    ]


def test_every_run_stops_at_the_same_round():
    assert runs.max_rounds(eff.parse(["--steps", "5"])[0]) == 4
    assert runs.max_rounds(eff.parse([])[0]) is None  # until the pool is exhausted


def test_the_noise_floor_is_the_gap_between_two_trainings_on_the_same_labels():
    """Random (0.1, 0.3, 0.5, 0.6) and its reseeded twin (0.1, 0.3, 0.44, 0.62): gaps after round 1 are
    0.06 and 0.02, mean 0.04, max 0.06. ASM at (0.1, 0.3, 0.47, 0.61) on fewer boxes per round is
    0.03 below random at round 2: not at or above, but within what noise alone made (0.06)."""
    boxes = [100, 200, 300, 400]
    random = _curve("random", 1, list(zip(boxes, [0.1, 0.3, 0.5, 0.6])))
    twin = _curve(ana.NOISE, 1, list(zip(boxes, [0.1, 0.3, 0.44, 0.62])))
    noise = ana.training_noise([twin], {1: random["points"]})
    assert noise == {
        "mean": pytest.approx(0.04),
        "max": pytest.approx(0.06),
        "n": 2,
        "per_round": {2: pytest.approx(0.06), 3: pytest.approx(0.02)},
    }
    asm = _curve("v1+", 1, list(zip([100, 190, 280, 370, 460], [0.1, 0.3, 0.47, 0.61, 0.63])))
    vs = ana.versus_random([asm], {1: random["points"]}, noise=noise)
    assert vs["min_margin_ap50"] == pytest.approx(-0.03) and not vs["at_or_above_after_round1"]
    assert vs["within_noise_after_round1"] and vs["noise_floor_ap50"] == pytest.approx(0.04)
    # after round 1: -0.03 at 300 boxes (0.47 at 280), +0.01 at 400 (0.61 at 370)
    assert vs["above_below_equal"] == [1, 1, 0]
    worse = _curve("v1+", 1, list(zip([100, 190, 280, 370], [0.1, 0.3, 0.43, 0.61])))
    assert not ana.versus_random([worse], {1: random["points"]}, noise=noise)["within_noise_after_round1"]
    summary = eff.analyse([_curve("supervised", 1, [(500, 0.7)]), random, twin, asm], 500, ["random", "v1+"])
    assert summary["training_noise"]["max"] == pytest.approx(0.06)
    assert ana.NOISE not in summary["vs_random"] and summary["vs_random"]["v1+"]["within_noise_after_round1"]
    short = _curve(ana.NOISE, 1, list(zip(boxes[:3], [0.1, 0.3, 0.44])))  # --noise-rounds 2
    summary = eff.analyse(
        [_curve("supervised", 1, [(500, 0.7)]), random, short, asm], 500, ["random", ana.NOISE]
    )
    assert summary["training_noise"] == {
        "mean": pytest.approx(0.06),
        "max": pytest.approx(0.06),
        "n": 1,
        "per_round": {2: pytest.approx(0.06)},
    }


def test_a_method_starts_only_after_random_of_its_seed_with_the_round_cache():
    args = eff.parse(["--seeds", "1", "--methods", "random", "v1+/calib"])[0]
    done = {1: threading.Event()}
    waited = threading.Thread(target=runs.after_baseline, args=(args, "v1+/calib", 1, done))
    waited.start()
    waited.join(0.2)
    assert waited.is_alive()  # random of seed 1 has not finished
    done[1].set()
    waited.join(5)
    assert not waited.is_alive()
    unset = {1: threading.Event()}
    runs.after_baseline(args, "random", 1, unset)  # random itself never waits
    runs.after_baseline(eff.parse(["--seeds", "1", "--no-round-cache"])[0], "v1+/calib", 1, unset)
    assert not unset[1].is_set()


# --- protocol v3 ---------------------------------------------------------------------------------------


def _v3_curves():
    """Seed 1: random draws 100, 300, 500, 700 boxes (AP 0.1, 0.3, 0.5, 0.6); v1+ on the same images
    draws 100, 200, 350, 500 (AP 0.1, 0.32, 0.49, 0.66). Reseeded twins: random's gaps 0.0, 0.01,
    0.04 at rounds 1-3 and v1+'s 0.02, 0.005, 0.08."""
    return [
        _curve("supervised", 1, [(1000, 0.7)]),
        _curve("random", 1, [(100, 0.1), (300, 0.3), (500, 0.5), (700, 0.6)]),
        _curve(ana.NOISE, 1, [(100, 0.1), (300, 0.3), (500, 0.51), (700, 0.64)]),
        _curve("v1+", 1, [(100, 0.1), (200, 0.32), (350, 0.49), (500, 0.66)]),
        _curve("v1+/reseed", 1, [(100, 0.1), (200, 0.3), (350, 0.495), (500, 0.58)]),
    ]


def test_the_noise_of_every_round_is_measured_from_both_reseeded_runs():
    noise = ana.noise_per_round(_v3_curves())
    assert noise == {
        1: {"mean": pytest.approx(0.01), "max": pytest.approx(0.02), "n": 2},
        2: {"mean": pytest.approx(0.0075), "max": pytest.approx(0.01), "n": 2},
        3: {"mean": pytest.approx(0.06), "max": pytest.approx(0.08), "n": 2},
    }


def test_each_reading_is_judged_against_the_noise_of_its_own_round():
    """v1+ round 1 (200 boxes, 0.32): random's first point at or above is 300 (0.3): +0.02, within
    round 1's 0.02; interpolated between 100 (0.1) and 300 (0.3): 0.2, +0.12. Round 2 (350, 0.49)
    against 500 (0.5): -0.01, within 0.01. Round 3 (500, 0.66) against 500 (0.5): +0.16, above
    round 3's 0.08, although round 2's noise (0.01) is not what judges it."""
    curves = _v3_curves()
    taken, refused = ana.readings(curves, "v1+", ana.noise_per_round(curves))
    assert refused == []
    got = [
        (r["asm_round"], r["random_boxes"], r["margin_ap50"], r["noise_max_at_round"], r["verdict"])
        for r in taken
    ]
    assert got == [
        (1, 300, pytest.approx(0.02), pytest.approx(0.02), "within_noise"),
        (2, 500, pytest.approx(-0.01), pytest.approx(0.01), "within_noise"),
        (3, 500, pytest.approx(0.16), pytest.approx(0.08), "above_noise"),
    ]
    assert taken[0]["margin_interpolated_ap50"] == pytest.approx(0.12)
    assert taken[1]["random_ap50_interpolated"] == pytest.approx(0.35)  # 0.3 + 0.25 x (0.5 - 0.3)
    assert ana.verdict(-0.2, 0.08) == "below_noise" and ana.verdict(0.1, None) == "no_noise"


def test_a_reading_with_random_on_one_side_only_is_refused():
    random = _curve("random", 1, [(100, 0.1), (300, 0.3)])["points"]
    assert ana.reading({"human_drawn_boxes": 350, "AP50": 0.4}, random) is None  # nothing at or above
    assert ana.reading({"human_drawn_boxes": 50, "AP50": 0.4}, random) is None  # nothing at or below
    curves = [
        _curve("random", 1, [(100, 0.1), (300, 0.3)]),
        _curve("v1+", 1, [(100, 0.1), (250, 0.2), (400, 0.5)]),
    ]
    taken, refused = ana.readings(curves, "v1+", {})
    assert [r["asm_round"] for r in taken] == [1] and taken[0]["verdict"] == "no_noise"
    assert refused == [
        {"seed": 1, "method": "v1+", "asm_round": 2, "asm_boxes": 400, "why": "random on one side only"}
    ]


def test_the_bootstrap_interval_matches_the_hand_computed_one():
    """Means of 4 draws from (0, 0, 0, 1): k/4 with k ~ Binomial(4, 1/4): P(0) = 0.316, P(k <= 2) =
    0.949, P(k <= 3) = 0.996; the 2.5% and 97.5% quantiles are 0 and 0.75."""
    assert ana.bootstrap_ci([0, 0, 0, 1]) == [0.0, 0.75]
    assert ana.bootstrap_ci([0.2, 0.2, 0.2]) == [0.2, 0.2]
    assert ana.bootstrap_ci([]) is None
    summary = ana.versus_random_v3(
        [
            {"seed": s, "margin_ap50": m, "margin_interpolated_ap50": m, "verdict": v}
            for s, m, v in [
                (1, 0.0, "within_noise"),
                (1, 0.0, "within_noise"),
                (2, 0.0, "within_noise"),
                (2, 1.0, "above_noise"),
            ]
        ]
    )
    assert summary["ci95"] == [0.0, 0.75] and summary["mean_margin_ap50"] == 0.25
    assert (summary["above_noise"], summary["within_noise"], summary["below_noise"]) == (1, 3, 0)
    assert summary["readings_per_seed"] == {1: 2, 2: 2}


def test_label_damage_compares_the_same_final_images_with_their_true_boxes():
    curves = _v3_curves()
    for c in curves:
        c["final_images"] = "abc" if c["method"] in ("random", "v1+") else None
    damage = ana.label_damage(curves, "v1+")
    assert damage == {
        "mean": pytest.approx(-0.06),
        "per_seed": {1: pytest.approx(-0.06)},
        "n": 1,
        "seeds_on_other_images": [],
    }  # 0.6 - 0.66
    curves[3]["final_images"] = "other"
    assert ana.label_damage(curves, "v1+") is None


def test_the_supervised_bound_keeps_its_seeds():
    curves = [_curve("supervised", s, [(1000, ap)]) for s, ap in ((1, 0.7), (2, 0.8), (3, 0.75))]
    assert ana.supervised_bound(curves) == {"mean": 0.75, "std": pytest.approx(0.0408), "n": 3}


def test_sl_precision_splits_the_certain_boxes_by_what_went_wrong():
    c = _curve("v1+", 1, [(100, 0.1), (200, 0.3)])
    c["points"][1].update(certain=10, matched=6, loose=2, wrong_class=1)
    p = ana.sl_precision([c], ["v1+"])["v1+"]
    assert (p["iou80"], p["iou50"]) == (0.6, 0.8)
    assert p["errors"] == {"loose": 2, "wrong_class": 1, "no_object": 1}
