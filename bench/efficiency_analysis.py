"""The efficiency study's analysis (``bench/asm_efficiency.py`` runs it; other benches and the tests
import it): curves in, figures out, no training.

A *curve* is one run of one method and seed: ``{"method", "seed", "points"}``, one point per round
with ``human_drawn_boxes``, ``images``, ``AP50`` (and per-class ``AP50/<class>``), the human's review
counts and the certain boxes' fates.

Protocol v3 reads every round of the default method against random of the same seed
(:func:`readings`), judges each reading against the training noise of its own round
(:func:`noise_per_round`: the same labels trained again with another training seed), and sums the
readings up with a bootstrap interval (:func:`bootstrap_ci`, :func:`versus_random_v3`).
"""

from __future__ import annotations

import argparse

import numpy as np

SAMPLER_METHODS = {"al_curve/random": "random", "al_curve/entropy": "entropy"}  # another trainer
DEFAULT_METHOD = "v1+"  # train_asm_one.py's own defaults
BASELINE = "random"  # the same trainer, every box drawn
# A method again with another training seed: the same labels round by round, another batch order (and,
# without a shared round 0, another initialisation). |AP(method) - AP(reseeded)| is the training noise
# that any change of labels also brings.
NOISE = "random/reseed"
RESEEDED = {NOISE: BASELINE, "v1+/reseed": DEFAULT_METHOD}  # reseeded run -> the method it repeats
NOISE_SEED_OFFSET = 1000
ASM_METHODS = {  # name -> train_asm_one.py flags besides the shared protocol
    "random": ["--strategy", "random"],
    "v1+": [],
    "v1+/replay": ["--round-train", "replay"],
    "topk_v2": ["--strategy", "topk_v2"],
    "v1+/gate": ["--mining-gate", "0.5"],
    "v1+/cand": ["--candidates", "4"],
    "v1+/fixed": ["--certain-precision", "none"],  # one certain threshold (--certain-thre) for all
    "v1+/calib": ["--certain-precision", "0.85"],  # per-class thresholds calibrated on the validation set
    NOISE: ["--strategy", "random"],  # and --train-seed seed + NOISE_SEED_OFFSET (asm_curve)
    "v1+/reseed": [],  # the default again, --train-seed seed + NOISE_SEED_OFFSET
}
LEVELS = (0.9, 0.95, 1.0)
CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 10000


def with_cost(curves: list[dict], review_cost: float, move_cost: float) -> None:
    for c in curves:
        for p in c["points"]:
            p["cost"] = round(
                p["human_drawn_boxes"] + review_cost * p["reviewed"] + move_cost * p["moved"], 2
            )


def first_reaching(points: list[dict], key: str, target: float, x: str = "human_drawn_boxes") -> float | None:
    """``x`` at the first point whose ``key`` reaches ``target`` (None if none does)."""
    return next((p[x] for p in points if p.get(key) is not None and p[key] >= target - 1e-12), None)


def _interp(points: list[dict], x: str, key: str, at: np.ndarray) -> np.ndarray:
    """``key`` at ``at`` (linear between points, flat beyond them): for the area under a curve."""
    return np.interp(at, [p[x] for p in points], [p[key] for p in points])


def step_index(points: list[dict], x: str, at: float) -> int | None:
    """Index of the last point whose ``x`` is at or below ``at`` (step interpolation: what the curve
    had measured with no more than that budget), or None outside the curve: before its first point,
    and past its last (a budget the curve never had)."""
    reached = [i for i, p in enumerate(points) if p[x] <= at + 1e-9]
    return reached[-1] if reached and at <= points[-1][x] + 1e-9 else None


