import numpy as np
import pytest

from asm.merge import MergeResult
from asm.pools import ASMState, RoundCost, image_count, initial_pool
from datasets.records import Record, record_to_dict
from tests.helpers import plain_state


def _records(n):
    return [
        Record(f"i{k:03d}", f"i{k}.jpg", 50, 50, [[0, 0, 10, 10]] * (k % 3), [1] * (k % 3)) for k in range(n)
    ]


def _results(state, ratios, oracle):
    out = []
    for i, q in zip(state.next_batch(), ratios):
        gt = oracle[i]
        out.append(
            MergeResult(
                gt.select(np.ones(len(gt), bool)), np.zeros(len(gt), bool), len(gt), 0, 0, 0, 0, 0, 0, q
            )
        )
    return out


def _run_round(state, oracle, ratios):
    batch = state.next_batch()
    train = state.apply(_results(state, ratios(len(batch)), oracle))
    state.check()
    return batch, train


@pytest.mark.parametrize("strategy", ["v1", "v1+", "topk_v1", "topk_v2"])
def test_invariant_every_round_and_state_round_trip(strategy):
    records = _records(60)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start(strategy, 8, records, initial=list(range(10)), seed=0)
    rng = np.random.default_rng(1)
    for _ in range(12):
        if state.exhausted():
            break
        before = dict(state.labelled)
        _run_round(state, oracle, lambda n: rng.choice([0.0, 0.2, 0.5, 0.7, 1.0], n).tolist())
        for i, rec in before.items():  # never replaced
            assert state.labelled[i] is rec
        copy = ASMState.from_state(state.state_dict())
        assert plain_state(copy.state_dict()) == plain_state(state.state_dict())
    assert state.round >= 5


def test_v1_keeps_the_label_pool_and_trains_on_k_plus_k():
    records = _records(40)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start("v1", 5, records, initial=list(range(10)), seed=0, round_train="replay")
    batch, train = _run_round(state, oracle, lambda n: [0.5] * n)
    assert len(state.labelled) == 10 and len(train) == 10
    assert [r.image_id for r in train[:5]] == batch and all(r.image_id in state.labelled for r in train[5:])
    assert set(batch) <= set(state.detected) and not set(batch) & set(state.unlabelled)
    assert (state.rounds[-1]["images_joined"], state.rounds[-1]["images_held"]) == (0, 5)  # none joins


def test_v1_plus_adds_the_k_sa_annotations():
    records = _records(40)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start("v1+", 5, records, initial=list(range(10)), seed=0, round_train="replay")
    batch, train = _run_round(state, oracle, lambda n: [0.5] * n)
    assert len(state.labelled) == 15 and set(batch) <= set(state.labelled)
    assert all(r.image_id not in batch for r in train[5:])  # replay drawn before the additions


def test_topk_v1_ranks_everything_detected_so_far():
    """ASM_core's rule: every round the K lowest AL ratios of everything detected so far join the
    pool (the first round too) and the K highest are trained on now."""
    records = _records(40)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start("topk_v1", 2, records, initial=list(range(5)), seed=0, round_train="replay")
    b = state.next_batch()
    train = state.apply(_results(state, [0.9, 0.8], oracle))
    assert set(b) <= set(state.labelled) and not state.detected  # round 1: the K detected join
    assert sorted(r.image_id for r in train[:2]) == sorted(b)  # and are the K highest: trained on
    n = state.next_batch()
    train = state.apply(_results(state, [0.1, 0.95], oracle))
    assert n[0] in state.labelled and n[1] in state.labelled
    n2 = state.next_batch()
    train = state.apply(_results(state, [0.7, 0.3], oracle))
    assert [r.image_id for r in train[:2]] == [n2[0], n2[1]]  # ranked {n2_1: .3, n2_0: .7}: highest first
    assert set(n2) <= set(state.labelled) and len(state.labelled) == 5 + 6
    assert "K lowest" in state.fates[n2[1]]


