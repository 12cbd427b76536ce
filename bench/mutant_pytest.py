"""pytest hooks for the mutation runs (``bench/mutation.py``), taken in by ``tests/conftest.py`` when
mutmut sets ``MUTANT_UNDER_TEST``.

mutmut runs the tests in its own process (tracing which tests reach which function, then once
unmutated), then forks that process for every mutant and calls ``pytest.main`` in the child. Two
costs of that design are spared here:

- ``tmp_path`` numbers a new directory under ``/tmp/pytest-of-<user>`` and scans every earlier one
  to find the next number. A forked child leaves by ``os._exit``, so pytest's own clean-up never
  runs and each mutant leaves its directory behind: thousands after a run, each start slower.
  Here each run takes a directory of its own and removes it when it ends.
- A fork copies the page tables of all the parent's memory, and the parent keeps the heap its own
  test runs grew even after freeing it. After each of its runs the parent gives the freed pages
  back to the system (``malloc_trim``: 1.3 GB to 0.8 GB here, a third less time per fork).

The hooks are not a ``-p`` plugin: ``-p name`` makes pytest search every installed package's entry
points for ``name`` at every start (25 ms a mutant).
"""

from __future__ import annotations

import ctypes
import gc
import os
import shutil
import tempfile

import pytest

PARENT_RUNS = ("stats", "", "fail")  # mutmut's own runs: tracing, unmutated, the forced failure
TMP_PREFIX = "mutant-"  # a run's own tmp folder; bench/mutation.py removes those of stopped mutants


@pytest.hookimpl(tryfirst=True)  # before pytest's tmpdir plugin reads the option
def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix=TMP_PREFIX)
        config.stash[_OWN] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_OWN, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
    if os.environ.get("MUTANT_UNDER_TEST") in PARENT_RUNS:
        give_back_freed_memory()


def give_back_freed_memory() -> bool:
    """Collect garbage and return the heap's free pages to the system (glibc only). Whether it could."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return False
    return True


_OWN = pytest.StashKey[str]()
