"""ASM pool bookkeeping and the expansion strategies (pure: ids and records, no model, no disk).

Every training image is in exactly one of four sets:

* ``labelled``: image id -> the record trained on every round (SA annotation or, for the initial
  pool, the oracle's record). A record that joined it is never replaced.
* ``unlabelled``: ids not yet detected, in the order they will be drawn (shuffled once, with the
  selection generator).
* ``pending`` (``topk_v2``): uncertain images whose untouched GT record is detected again by the
  next round's model, first in, first out. Images between ``cer_ratio`` and ``uncer_ratio`` go
  back to the end of the unlabelled queue. Either way, an image on its ``max_passes``-th detection
  goes to the human: it joins the label pool with that pass's SA annotation (AL), so every image is
  detected at most ``max_passes`` times. Rounds near the end may detect fewer than ``K`` (pending
  images alone), so the bound is ``ceil(max_passes * unlabelled / K) + max_passes`` rounds, whatever
  the ratios (the property ``tests/test_asm_pools.py`` checks): with 5 images, ``K`` 4 and
  ``max_passes`` 2, every ratio high takes 4 rounds, one more than ``ceil(2 * 5 / 4)``.
* ``detected``: images detected whose SA annotation is held outside the label pool (``v1``: used
  for one round of training; ``topk_v1``: candidates re-ranked every round).

A round: :meth:`ASMState.next_batch` (ids to detect), the caller detects and merges them, then
:meth:`ASMState.apply` moves ids between the sets and returns the records to train on: the
strategy's images plus, with ``round_train="replay"`` (ASM_core), ``K`` random records of the label
pool as it was before the round, or with ``"pool"`` the whole label pool. The
selection generator is the state's own ``numpy`` PCG64, saved with it, so a resumed run draws
exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asm.merge import MergeResult
from datasets.records import Record, pack_records, record_from_dict, unpack_records

STRATEGIES = ("v1", "v1+", "topk_v1", "topk_v2", "random")
# What a round trains on besides its own images: K random label-pool records (ASM_core), or the
# whole label pool (as most active-learning tools retrain each cycle).
ROUND_TRAIN = ("replay", "pool")


def image_count(value: float, n: int) -> int:
    """Images meant by a fraction of ``n`` (``value <= 1``, at least one) or a count (``value > 1``)."""
    return max(1, round(value * n)) if value <= 1 else int(value)


def initial_pool(n: int, initial: float, seed: int) -> list[int]:
    """Indices of the initial label pool (a fraction or a count of ``n``), drawn with its own RNG.

    ``train_asm_one.py`` and ``al_curve.py`` share it, so ASM and the samplers start from the
    same images for the same seed.
    """
    count = round(initial * n) if initial <= 1 else int(initial)  # no rounding up to one: 0 is an error
    if not 0 < count <= n:
        raise ValueError(f"--initial {initial} gives {count} images; the pool has {n}")
    return sorted(np.random.default_rng([seed, 7]).permutation(n)[:count].tolist())


@dataclass
class RoundCost:
    """Human work and model quality of one round (or, summed, of the run)."""

    images: int = 0  # images the human looked at
    drawn: int = 0  # AL boxes drawn from scratch (never charged twice for one GT box)
    confirmed: int = 0  # SL boxes
    deleted: int = 0  # false positives removed
    moved: int = 0  # model boxes dragged onto an object (asm.edits.count_moves)
    certain: int = 0  # certain boxes after rejudge
    matched: int = 0  # certain boxes that match GT
    sl_score: float = 0.0  # summed scores of the matched certain boxes
    loose: int = 0  # unmatched certain boxes on an object of their class at IoU in [0.5, gt_iou)
    wrong_class: int = 0  # unmatched certain boxes on an object of another class (IoU >= 0.5)
    ratio_sum: float = 0.0  # summed AL ann_ratios

    @property
    def precision(self) -> float | None:
        """Pseudo-label precision: share of certain boxes that match GT (None without any)."""
        return self.matched / self.certain if self.certain else None

    def add(self, results: Sequence[MergeResult]) -> None:
        for r in results:
            self.images += 1
            self.drawn += r.drawn
            self.moved += 0 if r.moved is None else int(r.moved.sum())
            self.confirmed += r.confirmed
            self.deleted += r.deleted
            self.certain += r.certain
            self.matched += r.matched
            self.sl_score += r.sl_score
            self.loose += r.loose
            self.wrong_class += r.wrong_class
            self.ratio_sum += r.ratio

    def weighted(self, review_cost: float, move_cost: float) -> float:
        """Human work in box draws: a drawn box 1, a box confirmed or deleted ``review_cost``, a model
        box moved onto its object ``move_cost`` (README, "What a round costs the human")."""
        return self.drawn + review_cost * (self.confirmed + self.deleted) + move_cost * self.moved

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "drawn": self.drawn,
            "confirmed": self.confirmed,
            "deleted": self.deleted,
            "moved": self.moved,
            "certain": self.certain,
            "matched": self.matched,
            "sl_score": self.sl_score,
            "loose": self.loose,
            "wrong_class": self.wrong_class,
            "ratio_sum": self.ratio_sum,
            "precision": self.precision,
        }


@dataclass
class ASMState:
    """Pools, queues and counters of an ASM run; :meth:`state_dict` is plain data."""

    strategy: str
    K: int
    all_ids: list[str]
    labelled: dict[str, Record] = field(default_factory=dict)
    unlabelled: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    detected: dict[str, tuple[Record, float]] = field(default_factory=dict)
    sl_flags: dict[str, list[bool]] = field(default_factory=dict)  # SL flag per box of SA records
    round: int = 0
    cost: RoundCost = field(default_factory=RoundCost)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    cer_ratio: float = 0.3
    uncer_ratio: float = 0.6
    max_passes: int = 3  # topk_v2: an image detected this many times goes to the human and joins the pool
    passes: dict[str, int] = field(default_factory=dict)  # detections per image so far
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    round_train: str = "pool"  # what a round trains on besides its own images: see apply()
    fates: dict[str, str] = field(
        default_factory=dict
    )  # the last round: image id -> what became of it and why
    # labelled by the human and held out for evaluation, never trained on (--eval-from-labels)
    held_out: dict[str, Record] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        strategy: str,
        K: int,
        records: Sequence[Record],
        initial: Sequence[int],
        seed: int,
        cer_ratio: float = 0.3,
        uncer_ratio: float = 0.6,
        max_passes: int = 3,
        round_train: str = "pool",
    ) -> ASMState:
        """Initial state: ``initial`` indices of ``records`` labelled (drawn by a human), the rest shuffled."""
        state = cls(strategy, K, [r.image_id for r in records], rng=np.random.default_rng([seed, 11]))
        state.set_rules(strategy, K, cer_ratio, uncer_ratio, max_passes, round_train)
        chosen = set(initial)
        rest = [i for i in range(len(records)) if i not in chosen]
        state.labelled = {records[i].image_id: records[i] for i in sorted(chosen)}
        state.unlabelled = [records[i].image_id for i in state.rng.permutation(rest)]
        state.check()
        return state

    def set_rules(
        self, strategy: str, K: int, cer_ratio: float, uncer_ratio: float, max_passes: int, round_train: str
    ) -> None:
        """How the rounds select and train (checked): at the start, or where the first round begins
        (a resumed run given new round options, :mod:`tools.loop.resume`)."""
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
        if not isinstance(K, int) or K < 1:
            raise ValueError(f"K must be a positive integer, got {K!r}")
        if round_train not in ROUND_TRAIN:
            raise ValueError(f"unknown round_train {round_train!r}; choose one of {ROUND_TRAIN}")
        if not 0 <= cer_ratio < uncer_ratio <= 1:
            raise ValueError(f"need 0 <= cer_ratio < uncer_ratio <= 1, got {cer_ratio}, {uncer_ratio}")
        if not isinstance(max_passes, int) or max_passes < 1:
            raise ValueError(f"max_passes must be a positive integer, got {max_passes!r}")
        self.strategy, self.K, self.round_train = strategy, K, round_train
        self.cer_ratio, self.uncer_ratio, self.max_passes = cer_ratio, uncer_ratio, max_passes

    # -- a round -------------------------------------------------------------------------------
    def exhausted(self) -> bool:
        return not self.unlabelled and not self.pending

    def next_batch(self, candidates: int = 1) -> list[str]:
        """Ids to detect this round: pending first (``topk_v2``), then new ones; ``K`` in all.

        With ``candidates`` > 1, ``candidates * K`` ids in all, of which the caller keeps ``K`` (pending
        ones first) and passes the new ones it chose to :meth:`prefer`.
        """
        take = self.pending[: self.K]
        return take + self.unlabelled[: candidates * self.K - len(take)]

    def prefer(self, ids: Sequence[str]) -> None:
        """Move unlabelled ``ids`` to the front of the queue, in the given order: the next batch."""
        chosen = set(ids)
        unknown = chosen - set(self.unlabelled)
        if unknown:
            raise ValueError(f"not in the unlabelled queue: {sorted(unknown)[:5]}")
        self.unlabelled = list(ids) + [i for i in self.unlabelled if i not in chosen]

    def apply(self, results: Sequence[MergeResult]) -> list[Record]:
        """Move the detected images between the sets; return the records to train on this round.
        :attr:`fates` then says, for every image of the round, what became of it and why.

        Args:
            results: one merge result per id of :meth:`next_batch`, in that order.
        """
        batch = self.next_batch()
        if [r.sa.image_id for r in results] != batch:
            raise ValueError("merge results do not match next_batch() (order or ids differ)")
        n_pending = min(len(self.pending), self.K)
        self.pending = self.pending[n_pending:]
        self.unlabelled = self.unlabelled[len(batch) - n_pending :]
        results = [self._charge(r) for r in results]
        for r in results:
            self.sl_flags[r.sa.image_id] = r.sl.tolist()
            self.passes[r.sa.image_id] = self.passes.get(r.sa.image_id, 0) + 1
        round_cost = RoundCost()
        round_cost.add(results)
        self.cost.add(results)
        replay = self._replay(self.K) if self.round_train == "replay" else None  # the pool before this round
        self.fates = {}
        train, info = self._STRATEGY_RULES[self.strategy](self, results)
        if replay is None:  # "pool": the whole label pool as it is after this round's moves
            own = {r.image_id for r in train}
            replay = [r for i, r in sorted(self.labelled.items()) if i not in own]
        train = train + replay
        self.round += 1
        self.rounds.append(
            {
                "round": self.round,
                **round_cost.as_dict(),
                **info,
                "labelled_images": len(self.labelled),
                "train_images": len(train),
            }
        )
        self.check()
        return train

    def _charge(self, r: MergeResult) -> MergeResult:
        """``r`` as the human pays for it. ``topk_v2`` detects an uncertain image again while its GT
        record is untouched, but the human annotated the whole image on its first pass (drew,
        moved or confirmed every box): a later pass is reviewed again, and nothing is drawn twice."""
        if not self.passes.get(r.sa.image_id):
            return r
        return dataclasses.replace(r, drawn=0, moved=None if r.moved is None else np.zeros_like(r.moved))

    def _replay(self, n: int) -> list[Record]:
        """``n`` random records of the label pool (as it is before this round's additions)."""
        ids = sorted(self.labelled)
        pick = self.rng.choice(len(ids), size=min(n, len(ids)), replace=False)
        return [self.labelled[ids[i]] for i in sorted(pick)]

    def _v1(self, results):
        for r in results:
            self.detected[r.sa.image_id] = (r.sa, r.ratio)
            self.fates[r.sa.image_id] = "v1: trained on this round only; the label pool is unchanged"
        return [r.sa for r in results], {"images_joined": 0, "images_held": len(results)}

    def _v1_plus(self, results):
        for r in results:
            self._label(r.sa, "v1+: every detected image joins with its SA annotation")
        return [r.sa for r in results], {"images_joined": len(results), "images_held": 0}

    def _random(self, results):
        for r in results:
            self._label(r.sa, "random: the next image of the seeded queue; the human drew every box")
        return [r.sa for r in results], {"images_joined": len(results), "images_held": 0}

    def _topk_v1(self, results):
        # ASM_core: everything detected so far is ranked by AL ratio; every round (the first
        # included) the K lowest join the label pool and the K highest are trained on now (with
        # fewer than 2K ranked, an image can be both). A joined image leaves the ranking; ASM_core
        # keeps it there, where ranking it again cannot change the pool.
        for r in results:
            self.detected[r.sa.image_id] = (r.sa, r.ratio)
        ranked = sorted(self.detected, key=lambda i: (self.detected[i][1], i))
        uncertain = ranked[::-1][: self.K]
        train = [self.detected[i][0] for i in uncertain]
        certain = ranked[: self.K]
        for i in certain:
            self._label(self.detected.pop(i)[0], "topk_v1: among the K lowest AL ratios detected so far")
        for i in uncertain:
            self.fates.setdefault(i, "topk_v1: among the K highest AL ratios: trained on now, ranked again")
        for r in results:
            self.fates.setdefault(
                r.sa.image_id, "topk_v1: between the two top-K groups: ranked again next round"
            )
        return train, {"images_joined": len(certain), "images_held": len(uncertain)}

    def _topk_v2(self, results):
        uncertain, joined = [], 0
        for r in results:
            i, last = r.sa.image_id, self.passes[r.sa.image_id] >= self.max_passes
            if r.ratio <= self.cer_ratio:
                self._label(r.sa, f"topk_v2: AL ratio {r.ratio:.3f} <= cer_ratio {self.cer_ratio}")
                joined += 1
            elif last:  # detected max_passes times: the human's labels of this pass, no more passes
                self._label(
                    r.sa,
                    f"topk_v2: pass {self.passes[i]} of --max-passes {self.max_passes}: "
                    "the human labels it (AL)",
                )
                joined += 1
                if r.ratio >= self.uncer_ratio:
                    uncertain.append(r.sa)
            elif r.ratio >= self.uncer_ratio:
                uncertain.append(r.sa)
                self.pending.append(i)
                self.fates[i] = (
                    f"topk_v2: AL ratio {r.ratio:.3f} >= uncer_ratio {self.uncer_ratio}: trained on "
                    f"now, detected again next round (pass {self.passes[i]} of {self.max_passes})"
                )
            else:
                self.unlabelled.append(i)
                self.fates[i] = (
                    f"topk_v2: AL ratio {r.ratio:.3f} between cer_ratio and uncer_ratio: back to the "
                    f"end of the queue (pass {self.passes[i]} of {self.max_passes})"
                )
        return uncertain, {"images_joined": joined, "images_held": len(uncertain)}

    _STRATEGY_RULES = {
        "v1": _v1,
        "v1+": _v1_plus,
        "topk_v1": _topk_v1,
        "topk_v2": _topk_v2,
        "random": _random,
    }

    def _label(self, record: Record, reason: str) -> None:
        if record.image_id in self.labelled:
            raise ValueError(
                f"{record.image_id} is already in the label pool; refusing to replace its record"
            )
        self.labelled[record.image_id] = record
        self.fates[record.image_id] = reason

    def hold_out(self, ids: Sequence[str], why: str = "held out for evaluation") -> None:
        """Move labelled ``ids`` out of the label pool into :attr:`held_out`: the human's labels,
        kept to evaluate on and never trained on."""
        for i in ids:
            if i not in self.labelled:
                raise ValueError(f"image {i} is not in the label pool: only labelled images are held out")
            self.held_out[i] = self.labelled.pop(i)
            self.fates[i] = why

    def pool_boxes(self) -> tuple[int, int]:
        """Boxes in the label pool, and how many of them the human confirmed from the model (SL)
        rather than drew (the initial pool and every AL box, moved ones included)."""
        total = sum(len(r) for r in self.labelled.values())
        confirmed = sum(sum(self.sl_flags.get(i, ())) for i in self.labelled)
        return total, confirmed

    # -- checks and persistence -----------------------------------------------------------------
    def check(self) -> None:
        """Every image in exactly one set (raises ``AssertionError`` naming the problem)."""
        sets = {
            "labelled": list(self.labelled),
            "unlabelled": self.unlabelled,
            "pending": self.pending,
            "detected": list(self.detected),
            "held out": list(self.held_out),
        }
        seen: dict[str, str] = {}
        for name, ids in sets.items():
            for i in ids:
                assert i not in seen, f"image {i} is in both {seen[i]} and {name}"
                seen[i] = name
        missing = set(self.all_ids) - set(seen)
        extra = set(seen) - set(self.all_ids)
        assert not missing and not extra, f"lost images {sorted(missing)[:5]}, unknown {sorted(extra)[:5]}"

    def digest(self) -> str:
        """A short hash of the pools, the pending queue and the detected images (with their ratios)."""
        pools = [
            sorted(self.labelled),
            self.unlabelled,
            self.pending,
            sorted((k, q) for k, (_, q) in self.detected.items()),
        ] + ([sorted(self.held_out)] if self.held_out else [])  # a run without held-out images: as before
        return hashlib.sha1(json.dumps(pools).encode()).hexdigest()[:16]

    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "K": self.K,
            "all_ids": self.all_ids,
            "labelled": pack_records(list(self.labelled.values())),
            "unlabelled": self.unlabelled,
            "pending": self.pending,
            "detected": pack_records([r for r, _ in self.detected.values()]),
            "detected_ratio": [ratio for _, ratio in self.detected.values()],
            "sl_flags": self.sl_flags,
            "round": self.round,
            "cost": self.cost.as_dict(),
            "rounds": self.rounds,
            "cer_ratio": self.cer_ratio,
            "uncer_ratio": self.uncer_ratio,
            "max_passes": self.max_passes,
            "passes": self.passes,
            "rng": _rng_to_plain(self.rng),
            "round_train": self.round_train,
            "held_for_evaluation": pack_records(list(self.held_out.values())),
        }

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> ASMState:
        cost = RoundCost(**{k: v for k, v in s["cost"].items() if k != "precision"})
        if isinstance(s["labelled"], list):  # checkpoint format 2: one dict per record
            labelled = [record_from_dict(r) for r in s["labelled"]]
            detected = [(record_from_dict(r), float(ratio)) for r, ratio in s["detected"]]
        else:
            labelled = unpack_records(s["labelled"])
            detected = list(zip(unpack_records(s["detected"]), map(float, s["detected_ratio"])))
        state = cls(
            s["strategy"],
            int(s["K"]),
            list(s["all_ids"]),
            {r.image_id: r for r in labelled},
            list(s["unlabelled"]),
            list(s["pending"]),
            {r.image_id: (r, q) for r, q in detected},
            dict(s["sl_flags"]),
            int(s["round"]),
            cost,
            list(s["rounds"]),
            float(s["cer_ratio"]),
            float(s["uncer_ratio"]),
            int(s["max_passes"]),
            dict(s["passes"]),
            _rng_from_plain(s["rng"]),
            s.get("round_train", "replay"),
        )
        if s.get("held_for_evaluation"):  # a checkpoint from before --eval-from-labels has none
            state.held_out = {r.image_id: r for r in unpack_records(s["held_for_evaluation"])}
        state.check()
        return state


def _rng_to_plain(rng: np.random.Generator) -> dict[str, Any]:
    # PCG64's 128-bit state/inc as decimal strings: plain data that weights_only loading accepts
    st = rng.bit_generator.state
    return {
        "bit_generator": st["bit_generator"],
        "state": str(st["state"]["state"]),
        "inc": str(st["state"]["inc"]),
        "has_uint32": st["has_uint32"],
        "uinteger": st["uinteger"],
    }


def _rng_from_plain(d: dict[str, Any]) -> np.random.Generator:
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = {
        "bit_generator": d["bit_generator"],
        "state": {"state": int(d["state"]), "inc": int(d["inc"])},
        "has_uint32": d["has_uint32"],
        "uinteger": d["uinteger"],
    }
    return rng
