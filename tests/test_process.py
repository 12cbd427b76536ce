"""tools/process.py: the device, seeds and worker counts a run starts with."""

import random

import numpy as np
import torch

from tools.process import choose_device, default_workers, seed_everything


def test_the_device_is_the_one_named_or_the_cpu_without_a_gpu():
    assert choose_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device("auto").type == expected


def test_seeding_repeats_every_generator():
    seed_everything(3)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    seed_everything(4)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != first


def test_gpu_workers_leave_a_core_for_the_main_process_and_stay_at_most_8(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_workers() == 8
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert default_workers() == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert default_workers() == 1
