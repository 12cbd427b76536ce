"""End-to-end ASM rounds on a tiny demo set, and exact resume across rounds."""

import contextlib
import io
import json
import logging
import os
import shutil

import pytest
import torch
from PIL import Image

from asm.pools import ASMState
from datasets.synthetic import load_demo
from tests.helpers import plain_state
from tools.engine.checkpoint import load_checkpoint
from tools.runtime.logs import read_jsonl
from train_asm_one import main

TINY = [
    "--demo-train",
    "24",
    "--demo-val",
    "6",
    "--min-size",
    "64",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--warmup-iters",
    "2",
    "--deterministic",
    "--K",
    "4",
    "--initial",
    "8",
    "--epochs",
    "1",
    "--round-epochs",
    "1",
    "--max-rounds",
    "2",
    "--certain-thre",
    "0.06",
    "--uncertain-thre",
    "0.05",
    "--gt-iou",
    "0.3",
    "--ap-range",
    "10",
    # the generic rules and cadence, not the demo's own (tools.loop.options.DEMO_DEFAULTS)
    "--certain-precision",
    "none",
    "--round-train",
    "pool",
    "--eval-interval",
    "1",
]


def summary_ap50(out, round_index):
    point = [e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "round"][round_index]
    return f"{point['AP50']:.3f}"