def test_topk_v2_certain_uncertain_pending_and_last_pass():
    records = _records(30)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start(
        "topk_v2", 4, records, initial=list(range(4)), seed=0, max_passes=2, round_train="replay"
    )
    b1 = state.next_batch()
    train = state.apply(_results(state, [0.1, 0.9, 0.45, 0.7], oracle))
    assert b1[0] in state.labelled and state.pending == [b1[1], b1[3]]
    assert state.unlabelled[-1] == b1[2]  # between the two thresholds: back of the queue
    assert [r.image_id for r in train[:2]] == [b1[1], b1[3]]
    b2 = state.next_batch()
    assert b2[:2] == [b1[1], b1[3]] and len(b2) == 4  # pending first, then new, K in total
    state.apply(_results(state, [0.9, 0.0, 0.9, 0.9], oracle))
    assert b1[1] in state.labelled and b1[3] in state.labelled  # second pass: kept (max_passes=2) or certain
    assert state.pending == b2[2:]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown strategy"):
        ASMState.start("v9", 5, _records(5), [0], 0)
    with pytest.raises(ValueError, match="K must be"):
        ASMState.start("v1", 0, _records(5), [0], 0)
    with pytest.raises(ValueError, match="cer_ratio"):
        ASMState.start("topk_v2", 2, _records(5), [0], 0, cer_ratio=0.7, uncer_ratio=0.6)
    state = ASMState.start("v1+", 2, _records(5), [0], 0)
    with pytest.raises(ValueError, match="do not match"):
        state.apply([])
    with pytest.raises(ValueError, match="refusing to replace"):
        state._label(_records(1)[0], "test")


@pytest.mark.parametrize("strategy", ["v1", "v1+", "topk_v1", "topk_v2"])
def test_pool_mode_trains_each_round_on_the_whole_label_pool(strategy):
    records = _records(40)
    oracle = {r.image_id: r for r in records}
    replay = ASMState.start(strategy, 5, records, initial=list(range(10)), seed=0, round_train="replay")
    pool = ASMState.start(strategy, 5, records, initial=list(range(10)), seed=0, round_train="pool")
    for k in range(3):
        ratios = lambda n: [0.0, 1.0, 0.5, 0.2, 0.9][:n]  # noqa: E731
        _, train_replay = _run_round(replay, oracle, ratios)
        batch, train = _run_round(pool, oracle, ratios)
        ids = [r.image_id for r in train]
        assert len(ids) == len(set(ids))
        assert set(pool.labelled) <= set(ids)  # every label-pool record, after this round's moves
        assert set(ids) - set(pool.labelled) <= set(batch) | set(pool.detected)  # plus the round's own
        assert len(train_replay) <= 5 + 5 < len(train) or k == 0 and strategy == "topk_v1"
        assert pool.digest() == replay.digest()  # the same moves: only the training set differs
    assert ASMState.from_state(pool.state_dict()).round_train == "pool"
    with pytest.raises(ValueError, match="round_train"):
        ASMState.start(strategy, 5, records, initial=[0], seed=0, round_train="all")


def test_candidates_and_prefer_choose_the_next_batch():
    records = _records(30)
    state = ASMState.start("v1+", 4, records, initial=list(range(5)), seed=0)
    queue = list(state.unlabelled)
    assert state.next_batch() == queue[:4] and state.next_batch(3) == queue[:12]
    state.prefer([queue[9], queue[2], queue[7], queue[11]])
    assert state.next_batch() == [queue[9], queue[2], queue[7], queue[11]]
    assert sorted(state.unlabelled) == sorted(queue)  # nothing lost or duplicated
    with pytest.raises(ValueError, match="not in the unlabelled queue"):
        state.prefer(["i000"])  # labelled already