def analyse(curves: list[dict], total_boxes: int, methods: list[str], key: str = "AP50") -> dict:
    """For one metric (``AP50`` or ``AP50/<class>``): the supervised value, box and cost fractions
    to reach 90/95/100% of it, the area under the curve, and each ASM method against random."""
    bounds = {c["seed"]: c["points"][-1][key] for c in curves if c["method"] == "supervised"}
    shared = float(np.mean(list(bounds.values()))) if bounds else None
    seeds = {c["seed"] for c in curves}
    sup = {s: bounds.get(s, shared) for s in seeds} if bounds else {}  # a seed without its own: the mean
    result = {
        "supervised": _mean_std(list(bounds.values())),
        "box_fraction": {},
        "cost_fraction": {},
        "auc": {},
        "vs_random": {},
    }
    for m in methods:
        runs = [c for c in curves if c["method"] == m and c["seed"] in sup]
        if not runs:
            continue
        for name, x in (("box_fraction", "human_drawn_boxes"), ("cost_fraction", "cost")):
            result[name][m] = {}
            for level in LEVELS:
                reached = [first_reaching(c["points"], key, level * sup[c["seed"]], x) for c in runs]
                # a level counts as reached only when every seed reaches it; the mean over seeds then
                frac = None if None in reached else round(float(np.mean(reached)) / total_boxes, 4)
                result[name][m][f"{round(level * 100)}pct"] = frac
        # mean AP over the budget from the shared initial pool to every box drawn (flat past a curve's end)
        start = min(c["points"][0]["human_drawn_boxes"] for c in runs)
        grid = np.linspace(start, total_boxes, 201)
        result["auc"][m] = round(
            float(np.mean([_interp(c["points"], "human_drawn_boxes", key, grid).mean() for c in runs])), 4
        )
    randoms = {c["seed"]: c["points"] for c in curves if c["method"] == BASELINE}
    noise = training_noise([c for c in curves if c["method"] == NOISE], randoms, key)
    result["training_noise"] = noise
    for m in (m for m in methods if m in ASM_METHODS and m != BASELINE and m not in RESEEDED):
        runs = [c for c in curves if c["method"] == m and c["seed"] in randoms]
        result["vs_random"][m] = versus_random(runs, randoms, key, noise)
    return result


def training_noise(runs: list[dict], randoms: dict[int, list[dict]], key: str = "AP50") -> dict | None:
    """How far two trainings on the same labels land apart: ``|AP(random) - AP(random/reseed)|`` at
    each round after round 1 (the rounds the margins are read at), over the seeds. ``mean`` is the
    noise floor printed beside every margin; ``max`` the largest gap training noise alone made;
    ``per_round`` the mean gap of each round (noise shrinks as the models near their plateau)."""
    by_round: dict[int, list[float]] = {}
    for c in (c for c in runs if c["seed"] in randoms):
        for k, (p, q) in enumerate(list(zip(c["points"], randoms[c["seed"]]))[2:], start=2):
            by_round.setdefault(k, []).append(abs(p[key] - q[key]))
    gaps = [g for v in by_round.values() for g in v]
    if not gaps:
        return None
    return {
        "mean": round(float(np.mean(gaps)), 4),
        "max": round(float(np.max(gaps)), 4),
        "n": len(gaps),
        "per_round": {k: round(float(np.mean(v)), 4) for k, v in sorted(by_round.items())},
    }


def versus_random(
    runs: list[dict], randoms: dict[int, list[dict]], key: str = "AP50", noise: dict | None = None
) -> dict:
    """One ASM method's curves against random's of the same seed after round 1 (the earlier summary,
    beside :func:`versus_random_v3`): at each of random's points within the ASM curve's range, ASM's
    last point with no more drawn boxes (:func:`step_index`); ``margins_by_lead`` by how many rounds
    ASM's point is ahead (lead 0: the same round); ``noise`` from :func:`training_noise`."""
    boxes: dict[int, list[float]] = {}
    images: dict[int, list[float]] = {}
    by_lead: dict[int, list[float]] = {}
    per_seed, round1, same_labels = {}, [], []
    for c in runs:
        ref = randoms[c["seed"]]
        seed_boxes = []
        for k, r in enumerate(ref[1:], start=1):  # after the shared round 0
            j = step_index(c["points"], "human_drawn_boxes", r["human_drawn_boxes"])
            if j is not None:
                margin = c["points"][j][key] - r[key]
                boxes.setdefault(k, []).append(margin)
                if k >= 2:
                    seed_boxes.append(margin)
                    by_lead.setdefault(j - k, []).append(margin)
            if k < len(c["points"]):
                images.setdefault(k, []).append(c["points"][k][key] - r[key])
        if len(c["points"]) > 1 and len(ref) > 1:
            round1.append(abs(c["points"][1][key] - ref[1][key]))
            same_labels.append(c["points"][1].get("confirmed", 0) == 0)
        per_seed[c["seed"]] = {
            "min_margin_ap50": round(min(seed_boxes), 4) if seed_boxes else None,
            "at_or_above_after_round1": bool(seed_boxes) and min(seed_boxes) >= -1e-9,
        }
    late_boxes = [v for k, vs in boxes.items() if k >= 2 for v in vs]
    late_images = [v for k, vs in images.items() if k >= 2 for v in vs]
    worst = round(min(late_boxes), 4) if late_boxes else None
    return {
        "min_margin_ap50": worst,
        "at_or_above_after_round1": bool(per_seed)
        and all(s["at_or_above_after_round1"] for s in per_seed.values()),
        "margin_at_equal_images": round(min(late_images), 4) if late_images else None,
        "noise_floor_ap50": noise["mean"] if noise else None,
        "noise_max_ap50": noise["max"] if noise else None,
        "within_noise_after_round1": None
        if noise is None or worst is None
        else worst >= -noise["max"] - 1e-9,
        "above_below_equal": _signs(late_boxes),
        "margins_by_lead": {
            lead: {"n": len(v), "min": round(min(v), 4), "above_below_equal": _signs(v)}
            for lead, v in sorted(by_lead.items())
        },
        "round1_gap_ap50": round(float(np.mean(round1)), 4) if round1 else None,
        "same_labels_round1": bool(same_labels) and all(same_labels),
        "mean_margin_per_round": {k: round(float(np.mean(v)), 4) for k, v in sorted(boxes.items())},
        "mean_margin_at_equal_images_per_round": {
            k: round(float(np.mean(v)), 4) for k, v in sorted(images.items())
        },
        "per_seed": per_seed,
    }