def _run(tmp_path, name, *extra):
    out = str(tmp_path / name)
    return main([*TINY, "--cache-dir", str(tmp_path / "cache"), "--output-dir", out, *extra]), out


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Runs that several tests read (never write): ``shared(name, *flags)`` runs once per module and
    returns ``(exit code, output folder, what it printed)``."""
    root, done = tmp_path_factory.mktemp("shared_runs"), {}

    def run(name, *extra):
        if name not in done:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                code, out = _run(root, name, *extra)
            done[name] = code, out, printed.getvalue()
        return done[name]

    return run


V1_PLUS = ("v1p", "--strategy", "v1+", "--review-cost", "0.25", "--move-cost", "0.5")
TOPK_V2 = ("topk_v2", "--strategy", "topk_v2")


@pytest.mark.parametrize("strategy", ["topk_v2", "v1+"])
def test_two_rounds_end_to_end(shared, strategy):
    code, out, printed = shared(*(V1_PLUS if strategy == "v1+" else TOPK_V2))
    assert code == 0
    printed = printed.strip().splitlines()
    summary = json.loads(printed[-1])
    assert summary["rounds"] == 2 and summary["strategy"] == strategy
    assert any(line.startswith("round  labelled") for line in printed)
    begins = max(k for k, line in enumerate(printed) if line.startswith("AP50 by round"))
    story = "\n".join(printed[begins:-1])  # the closing lines, above the JSON
    assert f"AP50 by round: round 0: {summary_ap50(out, 0)}" in story and "-> round 2: " in story
    assert f"The human drew {summary['human_drawn_boxes']} boxes" in story and "% of the" in story
    assert story.count("  round ") == 2 and "  round 2: the model confirmed " in story
    assert f"tensorboard --logdir {os.path.join(out, 'tb')}" in story and "best.pth" in story
    assert "python train_asm_one.py --dataset voc --voc-roots" in story
    start, *rounds = [e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "round"]
    assert [r["round"] for r in rounds] == [1, 2] and all(r["images"] == 4 for r in rounds)
    # round 0: the initial pool, the first point of the learning curve
    assert start["round"] == 0 and start["labelled_images"] == 8
    epochs = [e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "epoch"]
    assert start["AP50"] == [e for e in epochs if e["phase"] == "pretrain"][-1]["AP50"]  # the phase's last
    # one record shape: round 0 carries every key a round does but the round's own costs
    shared_keys = {"type", "round", "labelled_images", "AP50", "human_drawn_total", "human"}
    assert shared_keys <= set(start) and all(shared_keys <= set(r) for r in rounds)
    assert set(start["human"]) == set(rounds[0]["human"]) and start["human"]["confirmed"] == 0
    assert (
        start["human_drawn_total"]
        == start["human"]["drawn"]
        == summary["human_drawn_boxes"] - sum(r["drawn"] for r in rounds)
    )
    ckpt = load_checkpoint(os.path.join(out, "last.pth"))
    asm = ASMState.from_state(ckpt["asm"])
    ids = [*asm.labelled, *asm.unlabelled, *asm.pending, *asm.detected]
    assert sorted(ids) == sorted(asm.all_ids) and len(ids) == 24
    initial_boxes = summary["human_drawn_boxes"] - sum(r["drawn"] for r in rounds)
    assert initial_boxes > 0 and summary["labelled_images"] == len(asm.labelled)
    with Image.open(os.path.join(out, "rounds", "round2.png")) as sheet:  # most uncertain images of round 2
        assert sheet.size[0] >= 256
    if strategy == "v1+":
        assert len(asm.labelled) == 8 + 2 * 4
    load_report = json.load(open(os.path.join(out, "load_report.json")))
    assert set(load_report) == {"train", "evaluation"}
    cache = os.path.join(os.path.dirname(out), "cache")
    for name, split in (("train", "train"), ("evaluation", "val")):
        demo = load_demo(split, num_train=24, num_val=6, cache_dir=cache)
        labels = [int(v) for r in demo.records for v in r.labels]
        assert load_report[name]["boxes_per_class"] == {
            c: labels.count(k + 1) for k, c in enumerate(demo.classes)
        }


def test_resume_mid_run_gives_the_same_pools_and_weights(tmp_path, shared):
    code, full, _ = shared(*TOPK_V2)
    assert code == 0
    for stop in ("1", "2"):  # after the initial phase; inside round 1
        part = f"part{stop}"
        code, out = _run(tmp_path, part, "--strategy", "topk_v2", "--exit-after-epochs", stop)
        assert code == 3
        code, out = _run(tmp_path, part, "--strategy", "topk_v2", "--resume", os.path.join(out, "last.pth"))
        assert code == 0
        a, b = load_checkpoint(os.path.join(full, "last.pth")), load_checkpoint(os.path.join(out, "last.pth"))
        same = json.dumps(plain_state(a["asm"]), sort_keys=True)  # NaN (a class absent from evaluation) too
        assert same == json.dumps(plain_state(b["asm"]), sort_keys=True)
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), k
        rounds = lambda p: [e for e in read_jsonl(os.path.join(p, "log.jsonl")) if e["type"] == "round"]  # noqa: E731
        assert rounds(full) == rounds(out)


def test_deterministic_runs_repeat_in_fresh_processes(tmp_path):
    from tests.test_al_curve import _fresh_process

    summaries = []
    for name in ("first", "second"):
        out = str(tmp_path / name)
        proc = _fresh_process(
            "train_asm_one.py",
            [
                *TINY,
                "--strategy",
                "v1+",
                "--max-rounds",
                "1",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--output-dir",
                out,
            ],
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        summary.pop("wall_s")
        summaries.append(summary)
        config = open(os.path.join(out, "config.yaml")).read()
        assert "# threads:" in config and "# cpu:" in config  # the environment is recorded
    assert len(summaries[0]["weights_sha256"]) == 64
    assert summaries[0] == summaries[1]


def test_candidates_and_calibrated_thresholds(tmp_path, monkeypatch):
    import tools.loop.rounds

    passes = []  # calibration passes of their own: none, each phase's last evaluation serves
    monkeypatch.setattr(tools.loop.rounds, "evaluate", lambda *a, **k: passes.append(1))
    code, out = _run(
        tmp_path, "rules", "--strategy", "v1+", "--candidates", "3", "--certain-precision", "0.5"
    )
    assert code == 0 and passes == []
    rounds = [e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "round" and e["round"]]
    assert [r["candidates"] for r in rounds] == [12, 12] and all(r["images"] == 4 for r in rounds)
    for r in rounds:  # every round calibrates, the first included: on the validation set
        assert set(r["thresholds"]) == {"circle", "square", "triangle", "cross"}
        assert all(0.05 <= t <= 1.0 for t in r["thresholds"].values())
        if all(t == 1.0 for t in r["thresholds"].values()):  # no class shows the precision
            assert r["confirmed"] == 0
    ckpt = load_checkpoint(os.path.join(out, "last.pth"))
    assert "last_outcomes" not in ckpt
    assert len(ASMState.from_state(ckpt["asm"]).labelled) == 8 + 2 * 4


def test_a_mining_gate_above_the_ap_offers_no_model_box(tmp_path):
    code, out = _run(
        tmp_path, "gate", "--strategy", "v1+", "--mining-gate", "1.0", "--certain-precision", "0.5"
    )
    assert code == 0
    rounds = [e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "round" and e["round"]]
    assert all(r["gated"] and r["confirmed"] == 0 and r["deleted"] == 0 for r in rounds)  # AP50 < 1.0: no SL
    assert all("thresholds" not in r for r in rounds)  # no calibration pass for a gated round


def _tags(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(out, "tb"))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_a_mirrored_view_that_must_draw_each_box_exactly_again_confirms_none(shared, tmp_path):
    """--certain-agreement 1.0: no box of the mirrored view lands exactly on a box of the image (its
    coordinates come from another computation), so every certain box is offered as uncertain; the
    same run without it confirms boxes."""
    code, out = _run(tmp_path, "agree", *V1_PLUS[1:], "--certain-agreement", "1.0")
    assert code == 0
    rounds = [e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "round" and e["round"]]
    assert len(rounds) == 2 and sum(r["disagreed"] for r in rounds) > 0
    assert all(r["confirmed"] == 0 and r["certain"] == 0 for r in rounds)
    _, plain, _ = shared(*V1_PLUS)
    plain_rounds = [
        e for e in read_jsonl(os.path.join(plain, "log.jsonl")) if e["type"] == "round" and e["round"]
    ]
    assert sum(r["confirmed"] for r in plain_rounds) > 0 and all("disagreed" not in r for r in plain_rounds)


def test_a_run_says_what_it_saved(shared):
    """The last line, the per-round files and TensorBoard carry the human's work and the saving."""
    code, out, printed = shared(*V1_PLUS)
    assert code == 0
    printed = printed.strip().splitlines()
    summary = json.loads(printed[-1])
    asm = ASMState.from_state(load_checkpoint(os.path.join(out, "last.pth"))["asm"])
    total, confirmed = asm.pool_boxes()
    assert confirmed == summary["confirmed_boxes"] > 0  # v1+: every confirmed box is in the pool
    assert summary["human_saved_fraction"] == round(confirmed / total, 4)
    assert summary["weighted_cost"] == pytest.approx(
        summary["human_drawn_boxes"]
        + 0.25 * (summary["confirmed_boxes"] + summary["deleted_boxes"])
        + 0.5 * summary["moved_boxes"],
        abs=0.01,
    )
    assert summary["stopped"] == "--max-rounds 2 reached"
    header = next(line for line in printed if line.startswith("round  labelled"))  # the table's header
    assert "moved" in header and "confirmed" in header
    for r in (1, 2):
        with open(os.path.join(out, "rounds", f"round{r}.json")) as f:
            report = json.load(f)
        assert report["round"] == r and len(report["images"]) == 4
        for image in report["images"]:
            assert image["joined_pool"] and image["reason"].startswith("v1+") and 0 <= image["al_ratio"] <= 1
            assert image["image_id"] in asm.labelled
        assert sum(i["confirmed"] for i in report["images"]) == report["summary"]["confirmed"]
        assert sum(i["drawn"] for i in report["images"]) == report["summary"]["drawn"]
    tags = _tags(out)
    assert tags["ASM/images_joined"] == [4, 4] and tags["ASM/label_pool"] == [12, 16]
    assert tags["ASM/human/saved_fraction"][-1] == pytest.approx(summary["human_saved_fraction"], abs=1e-4)
    assert tags["ASM/human/confirmed"][-1] == summary["confirmed_boxes"]
    assert "ASM/sl_score" not in tags and "ASM/sample_num/SL" not in tags
    assert len(tags["Accuracy/AP_50"]) == 3  # one evaluated epoch per phase


