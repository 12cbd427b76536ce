import numpy as np
import pytest

from asm.samplers import SAMPLERS, BaseSampler, load_sampler

POOL = [f"img{k:02d}" for k in range(20)]


class FirstIdsSampler(BaseSampler):
    """A user plug-in: prefers the smallest ids."""

    def rank(self, candidates, **context):
        return [-int(i[3:]) for i in candidates]


def _context(seed=0):
    rng = np.random.default_rng(seed)
    probs = {}
    for i in POOL:
        n = int(rng.integers(0, 4))
        p = rng.random((n, 4))
        probs[i] = p / p.sum(1, keepdims=True)
    return {
        "probs": probs,
        "losses": {i: float(rng.random()) for i in POOL},
        "ratios": {i: float(rng.choice([0.0, 0.5, 1.0])) for i in POOL},
    }


def _samplers():
    built = [(name, cls) for name, cls in SAMPLERS.items()]
    built.append(load_sampler("tests.test_samplers:FirstIdsSampler"))
    return built


@pytest.mark.parametrize("name, cls", _samplers(), ids=lambda v: v if isinstance(v, str) else "")
def test_contract(name, cls):
    ctx = _context()
    sampler = cls(name, POOL, seed=3)
    chosen = ["img00", "img05"]
    batch = sampler.select_batch(7, chosen, **ctx)
    assert (
        len(batch) == 7 and len(set(batch)) == 7 and not set(batch) & set(chosen) and set(batch) <= set(POOL)
    )
    assert cls(name, POOL, seed=3).select_batch(7, chosen, **ctx) == batch  # deterministic
    rest = sampler.select_batch(100, chosen + batch, **ctx)
    assert sorted(rest + batch + chosen) == sorted(POOL)  # pool smaller than n: all that is left
    assert sampler.select_batch(5, POOL, **ctx) == [] and sampler.select_batch(0, [], **ctx) == []
    for bad, err in ((-1, ValueError), (2.5, TypeError), ("3", TypeError), (True, TypeError)):
        with pytest.raises(err, match="n_sample"):
            sampler.select_batch(bad, [], **ctx)


def test_random_differs_by_seed_and_uncertainty_ranks_correctly():
    a = SAMPLERS["random"]("random", POOL, seed=0).select_batch(10, [])
    b = SAMPLERS["random"]("random", POOL, seed=1).select_batch(10, [])
    assert a != b
    probs = {
        "sure": np.array([[0.01, 0.98, 0.01]]),
        "torn": np.array([[0.34, 0.33, 0.33]]),
        "empty": np.zeros((0, 3)),
        "mixed": np.array([[0.0, 1.0, 0.0], [0.2, 0.5, 0.3]]),
    }
    ids = list(probs)
    for name in ("least_confidence", "margin", "entropy"):
        order = SAMPLERS[name](name, ids).select_batch(4, [], probs=probs)
        assert order[0] == "torn" and order[-1] == "empty", name
    by_sum = SAMPLERS["entropy"]("entropy", ids, aggregate="sum").select_batch(4, [], probs=probs)
    by_mean = SAMPLERS["entropy"]("entropy", ids, aggregate="mean").select_batch(4, [], probs=probs)
    assert by_sum.index("mixed") < by_sum.index("sure") and by_mean[-1] == "empty"
    with pytest.raises(ValueError, match="needs probs"):
        SAMPLERS["entropy"]("entropy", ids).select_batch(1, [])


def test_loss_and_ratio_rank_highest_first_and_bad_specs():
    assert SAMPLERS["loss"]("loss", ["a", "b"]).select_batch(1, [], losses={"a": 0.1, "b": 2.0}) == ["b"]
    assert SAMPLERS["al_ratio"]("al_ratio", ["a", "b"]).select_batch(2, [], ratios={"a": 1.0, "b": 0.0}) == [
        "a",
        "b",
    ]
    with pytest.raises(ValueError, match="unknown sampler"):
        load_sampler("nope")
    with pytest.raises(ValueError, match="cannot import"):
        load_sampler("no_such_module:X")
    with pytest.raises(ValueError, match="not a subclass"):
        load_sampler("numpy:ndarray")
    with pytest.raises(ValueError, match="duplicate"):
        BaseSampler("x", ["a", "a"])


@pytest.mark.parametrize(
    "name, aggregate, expected",
    [
        # image a: boxes [0.6, 0.3, 0.1] and [0.9, 0.05, 0.05]; image b: one box [0.5, 0.5, 0.0]
        ("least_confidence", "max", {"a": 0.4, "b": 0.5}),
        ("least_confidence", "sum", {"a": 0.5, "b": 0.5}),
        ("margin", "max", {"a": 0.7, "b": 1.0}),  # 1 - (top - second)
        ("margin", "mean", {"a": (0.7 + 0.15) / 2, "b": 1.0}),
        (
            "entropy",
            "max",
            {"a": -(0.6 * np.log(0.6) + 0.3 * np.log(0.3) + 0.1 * np.log(0.1)), "b": np.log(2)},
        ),
    ],
)
def test_uncertainty_scores_by_hand(name, aggregate, expected):
    probs = {"a": [[0.6, 0.3, 0.1], [0.9, 0.05, 0.05]], "b": [[0.5, 0.5, 0.0]], "c": np.zeros((0, 3))}
    sampler = SAMPLERS[name](name, ["a", "b", "c"], aggregate=aggregate)
    np.testing.assert_allclose(
        sampler.rank(["a", "b", "c"], probs=probs), [expected["a"], expected["b"], 0.0]
    )


def test_a_user_sampler_is_named_by_its_module_and_class_at_the_first_colon():
    name, cls = load_sampler("tests.test_samplers:FirstIdsSampler")
    assert name == "FirstIdsSampler" and cls.__module__ == "tests.test_samplers"
    with pytest.raises(
        ValueError, match="module 'tests.test_samplers' has no attribute 'FirstIdsSampler:extra'"
    ):
        load_sampler("tests.test_samplers:FirstIdsSampler:extra")
