"""Selection strategies behind one interface, for learning curves (``al_curve.py``).

A sampler is built with a name and the pool's image ids, and picks the next images::

    sampler = SAMPLERS["entropy"]("entropy", pool_ids, seed=0, aggregate="max")
    new_ids = sampler.select_batch(10, already_selected, probs=probs_by_id)

``select_batch`` returns exactly ``min(n_sample, remaining)`` distinct ids, none already selected,
deterministically for a seed (ties are broken by image id). Samplers get what they need through
keyword ``context`` (class-probability vectors, per-image losses, AL ratios), never from globals:

* ``random``: seeded shuffle of the remaining ids (linear time).
* ``least_confidence``, ``margin``, ``entropy``: per detected box, from its class-probability
  vector over all classes and the background (``probs[id]``: ``[N, C+1]``); boxes aggregated per
  image by ``max``, ``mean`` or ``sum``. An image without detections scores 0 (nothing uncertain).
* ``loss``: the per-image detection loss (``losses[id]``: float); needs GT, a simulation baseline.
* ``al_ratio``: ASM's AL ann_ratio (``ratios[id]``), highest first.

A user sampler plugs in by import path: ``load_sampler("my_module:MySampler")``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np


class BaseSampler:
    """Common checks; subclasses implement :meth:`rank` (or override :meth:`select_batch`).

    Args:
        name: the sampler's name (for logs and curves).
        pool: image ids it may choose from.
        seed: seed of its own random generator.
    """

    needs: tuple[str, ...] = ()  # context keys it reads: "probs", "losses", "ratios"

    def __init__(self, name: str, pool: Sequence[str], seed: int = 0, **options: Any) -> None:
        self.name = name
        self.pool = list(pool)
        if len(set(self.pool)) != len(self.pool):
            raise ValueError(f"sampler {name}: the pool has duplicate image ids")
        self.seed = seed
        self.options = options

    def remaining(self, already_selected: Collection[str]) -> list[str]:
        chosen = set(already_selected)
        return [i for i in self.pool if i not in chosen]

    def check_n(self, n_sample: Any) -> int:
        if isinstance(n_sample, bool) or not isinstance(n_sample, (int, np.integer)):
            raise TypeError(f"sampler {self.name}: n_sample must be an integer, got {n_sample!r}")
        if n_sample < 0:
            raise ValueError(f"sampler {self.name}: n_sample must be >= 0, got {n_sample}")
        return int(n_sample)

    def select_batch(self, n_sample: int, already_selected: Collection[str], **context: Any) -> list[str]:
        """The next ``min(n_sample, remaining)`` ids, best first."""
        n_sample = self.check_n(n_sample)
        candidates = self.remaining(already_selected)
        if n_sample == 0 or not candidates:
            return []
        scores = np.asarray(self.rank(candidates, **context), dtype=np.float64)
        if scores.shape != (len(candidates),):
            raise ValueError(
                f"sampler {self.name}: rank() gave {scores.shape}, expected ({len(candidates)},)"
            )
        order = sorted(range(len(candidates)), key=lambda k: (-scores[k], candidates[k]))
        return [candidates[k] for k in order[: int(n_sample)]]

    def rank(self, candidates: list[str], **context: Any) -> Sequence[float]:
        """Informativeness of each candidate (higher is picked first)."""
        raise NotImplementedError


class RandomSampler(BaseSampler):
    def select_batch(self, n_sample: int, already_selected: Collection[str], **context: Any) -> list[str]:
        n_sample = self.check_n(n_sample)
        candidates = self.remaining(already_selected)
        rng = np.random.default_rng([self.seed, len(self.pool) - len(candidates)])
        return [candidates[k] for k in rng.permutation(len(candidates))[:n_sample]]


def _box_uncertainty(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    def least_confidence(p):
        return 1.0 - p.max(1)

    def margin(p):
        top2 = np.sort(p, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])

    def entropy(p):
        return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(1)

    return {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}[kind]


class UncertaintySampler(BaseSampler):
    """least_confidence / margin / entropy of the box class-probability vectors."""

    needs = ("probs",)

    def rank(self, candidates, probs: dict[str, np.ndarray] | None = None, **context):
        if probs is None:
            raise ValueError(f"sampler {self.name} needs probs=<image id -> [N, C+1] class probabilities>")
        score = _box_uncertainty(self.name)
        aggregate = self.options.get("aggregate", "max")
        if aggregate not in ("max", "mean", "sum"):
            raise ValueError(f"aggregate must be max, mean or sum, got {aggregate!r}")
        out = []
        for i in candidates:
            p = np.asarray(probs[i], dtype=np.float64)
            out.append(float(getattr(np, aggregate)(score(p.reshape(len(p), -1)))) if len(p) else 0.0)
        return out


class ContextScoreSampler(BaseSampler):
    """Ranks by one per-image number given in ``context[key]``, highest first."""

    key = ""
    what = ""

    def rank(self, candidates, **context):
        values = context.get(self.key)
        if values is None:
            raise ValueError(f"sampler {self.name} needs {self.key}=<image id -> {self.what}>")
        return [float(values[i]) for i in candidates]


class LossSampler(ContextScoreSampler):
    needs, key, what = ("losses",), "losses", "detection loss"


class RatioSampler(ContextScoreSampler):
    needs, key, what = ("ratios",), "ratios", "AL ann_ratio"


SAMPLERS: dict[str, type[BaseSampler]] = {
    "random": RandomSampler,
    "least_confidence": UncertaintySampler,
    "margin": UncertaintySampler,
    "entropy": UncertaintySampler,
    "loss": LossSampler,
    "al_ratio": RatioSampler,
}


def load_sampler(spec: str) -> tuple[str, type[BaseSampler]]:
    """A built-in name, or ``module:Class`` of a user sampler (a :class:`BaseSampler` subclass)."""
    if spec in SAMPLERS:
        return spec, SAMPLERS[spec]
    if ":" not in spec:
        raise ValueError(f"unknown sampler {spec!r}; choose one of {sorted(SAMPLERS)} or give module:Class")
    module, cls_name = spec.split(":", 1)
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import sampler {spec!r}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, BaseSampler)):
        raise ValueError(f"{spec} is not a subclass of asm.samplers.BaseSampler")
    return cls_name, cls