def test_random_is_v1_plus_with_every_box_drawn_and_the_same_images(tmp_path, capsys, shared):
    code, out = _run(tmp_path, "rand", "--strategy", "random")
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["confirmed_boxes"] == summary["deleted_boxes"] == summary["moved_boxes"] == 0
    assert summary["human_saved_fraction"] == 0.0 and summary["weighted_cost"] == summary["human_drawn_boxes"]
    code, v1p, _ = shared(*V1_PLUS)  # the cost weights only weigh: the same rounds
    assert code == 0
    logs = [[e for e in read_jsonl(os.path.join(o, "log.jsonl")) if e["type"] == "round"] for o in (out, v1p)]
    assert logs[0][0]["AP50"] == logs[1][0]["AP50"]  # round 0: one model (deterministic)
    for r in (1, 2):
        reports = []
        for o in (out, v1p):
            with open(os.path.join(o, "rounds", f"round{r}.json")) as f:
                reports.append(json.load(f))
        assert [i["image_id"] for i in reports[0]["images"]] == [i["image_id"] for i in reports[1]["images"]]
        for image, other in zip(reports[0]["images"], reports[1]["images"]):
            assert (
                image["confirmed"] == 0
                and image["drawn"] == other["drawn"] + other["confirmed"] + other["moved"]
            )


