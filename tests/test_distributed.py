"""torchrun with 2 CPU processes (gloo): sharded detection, DDP training, identical pools, resume."""

import os
import subprocess
import sys

import pytest
import torch

from tests.dist_common import build
from tools.engine.checkpoint import load_checkpoint
from tools.engine.epoch import detect, evaluate
from tools.runtime.logs import read_jsonl

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
    "1",
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
    single, double = str(tmp_path / "single"), str(tmp_path / "double")
    proc = _python("train_asm_one.py", *TINY, "--max-rounds", "2", "--output-dir", single, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _torchrun(2, "train_asm_one.py", *TINY, "--output-dir", double, env=env)  # one round
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _digests(single), _digests(double)
    assert len(one) == 2 and len(two) == 1
    assert len(two[0]) == 2 and two[0][0] == two[0][1]  # both ranks hold the same pools
    assert two[0][0] == one[0][0]  # ... and the pools of a single process
    ckpt_one, ckpt_two = (
        load_checkpoint(os.path.join(single, "last.pth")),
        load_checkpoint(os.path.join(double, "last.pth")),
    )
    rounds_one = ckpt_one["asm"]["rounds"][
        :1
    ]  # the same images were selected (the counts depend on the model)
    assert [r["images"] for r in rounds_one] == [r["images"] for r in ckpt_two["asm"]["rounds"]]
    assert not any(k.startswith("module.") for k in ckpt_two["model"])  # the unwrapped model is saved
    # the 2-process run continues in one process for a second round and ends in the same pools
    proc = _python(
        "train_asm_one.py", *TINY, "--output-dir", double, "--resume", "--max-rounds", "2", env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "applied the new value of --max-rounds" in proc.stdout + proc.stderr
    assert _digests(double)[-1] == [one[-1][0]]
    resumed = load_checkpoint(os.path.join(double, "last.pth"))
    for key in ("unlabelled", "pending"):
        assert resumed["asm"][key] == ckpt_one["asm"][key]


def test_more_processes_than_images_per_round_is_refused(tmp_path, env):
    proc = _torchrun(2, "train_asm_one.py", *TINY, "--K", "1", "--output-dir", str(tmp_path / "r"), env=env)
    assert proc.returncode != 0
    assert "--K (images detected per round): 1 items for 2 processes" in proc.stdout + proc.stderr
