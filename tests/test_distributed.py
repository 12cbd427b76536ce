"""torchrun with 2 CPU processes (gloo): sharded detection, DDP training, identical pools, resume."""

import os
import subprocess
import sys

import pytest
import torch

from tests.dist_common import build
from tools.checkpoint import load_checkpoint
from tools.engine import detect, evaluate
from tools.logs import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--demo-train",
    "24",
    "--demo-val",
    "6",
    "--min-size",
    "64",
    "--batch-size",
    "4",
    "--warmup-iters",
    "2",
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
    "--strategy",
    "v1+",
]


def _torchrun(nproc: int, *args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(
        cmd, cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )


def _python(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "ASM_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": ROOT}


def test_sharded_detection_and_evaluation_equal_one_process(tmp_path, env):
    out = tmp_path / "gathered.pt"
    proc = _torchrun(2, "tests/dist_worker.py", str(out), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out, weights_only=False)
    assert got["world"] == 2
    os.environ["ASM_CACHE_DIR"] = env["ASM_CACHE_DIR"]  # the same demo files (autouse fixture restores it)
    model, loader, evaluators = build()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like with like: the torchrun workers run 1 thread each (OMP_NUM_THREADS=1)
    try:
        single = detect(model, loader, torch.device("cpu"))
        reference_metrics = evaluate(model, loader, evaluators, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert len(got["outputs"]) == len(single) == 10
    for a, b in zip(got["outputs"], single):  # same images, same order, same numbers
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert sum(len(o["scores"]) for o in single) > 0
    assert got["metrics"] == reference_metrics  # VOC and COCO merged


def _digests(out: str) -> list[list[str]]:
    return [
        e["pool_digests"]
        for e in read_jsonl(os.path.join(out, "log.jsonl"))
        if e["type"] == "round" and e["round"]
    ]


def test_two_processes_pools_match_one_process_and_resume_in_one(tmp_path, env):
    single, double, cut = (str(tmp_path / n) for n in ("single", "double", "cut"))
    proc = _python("train_asm_one.py", *TINY, "--output-dir", single, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _torchrun(2, "train_asm_one.py", *TINY, "--output-dir", double, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _digests(single), _digests(double)
    assert len(one) == len(two) == 2
    assert all(len(d) == 2 and d[0] == d[1] for d in two)  # both ranks hold the same pools every round
    assert [d[0] for d in two] == [d[0] for d in one]  # ... and the pools of a single process
    ckpt_one, ckpt_two = (
        load_checkpoint(os.path.join(single, "last.pth")),
        load_checkpoint(os.path.join(double, "last.pth")),
    )
    for key in ("unlabelled", "pending", "rounds"):
        if key == "rounds":  # the same images were selected each round (the counts depend on the model)
            assert [r["images"] for r in ckpt_one["asm"][key]] == [r["images"] for r in ckpt_two["asm"][key]]
        else:
            assert ckpt_one["asm"][key] == ckpt_two["asm"][key]
    assert not any(k.startswith("module.") for k in ckpt_two["model"])  # the unwrapped model is saved
    # cut a 2-process run after its second epoch, finish it in one process
    proc = _torchrun(2, "train_asm_one.py", *TINY, "--output-dir", cut, "--exit-after-epochs", "2", env=env)
    assert proc.returncode != 0 and "stopped after 2 epochs" in proc.stdout + proc.stderr
    proc = _python(
        "train_asm_one.py", *TINY, "--output-dir", cut, "--resume", os.path.join(cut, "last.pth"), env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _digests(cut)[-1] == [one[-1][0]]  # the resumed single process ends in the same pools


def test_more_processes_than_images_per_round_is_refused(tmp_path, env):
    proc = _torchrun(2, "train_asm_one.py", *TINY, "--K", "1", "--output-dir", str(tmp_path / "r"), env=env)
    assert proc.returncode != 0
    assert "--K (images detected per round): 1 items for 2 processes" in proc.stdout + proc.stderr