def _signs(margins: list[float]) -> list[int]:
    """How many margins are above, below and equal to zero (equal: within 1e-9)."""
    signs = [int(np.sign(v)) if abs(v) > 1e-9 else 0 for v in margins]
    return [signs.count(1), signs.count(-1), signs.count(0)]


def default_method(methods: list[str]) -> str:
    """The method that runs ``train_asm_one.py``'s defaults: ``v1+`` when it ran, else the one whose
    flags leave every ASM option at its default (``v1+/fixed`` or ``v1+/calib``)."""
    from tools.loop.options import add_asm_args

    if DEFAULT_METHOD in methods:
        return DEFAULT_METHOD
    parser = argparse.ArgumentParser()
    add_asm_args(parser)
    defaults = vars(parser.parse_args([]))
    same = [m for m in methods if m in ASM_METHODS and vars(parser.parse_args(ASM_METHODS[m])) == defaults]
    return same[0] if same else DEFAULT_METHOD


def sl_precision(curves: list[dict], methods: list[str]) -> dict:
    """Per ASM method: the share of its certain boxes that were right, over every round and seed
    (``overall``, ``iou80``: matched a GT box of their class at IoU >= 0.8; ``iou50``: at >= 0.5),
    per round (mean over the seeds that had certain boxes), what the others were (``errors``: ``loose``,
    right class at IoU in [0.5, 0.8); ``wrong_class``; ``no_object``), and the share of the new images'
    boxes confirmed rather than drawn (``confirmed_share``)."""
    out = {}
    for m in (m for m in methods if m in ASM_METHODS and m != BASELINE and m not in RESEEDED):
        runs = [c for c in curves if c["method"] == m]
        conf = sum(p.get("confirmed", 0) for c in runs for p in c["points"])
        certain = sum(p.get("certain", 0) for c in runs for p in c["points"])
        matched = sum(p.get("matched", 0) for c in runs for p in c["points"])
        drawn = sum(p.get("round_drawn", 0) for c in runs for p in c["points"][1:])
        by_round: dict[int, list[float]] = {}
        for c in runs:
            for k, p in enumerate(c["points"][1:], start=1):
                if p.get("precision") is not None:
                    by_round.setdefault(k, []).append(p["precision"])
        loose = sum(p.get("loose", 0) for c in runs for p in c["points"])
        wrong = sum(p.get("wrong_class", 0) for c in runs for p in c["points"])
        out[m] = {
            "overall": round(matched / certain, 4) if certain else None,
            "iou80": round(matched / certain, 4) if certain else None,
            "iou50": round((matched + loose) / certain, 4) if certain else None,
            "errors": {"loose": loose, "wrong_class": wrong, "no_object": certain - matched - loose - wrong},
            "per_round": {k: round(float(np.mean(v)), 4) for k, v in sorted(by_round.items())},
            "confirmed": conf,
            "confirmed_share": round(conf / (conf + drawn), 4) if conf + drawn else 0.0,
        }
    return out