def test_the_same_labels_give_the_same_model_whatever_strategy_chose_them(tmp_path):
    """v1+ with nothing certain labels round 1 exactly as random does; its detection pass (an extra
    loader drawing from the global generator) must not change the model trained on those labels."""
    never_certain = ["--max-rounds", "1", "--certain-thre", "0.999", "--uncertain-thre", "0.998"]
    weights = []
    for strategy in ("random", "v1+"):
        code, out = _run(tmp_path, strategy, "--strategy", strategy, *never_certain)
        assert code == 0
        state = load_checkpoint(os.path.join(out, "last.pth"))
        weights.append((state["train_records"], state["model"]))
    assert weights[0][0] == weights[1][0]  # the same records, in the same order
    assert weights[0][1].keys() == weights[1][1].keys()
    assert all(torch.equal(weights[0][1][k], weights[1][1][k]) for k in weights[0][1])


def test_another_train_seed_keeps_every_label_and_changes_only_the_training(tmp_path):
    """--train-seed: the efficiency study's noise runs. The initial pool, the queue and the round's
    images stay those of --seed; the weights differ; --train-seed equal to --seed is --seed alone."""
    runs = {}
    for name, extra in (("plain", []), ("same", ["--train-seed", "0"]), ("other", ["--train-seed", "7"])):
        code, out = _run(tmp_path, name, "--strategy", "random", "--max-rounds", "1", "--seed", "0", *extra)
        assert code == 0
        state = load_checkpoint(os.path.join(out, "last.pth"))
        runs[name] = (sorted(ASMState.from_state(state["asm"]).labelled), state["model"])
    assert runs["plain"][0] == runs["same"][0] == runs["other"][0] and len(runs["plain"][0]) == 8 + 4
    plain, same, other = (runs[n][1] for n in ("plain", "same", "other"))
    assert all(torch.equal(plain[k], same[k]) for k in plain)
    assert not all(torch.equal(plain[k], other[k]) for k in plain)


def _without_max_rounds():
    k = TINY.index("--max-rounds")
    return TINY[:k] + TINY[k + 2 :]


@pytest.mark.parametrize(
    "extra, pool, check",
    [
        (["--strategy", "v1"], 8, lambda rounds: all(r["images_joined"] == 0 for r in rounds)),
        (["--strategy", "topk_v1"], 12, lambda rounds: all(r["images_joined"] == 4 for r in rounds)),
        (["--round-train", "replay"], 12, lambda rounds: all(r["train_images"] == 8 for r in rounds)),
        (
            ["--enable-sl", "false"],
            12,
            lambda rounds: all(r["confirmed"] == 0 and r["drawn"] > 0 for r in rounds),
        ),
        (["--enable-al", "false"], 12, lambda rounds: all(r["drawn"] == 0 for r in rounds)),
    ],
)
def test_every_strategy_round_rule_and_ablation_runs_end_to_end(tmp_path, capsys, extra, pool, check):
    code, out = _run(tmp_path, "run", *extra, "--max-rounds", "1")  # one round shows each rule
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rounds"] == 1 and summary["labelled_images"] == pool
    rounds = [
        e for e in read_jsonl(os.path.join(out, "log.jsonl")) if e["type"] == "round" and e["round"] > 0
    ]
    assert len(rounds) == 1 and check(rounds)
    assert os.path.isfile(os.path.join(out, "rounds", "round1.json"))