def test_topk_v2_never_charges_a_gt_box_twice():
    records = [
        Record(f"i{k}", f"i{k}.jpg", 50, 50, [[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30]], [1, 1, 1])
        for k in range(6)
    ]
    oracle = {r.image_id: r for r in records}
    state = ASMState.start("topk_v2", 2, records, initial=[0], seed=0, max_passes=3)

    def results(sl_per_image, moved=None):
        out = []
        for i, sl in zip(state.next_batch(), sl_per_image):
            sl = np.asarray(sl, bool)
            mv = np.zeros(3, bool) if moved is None else np.asarray(moved, bool)
            drawn = int((~sl & ~mv).sum())
            out.append(
                MergeResult(
                    oracle[i], sl, drawn, int(sl.sum()), 0, 0, 0, 0, int(sl.sum()), 1.0 - sl.mean(), moved=mv
                )
            )
        return out

    first = state.next_batch()
    state.apply(results([[False, False, False], [True, False, False]], moved=[False, False, True]))
    assert state.pending == first  # both uncertain (ratios 1.0 and 2/3 >= 0.6)
    assert (state.cost.drawn, state.cost.moved) == (2 + 1, 1 + 1)
    # detected again: the human annotated both images on the first pass; nothing is drawn twice
    state.apply(results([[True, False, False], [False, False, False]], moved=[False, True, False]))
    assert state.rounds[-1]["drawn"] == 0 and state.rounds[-1]["moved"] == 0  # a move is not charged twice
    assert state.cost.drawn == 3 and state.cost.confirmed == 1 + 1
    assert ASMState.from_state(state.state_dict()).passes == state.passes


