"""Shared fixtures: small real datasets in tests/data (README there: sources and licences) and a small
demo dataset."""

from __future__ import annotations

import os

# MKL reads this at its first call, before any test runs: --deterministic runs in this process then
# repeat exactly on Intel CPUs too (see tools.loop.options.deterministic_mode).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N workers share the cores; one thread each (and in the processes they start), as
    # two-thread workers on two cores spin against each other and run slower than one at a time
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
if "MUTANT_UNDER_TEST" in os.environ:  # bench/mutation.py: what each mutant's forked pytest need not redo
    from bench.mutant_pytest import pytest_configure, pytest_unconfigure  # noqa: E402, F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "data")
BCCD = os.path.join(FIXTURES, "bccd")  # 12 BCCD images: train 6, val 3, test 3
TINY_COCO = os.path.join(FIXTURES, "tiny_coco")  # 5 + 5 COCO 2017 images with instance masks


@pytest.fixture
def bccd_root() -> str:
    return BCCD


@pytest.fixture
def tiny_coco_root() -> str:
    return TINY_COCO


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> str:
    """A cache folder holding a small demo dataset, shared by the whole test session."""
    return str(tmp_path_factory.mktemp("demo_cache"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Never write caches into the user's home folder from tests.
    monkeypatch.setenv("ASM_CACHE_DIR", str(tmp_path / "cache"))