def test_topk_v2_with_every_ratio_in_the_middle_band_ends_by_itself(tmp_path, capsys):
    out = str(tmp_path / "mid")
    argv = [
        *_without_max_rounds(),
        "--initial",
        "16",
        "--K",
        "8",
        "--strategy",
        "topk_v2",
        "--cer-ratio",
        "0.0",
        "--uncer-ratio",
        "1.0",
        "--max-passes",
        "2",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output-dir",
        out,
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stopped"] == "the unlabelled pool is exhausted" and summary["labelled_images"] == 24
    assert summary["rounds"] <= 8 * 2 // 8 + 2  # ceil(max_passes * unlabelled / K) + max_passes


def test_rounds_stop_when_ap_settles_and_the_tags_are_written(tmp_path, capsys, monkeypatch):
    import tools.engine.fit

    aps = iter([0.30, 0.40, 0.50, 0.505, 0.9, 0.9])  # pretrain (2 epochs), round 1, round 2, ...

    def scripted(model, loader, evaluators, device):
        ap = next(aps)
        return {"voc/AP50": ap, "voc/AP75": ap / 2}

    monkeypatch.setattr(tools.engine.fit, "evaluate", scripted)
    out = str(tmp_path / "settle")
    argv = [
        *_without_max_rounds(),
        "--epochs",
        "2",
        "--ap-range",
        "2",
        "--ap-shift-asm",
        "0.01",
        "--ap-shift-pretrain",
        "0",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--output-dir",
        out,
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # rounds 1 and 2 give AP 0.50 and 0.505: shift 0.0025 < 0.01 with a 2-wide window
    assert summary["rounds"] == 2 and summary["stopped"].startswith("AP settled across rounds")
    tags = _tags(out)
    assert tags["Accuracy/AP_50"] == pytest.approx([0.30, 0.40, 0.50, 0.505])
    assert tags["Accuracy/AP_shift"] == pytest.approx([0.05])  # the pretrain window [0.30, 0.40]
    assert tags["ASM/label_pool"] == [12, 16] and tags["ASM/human/drawn"][0] > 0


def test_resuming_a_checkpoint_of_another_strategy_is_refused(tmp_path, capsys, caplog):
    code, out = _run(tmp_path, "sup", "--strategy", "none", "--epochs", "1")
    assert code == 0
    code, _ = _run(tmp_path, "sup", "--resume", os.path.join(out, "last.pth"), "--strategy", "v1+")
    assert code == 2 and "these differ: --strategy 'v1+' (the run's: 'none')" in caplog.text


@pytest.mark.parametrize("strategy", ["random", "v1"])
def test_one_initial_model_mined_another_way_repeats_a_run_started_that_way(tmp_path, caplog, strategy):
    """A run stopped where round 1 begins, copied and resumed with another --strategy, gives the rounds
    of a run started with it (one process, one thread count: the same arithmetic), and says the change.
    random is the command line's rule (no detection), v1 the pools' (no image joins the training pool).
    How bench/asm_efficiency.py shares round 0."""
    code, first = _run(tmp_path, "r0", "--max-rounds", "0")
    assert code == 0
    shutil.copytree(first, str(tmp_path / "mined"))
    with caplog.at_level(logging.WARNING):
        code, shared_start = _run(tmp_path, "mined", "--strategy", strategy, "--resume")
    assert code == 0 and f"applied the new value of --strategy 'v1+' -> '{strategy}'" in caplog.text
    code, apart = _run(tmp_path, "apart", "--strategy", strategy)
    assert code == 0
    rounds = [
        [e for e in read_jsonl(os.path.join(o, "log.jsonl")) if e["type"] == "round"]
        for o in (shared_start, apart)
    ]
    assert len(rounds[0]) == 3 and rounds[0][0]["AP50"] == pytest.approx(rounds[1][0]["AP50"], abs=1e-6)
    keys = ("labelled_images", "images_joined", "human_drawn_total", "confirmed", "pool_digests")
    assert [[r.get(k) for k in keys] for r in rounds[0]] == [[r.get(k) for k in keys] for r in rounds[1]]
    assert [r["AP50"] for r in rounds[0][1:]] == pytest.approx([r["AP50"] for r in rounds[1][1:]], abs=1e-6)
    if strategy == "v1":
        assert all(r["images_joined"] == 0 for r in rounds[0][1:])
