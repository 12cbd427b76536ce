"""pytest settings for each mutant's test run (``bench/mutation.py``, loaded with ``-p``).

mutmut forks its warm process for every mutant and calls ``pytest.main`` in the child. Two things
pytest does at every start cost more there than the tests themselves:

- At exit, pytest runs ``gc.collect()`` five times to surface unraisable exceptions. The child
  inherits torch's and the tests' whole heap, so each collection scans it all (0.4 s a mutant).
  ``gc.freeze()`` at configure time moves what the child inherited out of the collector's sight;
  what the tests allocate is still collected.
- ``tmp_path`` numbers a new directory under ``/tmp/pytest-of-<user>`` and scans every earlier one
  to find the next number. A forked child leaves by ``os._exit``, so pytest's own clean-up never
  runs and each mutant leaves its directory behind: thousands after a run, each start slower.
  Here each child takes a directory of its own and removes it when its run ends.
"""

from __future__ import annotations

import gc
import shutil
import tempfile

import pytest


@pytest.hookimpl(tryfirst=True)  # before pytest's tmpdir plugin reads the option
def pytest_configure(config: pytest.Config) -> None:
    gc.freeze()
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="mutant-")
        config.stash[_OWN] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_OWN, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


_OWN = pytest.StashKey[str]()