def round0_identical(curves: list[dict], tol: float = 1e-6) -> dict[int, bool]:
    """Per seed: whether every same-trainer method's round 0 (the model of the shared initial pool)
    has the same AP50 within ``tol``."""
    by_seed: dict[int, list[float]] = {}
    for c in curves:
        if c["method"] in ASM_METHODS and c["method"] not in RESEEDED and c["points"]:
            by_seed.setdefault(c["seed"], []).append(c["points"][0]["AP50"])
    return {seed: max(aps) - min(aps) <= tol for seed, aps in sorted(by_seed.items())}


def _mean_std(values: list[float]) -> dict | None:
    return (
        {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4)} if values else None
    )


# --- protocol v3 ---------------------------------------------------------------------------------------


def noise_per_round(curves: list[dict], key: str = "AP50") -> dict[int, dict]:
    """The training noise of each round: ``|AP(method) - AP(method reseeded)|`` of every reseeded run
    (:data:`RESEEDED`) against its method's run of the same seed, at every round both measured after
    the shared round 0. ``{round: {mean, max, n}}``."""
    runs = {(c["method"], c["seed"]): c["points"] for c in curves}
    gaps: dict[int, list[float]] = {}
    for c in curves:
        of = RESEEDED.get(c["method"])
        if of is None or (of, c["seed"]) not in runs:
            continue
        for k, (p, q) in enumerate(zip(c["points"], runs[(of, c["seed"])])):
            if k >= 1:
                gaps.setdefault(k, []).append(abs(p[key] - q[key]))
    return {
        k: {"mean": round(float(np.mean(v)), 4), "max": round(float(np.max(v)), 4), "n": len(v)}
        for k, v in sorted(gaps.items())
    }


def reading(point: dict, random_points: list[dict], key: str = "AP50") -> dict | None:
    """One ASM point against random's curve of the same seed: random's first point at or above the
    ASM point's drawn boxes (random never gets fewer boxes: the comparison cannot favour ASM) and the
    straight line between random's two neighbours. None when random has no point on one side of
    the ASM point's boxes (a reading needs random on both sides)."""
    boxes = point["human_drawn_boxes"]
    above = next((r for r in random_points if r["human_drawn_boxes"] >= boxes - 1e-9), None)
    below = next((r for r in reversed(random_points) if r["human_drawn_boxes"] <= boxes + 1e-9), None)
    if above is None or below is None:
        return None
    lo, hi = below["human_drawn_boxes"], above["human_drawn_boxes"]
    t = 0.0 if hi == lo else (boxes - lo) / (hi - lo)
    interpolated = below[key] + t * (above[key] - below[key])
    return {
        "asm_boxes": boxes,
        "random_boxes": hi,
        "random_ap50_at_boxes": round(above[key], 4),
        "margin_ap50": round(point[key] - above[key], 4),
        "random_ap50_interpolated": round(interpolated, 4),
        "margin_interpolated_ap50": round(point[key] - interpolated, 4),
    }


def verdict(margin: float, noise_max: float | None) -> str:
    """``above_noise``, ``below_noise`` or ``within_noise``: the margin against the largest gap that
    training noise alone made at its round (``no_noise``: that round's noise was not measured)."""
    if noise_max is None:
        return "no_noise"
    if margin > noise_max + 1e-9:
        return "above_noise"
    if margin < -noise_max - 1e-9:
        return "below_noise"
    return "within_noise"


def readings(curves: list[dict], method: str, noise: dict[int, dict], key: str = "AP50") -> tuple[list, list]:
    """Every round after the shared round 0 of ``method``'s curves, read against random of its seed
    (:func:`reading`) and judged against the noise of its own round. Returns the readings and the
    refused points (random on one side only), each with its seed and round."""
    randoms = {c["seed"]: c["points"] for c in curves if c["method"] == BASELINE}
    taken, refused = [], []
    for c in (c for c in curves if c["method"] == method and c["seed"] in randoms):
        for k, p in enumerate(c["points"][1:], start=1):
            r = reading(p, randoms[c["seed"]], key)
            where = {"seed": c["seed"], "method": method, "asm_round": k}
            if r is None:
                refused.append(
                    {**where, "asm_boxes": p["human_drawn_boxes"], "why": "random on one side only"}
                )
                continue
            noise_max = noise.get(k, {}).get("max")
            taken.append(
                {
                    **where,
                    **r,
                    "noise_max_at_round": noise_max,
                    "verdict": verdict(r["margin_ap50"], noise_max),
                }
            )
    return taken, refused


