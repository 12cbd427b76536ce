import pytest

from tools.engine.early_stop import APShiftStopper


def test_needs_a_full_window_before_deciding():
    s = APShiftStopper(ap_range=3, threshold=0.01)
    assert not s.update(0, 0.5) and s.ap_shift is None
    assert not s.update(1, 0.5) and s.ap_shift is None
    # a perfectly flat window has shift 0, which is not "0 < shift": keep training
    assert not s.update(2, 0.5) and s.ap_shift == 0.0


def test_mean_absolute_deviation_threshold_and_best_epoch():
    s = APShiftStopper(ap_range=3, threshold=0.01)
    for e, ap in enumerate([0.1, 0.3, 0.50, 0.52]):
        assert not s.update(e, ap)
    # window [0.30, 0.50, 0.52] -> mean 0.44, MAD (0.14 + 0.06 + 0.08) / 3
    assert s.ap_shift == pytest.approx(0.28 / 3)
    assert s.update(4, 0.51)  # window [0.50, 0.52, 0.51]: MAD 0.00667 < 0.01
    assert s.ap_shift == pytest.approx(0.02 / 3)
    assert s.best_epoch == 3


def test_ap_threshold_and_squared_variant():
    s = APShiftStopper(ap_range=2, threshold=0.01, ap_thre=0.6)
    s.update(0, 0.50)
    assert not s.update(1, 0.51)  # settled but AP below ap_thre
    sq = APShiftStopper(ap_range=2, threshold=0.001, squared=True)
    sq.update(0, 0.50)
    assert sq.update(1, 0.56)  # squared deviation 0.0009 < 0.001 although MAD 0.03 is not
    assert sq.ap_shift == pytest.approx(0.0009)
    with pytest.raises(ValueError, match="ap_range"):
        APShiftStopper(ap_range=1)


def test_state_round_trip():
    s = APShiftStopper(ap_range=3, threshold=0.02, ap_thre=0.1, squared=True)
    for e, ap in enumerate([0.2, 0.4, 0.45]):
        s.update(e, ap)
    t = APShiftStopper()
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict()
    assert t.update(3, 0.46) == s.update(3, 0.46)


def test_ap_equal_to_ap_thre_does_not_stop():
    """ASM_core stops only *above* ap_thre: a settled AP exactly at the threshold keeps training."""
    s = APShiftStopper(ap_range=2, threshold=0.01, ap_thre=0.505)
    s.update(0, 0.50)
    assert not s.update(1, 0.505) and 0 < s.ap_shift < 0.01
    assert s.update(2, 0.506)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ap-range", "1"], "--ap-range must be at least 2"),
        (["--ap-shift-asm", "-0.1"], "--ap-shift-asm must be >= 0.0"),
        (["--ap-shift-pretrain", "nan"], "--ap-shift-pretrain must be a finite number"),
        (["--ap-thre", "1.5"], "--ap-thre must be <= 1.0"),
    ],
)
def test_early_stop_options_end_in_one_line_with_exit_2(tmp_path, caplog, flags, message):
    from train_asm_one import main

    assert main(["--output-dir", str(tmp_path / "run"), *flags]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in caplog.text
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_phase_flat_near_zero_never_stops_early():
    """A scripted evaluator that returns AP50 0.010-0.012 every epoch: the shift is small (< 0.005),
    but AP never rose 0.05 above its first value nor reached the floor, so training goes on."""
    s = APShiftStopper(ap_range=4, threshold=0.005, min_rise=0.05, floor=0.5)
    flat = [0.010, 0.011, 0.012, 0.010, 0.011, 0.012, 0.011, 0.010]
    assert not any(s.update(e, ap) for e, ap in enumerate(flat))
    assert 0 < s.ap_shift < 0.005
    # the same flat run stops without the rule (the behaviour it replaces)
    old = APShiftStopper(ap_range=4, threshold=0.005)
    assert any(old.update(e, ap) for e, ap in enumerate(flat))


def test_a_phase_that_has_risen_or_reached_the_floor_may_stop():
    risen = APShiftStopper(ap_range=2, threshold=0.01, min_rise=0.05, floor=0.5)
    for e, ap in enumerate([0.10, 0.149]):
        assert not risen.update(e, ap)  # 0.049 above the first: not yet
    assert not risen.update(2, 0.149)  # flat, shift 0
    assert risen.update(3, 0.152)  # 0.052 above the first and settled
    high = APShiftStopper(ap_range=2, threshold=0.01, min_rise=0.05, floor=0.5)
    high.update(0, 0.60)
    assert high.update(1, 0.605)  # no rise, but above the floor: a trained model that settled


def test_a_checkpoint_older_than_the_rise_rule_keeps_the_stoppers_own_values():
    s = APShiftStopper(ap_range=2, threshold=0.01, min_rise=0.05, floor=0.5)
    state = s.state_dict()
    del state["min_rise"], state["floor"]
    s.load_state_dict(state)
    assert (s.min_rise, s.floor) == (0.05, 0.5)


def test_a_stoppers_state_carries_every_rule_and_an_older_one_keeps_this_stoppers():
    stopper = APShiftStopper(3, 0.02, ap_thre=0.1, squared=True, min_rise=0.05, floor=0.3)
    stopper.update(0, 0.2)
    again = APShiftStopper()
    again.load_state_dict(stopper.state_dict())
    assert again.state_dict() == stopper.state_dict()
    assert (again.ap_range, again.threshold, again.ap_thre, again.squared, again.min_rise, again.floor) == (
        3, 0.02, 0.1, True, 0.05, 0.3,
    )  # fmt: skip
    older = {k: v for k, v in stopper.state_dict().items() if k not in ("min_rise", "floor")}
    kept = APShiftStopper(min_rise=0.2, floor=0.4)
    kept.load_state_dict(older)
    assert (kept.min_rise, kept.floor, kept.threshold) == (0.2, 0.4, 0.02)


def test_the_learned_rule_holds_at_its_exact_bounds():
    """AP 0.75 after a first 0.5: a rise of exactly min_rise 0.25 has learned (the floor 0.9 not
    reached); with no rise asked beyond the floor, an AP exactly at the floor 0.75 has too. The
    window's shift is 0.125 < 0.2 either way, so the stop follows the rule."""
    rise = APShiftStopper(2, 0.2, min_rise=0.25, floor=0.9)
    rise.history = [(0, 0.5)]
    assert rise.update(1, 0.75) is True
    floor = APShiftStopper(2, 0.2, min_rise=1.0, floor=0.75)
    floor.history = [(0, 0.5)]
    assert floor.update(1, 0.75) is True
    short = APShiftStopper(2, 0.2, min_rise=1.0, floor=0.8)
    short.history = [(0, 0.5)]
    assert short.update(1, 0.75) is False  # neither: it has not learned yet