@pytest.mark.parametrize("seed", range(20))
def test_topk_v2_ends_whatever_the_ratios(seed):
    """Property: every image is detected at most max_passes times, so for any sequence of ratios the
    pool empties within ceil(max_passes * N / K) full rounds plus max_passes short ones."""
    rng = np.random.default_rng(seed)
    n, k, passes = int(rng.integers(5, 60)), int(rng.integers(1, 9)), int(rng.integers(1, 5))
    records = _records(n + 3)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start("topk_v2", k, records, initial=[0, 1, 2], seed=seed, max_passes=passes)
    band = rng.choice(["middle", "high", "mixed"])
    draw = {
        "middle": lambda m: [0.45] * m,
        "high": lambda m: [0.9] * m,
        "mixed": lambda m: rng.choice([0.0, 0.31, 0.5, 0.59, 0.6, 1.0], m).tolist(),
    }[band]
    bound = -(-passes * n // k) + passes
    rounds = 0
    while not state.exhausted():
        _run_round(state, oracle, draw)
        rounds += 1
        assert rounds <= bound, f"{band}: not exhausted after {bound} rounds"
    assert len(state.labelled) == n + 3 and max(state.passes.values()) <= passes


def test_topk_v2_with_every_ratio_high_takes_one_round_more_than_passes_times_n_over_k():
    """5 images, K 4, 2 passes, all uncertain: round 1 detects 4 (pending), round 2 detects them again
    (their last pass: to the human), round 3 the fifth, round 4 the fifth again: 4 rounds, not 3."""
    records = _records(5 + 1)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start("topk_v2", 4, records, initial=[0], seed=0, max_passes=2)
    sizes = []
    while not state.exhausted():
        sizes.append(len(_run_round(state, oracle, lambda m: [0.9] * m)[0]))
    assert sizes == [4, 4, 1, 1] and len(state.labelled) == 6


def test_middle_band_goes_to_the_human_on_its_last_pass():
    records = _records(12)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start("topk_v2", 4, records, initial=[0, 1], seed=0, max_passes=2)
    first = state.next_batch()
    state.apply(_results(state, [0.45] * 4, oracle))
    assert state.unlabelled[-4:] == first and "back to the end of the queue" in state.fates[first[0]]
    while first[0] not in state.labelled:
        _run_round(state, oracle, lambda m: [0.45] * m)
    assert state.passes[first[0]] == 2 and "the human labels it" in state.fates[first[0]]


def test_random_takes_the_same_images_as_v1_plus():
    records = _records(30)
    oracle = {r.image_id: r for r in records}
    states = [ASMState.start(s, 5, records, initial=list(range(6)), seed=3) for s in ("random", "v1+")]
    for _ in range(3):
        batches = [s.next_batch() for s in states]
        assert batches[0] == batches[1]
        for s in states:
            _run_round(s, oracle, lambda m: [1.0] * m)
    assert set(states[0].labelled) == set(states[1].labelled)
    assert all(states[0].fates[i].startswith("random:") for i in batches[0])


def test_topk_v2_an_al_ratio_equal_to_cer_ratio_is_certain():
    records = _records(12)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start(
        "topk_v2", 3, records, initial=list(range(3)), seed=0, cer_ratio=0.3, uncer_ratio=0.6
    )
    batch = state.next_batch()
    state.apply(_results(state, [0.3, 0.6, 0.3000001], oracle))
    assert batch[0] in state.labelled  # ratio == cer_ratio: ASM_core's "<=", joins the pool
    assert state.pending == [batch[1]]  # ratio == uncer_ratio: uncertain, detected again
    assert batch[2] in state.unlabelled  # just above cer_ratio: back in the queue


def test_image_counts_and_the_initial_pool_by_hand():
    assert [image_count(v, 10) for v in (0.25, 0.04, 1.0, 3, 2.0)] == [2, 1, 10, 3, 2]  # round(2.5) is 2
    assert initial_pool(10, 0.3, seed=4) == initial_pool(10, 3, seed=4) and len(initial_pool(10, 3, 4)) == 3
    assert initial_pool(10, 10, seed=1) == list(range(10))
    assert initial_pool(10, 3, seed=4) == sorted(np.random.default_rng([4, 7]).permutation(10)[:3].tolist())
    assert initial_pool(10, 3, seed=4) != initial_pool(10, 3, seed=5)
    for bad in (0.01, 11, 0):
        with pytest.raises(ValueError, match=rf"--initial {bad} gives \d+ images; the pool has 10"):
            initial_pool(10, bad, seed=0)


def test_the_weighted_cost_and_the_pool_boxes_by_hand():
    cost = RoundCost(images=3, drawn=4, confirmed=5, deleted=2, moved=3)
    assert cost.weighted(review_cost=0.2, move_cost=0.5) == pytest.approx(4 + 0.2 * 7 + 0.5 * 3)
    assert cost.weighted(review_cost=0, move_cost=0) == 4
    records = _records(6)  # boxes 0, 1, 2, 0, 1, 2
    state = ASMState.start("v1", 2, records, initial=[1, 2], seed=0)
    assert state.pool_boxes() == (3, 0)  # the initial pool: drawn by the human
    state.sl_flags["i002"] = [True, False]
    assert state.pool_boxes() == (3, 1)


def test_round_cost_adds_every_field_of_every_image():
    a = MergeResult(
        Record("a", "a.jpg", 9, 9),
        np.zeros(0, bool),
        2,
        3,
        1,
        4,
        5,
        0,
        3,
        0.4,
        sl_score=2.5,
        loose=1,
        wrong_class=2,
    )
    b = MergeResult(
        Record("b", "b.jpg", 9, 9),
        np.zeros(0, bool),
        1,
        0,
        2,
        2,
        1,
        0,
        0,
        1.0,
        moved=np.array([True, True, False]),
    )
    cost = RoundCost()
    cost.add([a, b])
    cost.add([a])
    assert {k: v for k, v in cost.as_dict().items() if k not in ("ratio_sum", "precision")} == {
        "images": 3,
        "drawn": 5,
        "confirmed": 6,
        "deleted": 4,
        "moved": 2,
        "certain": 10,
        "matched": 6,
        "loose": 2,
        "wrong_class": 4,
        "sl_score": 5.0,
    }
    assert cost.ratio_sum == pytest.approx(1.8) and cost.precision == pytest.approx(6 / 10)


def test_check_names_the_image_in_two_sets_a_lost_one_and_an_unknown_one():
    state = ASMState.start("v1", 2, _records(4), initial=[0, 1], seed=0)
    state.check()
    state.unlabelled.append("i000")
    with pytest.raises(AssertionError, match="image i000 is in both labelled and unlabelled"):
        state.check()
    state.unlabelled.remove("i000")
    state.pending.append(state.unlabelled.pop())
    state.pending.append(state.unlabelled[0])
    with pytest.raises(AssertionError, match=r"image i00\d is in both unlabelled and pending"):
        state.check()
    state.pending.pop()
    gone = state.pending.pop()
    with pytest.raises(AssertionError, match=rf"lost images \['{gone}'\], unknown \[\]"):
        state.check()
    state.pending.extend([gone, "zzz"])
    with pytest.raises(AssertionError, match=r"lost images \[\], unknown \['zzz'\]"):
        state.check()


def test_a_format_2_state_one_dict_per_record_reads_as_the_same_state():
    records = _records(12)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start("v1+", 3, records, initial=[0, 1, 2, 3], seed=0)
    _run_round(state, oracle, lambda n: [0.9, 0.1, 0.5][:n])
    state.detected = {i: (oracle[i], 0.25 * k) for k, i in enumerate(state.unlabelled[:2])}
    for i in state.detected:
        state.unlabelled.remove(i)
    state.check()
    new = state.state_dict()
    old = dict(new)  # format 2: records one dict each, the ratios beside them; no round_train yet
    old["labelled"] = [record_to_dict(r) for r in state.labelled.values()]
    old["detected"] = [[record_to_dict(r), q] for r, q in state.detected.values()]
    del old["round_train"]
    read = ASMState.from_state(old)
    assert (
        read.labelled == state.labelled
        and read.detected == state.detected
        and read.digest() == state.digest()
    )
    assert [q for _, q in read.detected.values()] == [0.0, 0.25]
    assert read.round_train == "replay"  # the only behaviour format 2 had
    assert ASMState.from_state(new).round_train == state.round_train


def _round_with(state, oracle, ratios: dict[str, float]):
    """One round whose detected images get the given AL ratios."""
    batch = state.next_batch()
    return batch, state.apply(_results(state, [ratios[i] for i in batch], oracle))


def test_topk_v1_fates_and_counts_by_hand():
    records = _records(8)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start("topk_v1", 2, records, initial=[0, 1], seed=0)
    batch = state.next_batch()
    earlier = [i for i in state.unlabelled if i not in batch][:3]  # ranked in an earlier round
    for i, q in zip(earlier, (0.1, 0.2, 0.8)):
        state.unlabelled.remove(i)
        state.detected[i] = (oracle[i], q)
    _, train = _round_with(state, oracle, dict(zip(batch, (0.9, 0.5))))
    # ranked: earlier[0] 0.1, earlier[1] 0.2, batch[1] 0.5, earlier[2] 0.8, batch[0] 0.9
    assert [r.image_id for r in train[:2]] == [batch[0], earlier[2]]  # the K highest, trained on now
    assert set(state.labelled) == {"i000", "i001", earlier[0], earlier[1]}  # the K lowest joined
    assert set(state.detected) == {batch[0], batch[1], earlier[2]}
    assert state.fates == {
        earlier[0]: "topk_v1: among the K lowest AL ratios detected so far",
        earlier[1]: "topk_v1: among the K lowest AL ratios detected so far",
        batch[0]: "topk_v1: among the K highest AL ratios: trained on now, ranked again",
        earlier[2]: "topk_v1: among the K highest AL ratios: trained on now, ranked again",
        batch[1]: "topk_v1: between the two top-K groups: ranked again next round",
    }
    assert (state.rounds[-1]["images_joined"], state.rounds[-1]["images_held"]) == (2, 2)


def test_topk_v2_fates_and_counts_by_hand():
    records = _records(9)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start(
        "topk_v2", 3, records, initial=[0, 1], seed=0, cer_ratio=0.3, uncer_ratio=0.6, max_passes=2
    )
    low, high, middle = state.next_batch()
    _, train = _round_with(state, oracle, {low: 0.3, high: 0.6, middle: 0.5})  # both edges are inclusive
    assert (
        [r.image_id for r in train[:1]] == [high]
        and state.pending == [high]
        and state.unlabelled[-1] == middle
    )
    assert state.fates == {
        low: "topk_v2: AL ratio 0.300 <= cer_ratio 0.3",
        high: "topk_v2: AL ratio 0.600 >= uncer_ratio 0.6: trained on now, detected again next round (pass 1 of 2)",
        middle: "topk_v2: AL ratio 0.500 between cer_ratio and uncer_ratio: back to the end of the queue (pass 1 of 2)",
    }
    assert (state.rounds[-1]["images_joined"], state.rounds[-1]["images_held"]) == (1, 1)
    batch, train = _round_with(state, oracle, dict.fromkeys(state.next_batch(), 0.9))
    assert batch[0] == high  # pending first, on its last pass now: labelled by the human, and trained on
    assert state.fates[high] == "topk_v2: pass 2 of --max-passes 2: the human labels it (AL)"
    assert high in state.labelled and high not in state.pending
    assert (state.rounds[-1]["images_joined"], state.rounds[-1]["images_held"]) == (1, 3)


def test_start_validates_its_ratios_and_passes_and_shuffles_by_its_own_seed():
    records = _records(6)
    state = ASMState.start("topk_v2", 2, records, initial=[0, 5], seed=3)
    assert state.max_passes == 3 and (state.cer_ratio, state.uncer_ratio) == (0.3, 0.6)
    rest = [1, 2, 3, 4]
    assert state.unlabelled == [f"i{i:03d}" for i in np.random.default_rng([3, 11]).permutation(rest)]
    ASMState.start("topk_v2", 2, records, initial=[0], seed=0, cer_ratio=0.0, uncer_ratio=1.0)  # the edges
    for kw, message in (
        (dict(cer_ratio=0.5, uncer_ratio=0.5), "need 0 <= cer_ratio < uncer_ratio <= 1, got 0.5, 0.5"),
        (dict(cer_ratio=-0.1), "got -0.1, 0.6"),
        (dict(uncer_ratio=1.1), "got 0.3, 1.1"),
        (dict(max_passes=0), "max_passes must be a positive integer, got 0"),
        (dict(max_passes=2.0), "max_passes must be a positive integer, got 2.0"),
    ):
        with pytest.raises(ValueError, match=message):
            ASMState.start("topk_v2", 2, records, initial=[0], seed=0, **kw)


def test_a_round_record_counts_the_round_the_pool_and_what_was_trained():
    records = _records(10)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start("v1+", 3, records, initial=[0, 1], seed=0)
    batch, train = _round_with(state, oracle, dict.fromkeys(state.next_batch(), 0.5))
    last = state.rounds[-1]
    assert (state.round, last["round"], last["labelled_images"], last["train_images"]) == (1, 1, 5, 5)
    assert last["images"] == 3 and len(train) == 5
    assert all(state.sl_flags[i] == [False] * len(oracle[i]) for i in batch)
    _round_with(state, oracle, dict.fromkeys(state.next_batch(), 0.5))
    assert (state.round, state.rounds[-1]["round"], state.rounds[-1]["labelled_images"]) == (2, 2, 8)
    with pytest.raises(
        ValueError, match=r"merge results do not match next_batch\(\) \(order or ids differ\)"
    ):
        state.apply(_results(state, [0.5, 0.5], oracle)[::-1])


def test_held_out_images_survive_a_checkpoint_and_count_in_the_digest():
    records = _records(10)
    state = ASMState.start("v1+", 2, records, initial=list(range(6)), seed=0)
    twin = ASMState.from_state(state.state_dict())
    labelled = sorted(state.labelled)
    state.hold_out(labelled[:2])
    for i in labelled[:2]:
        twin.labelled.pop(i)  # the same pools, but nothing held out: the ranks would disagree
    assert state.digest() != twin.digest()
    back = ASMState.from_state(state.state_dict())
    assert sorted(back.held_out) == labelled[:2] and back.digest() == state.digest()
    assert [record_to_dict(r) for r in back.held_out.values()] == [
        record_to_dict(r) for r in state.held_out.values()
    ]


def test_topk_v2_counts_every_image_that_joins_and_replay_draws_each_record_once():
    records = _records(12)
    oracle = {r.image_id: r for r in records}
    state = ASMState.start("topk_v2", 4, records, initial=[0, 1, 2], seed=0, round_train="replay")
    batch, train = _run_round(state, oracle, lambda n: [0.1, 0.2, 0.9, 0.45][:n])
    info = state.rounds[-1]
    assert (info["images_joined"], info["images_held"]) == (2, 1)  # two at or under cer_ratio 0.3
    replay = [r.image_id for r in train if r.image_id not in batch]
    assert len(replay) == len(set(replay)) == 3  # K = 4 asked of a pool of 3: all of it, each once
