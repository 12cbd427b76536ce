"""What the speed benchmarks share: data (demo or BCCD), device, model and AMP flags."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import torchvision

from datasets.atomic import atomic_write_text
from datasets.records import RecordSet
from datasets.synthetic import load_demo
from net.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BCCD_CLASSES = ("RBC", "WBC", "Platelets")
# ImageNet MobileNetV2 features for offline benchmarks (../shared); nothing may require them
SHARED_WEIGHTS = os.path.normpath(
    os.path.join(ROOT, "..", "shared", "weights", "mobilenet_v2_imagenet_features.pth")
)


def add_bench_args(p: argparse.ArgumentParser, min_size: int = 224, device: bool = True) -> None:
    """Data, model and size options; ``device``: also ``--device`` and ``--amp`` (a CPU-only bench: no)."""
    if device:
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
        p.add_argument("--amp", action="store_true", help="also time mixed precision (CUDA): amp_speedup")
    p.add_argument("--min-size", type=int, default=min_size)
    p.add_argument("--model", default="fasterrcnn_mobilenet_v2_fpn")
    p.add_argument("--data", default="demo", choices=("demo", "bccd"))
    p.add_argument("--bccd-root", default=os.path.join(ROOT, "..", "shared", "data", "bccd"))


def bench_data(args: argparse.Namespace) -> RecordSet:
    """The demo's train split, or BCCD's trainval (images checked once, no cache)."""
    if args.data == "demo":
        return load_demo("train")
    from datasets.voc import load_voc

    return load_voc(args.bccd_root, "trainval", BCCD_CLASSES, cache_dir=False)


def bench_model(args: argparse.Namespace, data: RecordSet, device: torch.device) -> torch.nn.Module:
    """The model under test; the mobile model gets the ``cpu_fast`` preset, as in the project's CPU runs."""
    preset = "cpu_fast" if "mobilenet" in args.model else "default"
    torch.manual_seed(0)
    return build_model(args.model, data.num_classes + 1, min_size=args.min_size, preset=preset).to(device)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer reads what ran."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def backbone_file(folder: str) -> str:
    """../shared's ImageNet features, else torchvision's untrained MobileNetV2 features saved with
    frozen BatchNorm (no download; the speed is the same)."""
    if os.path.isfile(SHARED_WEIGHTS):
        return SHARED_WEIGHTS
    features = torchvision.models.mobilenet_v2(norm_layer=torchvision.ops.FrozenBatchNorm2d).features
    path = os.path.join(folder, "mobilenet_v2_features.pth")
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def study_model(args: argparse.Namespace, data: RecordSet) -> torch.nn.Module:
    """The CPU study's model: MobileNetV2 features with frozen BatchNorm (:func:`backbone_file`) and the
    ``cpu_fast`` preset, as ``bench/asm_efficiency.py`` trains it (on the CPU; seed before calling)."""
    with tempfile.TemporaryDirectory() as folder:
        return build_model(
            args.model,
            data.num_classes + 1,
            weights_backbone=backbone_file(folder),
            min_size=args.min_size,
            preset="cpu_fast",
        )


def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches) -> list[torch.Tensor]:
    """One optimizer step per batch, bare (no warm-up, guard or loss tally: ``train_one_epoch``'s
    baseline); the losses, detached (no host sync per step)."""
    model.train()
    losses = []
    for images, targets in batches:
        loss = sum(model(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return losses


def side_by_side(
    script: str, argv: list[str], children: list[str], env: dict[str, str] | None = None
) -> list[dict]:
    """``script argv --child c`` for every ``c`` of ``children``, all at once, each its own process;
    the JSON object each prints last, in the order of ``children``.

    Raises:
        SystemExit: a child failed (its exit code named).
    """
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(script), *argv, "--child", c],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for c in children
    ]
    results = []
    for c, proc in zip(children, procs):
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"the {c} process failed (exit {proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def emit(figures: dict, json_out: str | None) -> int:
    """A bench's end: ``figures`` written to ``json_out`` when given (indented), and printed as the one
    JSON object of the last line. Returns 0, the exit code."""
    if json_out:
        atomic_write_text(json_out, json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))
    return 0