def bootstrap_ci(
    values: list[float], level: float = CI_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> list[float] | None:
    """The percentile bootstrap interval of the mean of ``values``: ``resamples`` draws of
    ``len(values)`` values with replacement (seeded), the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of their means. None without values."""
    if not values:
        return None
    v = np.asarray(values, np.float64)
    means = v[np.random.default_rng(seed).integers(0, len(v), (resamples, len(v)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [round(float(lo), 4), round(float(hi), 4)]


def versus_random_v3(taken: list[dict]) -> dict:
    """One method's readings summed up: the mean margin over seeds x readings with its bootstrap
    interval, the mean margin against random's interpolated neighbours, and how many readings lie
    above, within and below the noise of their round."""
    margins = [r["margin_ap50"] for r in taken]
    counts = {
        v: sum(r["verdict"] == v for r in taken) for v in ("above_noise", "within_noise", "below_noise")
    }
    return {
        "n": len(taken),
        "mean_margin_ap50": round(float(np.mean(margins)), 4) if margins else None,
        "ci95": bootstrap_ci(margins),
        "mean_margin_interpolated_ap50": round(
            float(np.mean([r["margin_interpolated_ap50"] for r in taken])), 4
        )
        if taken
        else None,
        **counts,
        "no_noise": sum(r["verdict"] == "no_noise" for r in taken),
        "readings_per_seed": {
            s: sum(r["seed"] == s for r in taken) for s in sorted({r["seed"] for r in taken})
        },
    }


def label_damage(curves: list[dict], method: str, key: str = "AP50") -> dict | None:
    """What the confirmed boxes cost: per seed, random's AP at the method's last round minus the
    method's, where both runs end on the same images (``final_images``, a digest of the label pool's
    image ids): random then is the same images trained by the same trainer, seed and epochs with their
    true boxes. Positive: the confirmed boxes cost AP. None when no seed qualifies."""
    randoms = {c["seed"]: c for c in curves if c["method"] == BASELINE}
    gaps, other = {}, []
    for c in (c for c in curves if c["method"] == method and c["seed"] in randoms):
        r = randoms[c["seed"]]
        k = len(c["points"]) - 1
        same = c.get("final_images") is not None and c.get("final_images") == r.get("final_images")
        if same and len(r["points"]) == k + 1:
            gaps[c["seed"]] = round(r["points"][k][key] - c["points"][k][key], 4)
        else:
            other.append(c["seed"])
    if not gaps:
        return None
    return {
        "mean": round(float(np.mean(list(gaps.values()))), 4),
        "per_seed": gaps,
        "n": len(gaps),
        "seeds_on_other_images": other,
    }


def supervised_bound(curves: list[dict], key: str = "AP50") -> dict | None:
    """The fully supervised AP over its training seeds: ``{mean, std, n}``."""
    values = [c["points"][-1][key] for c in curves if c["method"] == "supervised"]
    if not values:
        return None
    return {
        "mean": round(float(np.mean(values)), 4),
        "std": round(float(np.std(values)), 4),
        "n": len(values),
    }


def study_v3(curves: list[dict], methods: list[str]) -> dict:
    """Protocol v3's figures: the noise of every round, every reading of every ASM method against
    random, each method's summary against random, and what its confirmed boxes cost."""
    noise = noise_per_round(curves)
    compared = [m for m in methods if m in ASM_METHODS and m != BASELINE and m not in RESEEDED]
    taken, refused = [], []
    for m in compared:
        t, r = readings(curves, m, noise)
        taken, refused = taken + t, refused + r
    return {
        "noise_per_round": noise,
        "readings": taken,
        "refused_readings": refused,
        "vs_random": {m: versus_random_v3([r for r in taken if r["method"] == m]) for m in compared},
        "label_damage_ap50": {m: label_damage(curves, m) for m in compared},
    }
