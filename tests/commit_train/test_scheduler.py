"""Coordinated LR scheduler (METHOD.md §3) on synthetic probe sequences."""

import json
import math

import pytest

from commit_train.config import BalanceConfig
from commit_train.scheduler import CoordinatedLRScheduler


def _cfg(**kw) -> BalanceConfig:
    base = {"update_every": 5, "window": 3}
    base.update(kw)
    return BalanceConfig(**base)


def _run(sched: CoordinatedLRScheduler, shares, steps, kappas=None):
    """Feed one probe per step (share, kappa) and call maybe_update; return per-step mults."""
    out = []
    for step in range(1, steps + 1):
        share = shares(step) if callable(shares) else shares
        kappa = kappas(step) if callable(kappas) else kappas
        sched.observe(step, kappa=kappa, share=share)
        sched.maybe_update(step)
        out.append(dict(sched.multipliers()))
    return out


def test_hand_computed_single_update():
    s = CoordinatedLRScheduler(_cfg(update_every=1, window=1))
    s.observe(1, kappa=None, share=0.6)
    assert s.maybe_update(1)
    assert s.ratio == pytest.approx(0.4 / 0.6)
    m = s.multipliers()
    assert m["encoder"] == pytest.approx(math.sqrt(0.4 / 0.6))
    assert m["llm"] == pytest.approx(1 / math.sqrt(0.4 / 0.6))
    assert s.signal_avg == pytest.approx(0.6)


def test_window_mean_and_non_default_target():
    # window holds the last 3 valid values: mean(0.5, 0.7, 0.9) = 0.7; target 0.4
    s = CoordinatedLRScheduler(_cfg(update_every=4, window=3, s_target=0.4))
    for step, v in enumerate([0.1, 0.5, 0.7, 0.9], start=1):
        s.observe(step, kappa=None, share=v)
    assert s.maybe_update(4)
    expected = (0.3 / 0.7) * (0.4 / 0.6)
    assert s.ratio == pytest.approx(expected)
    assert s.signal_avg == pytest.approx(0.7)


def test_above_target_shifts_lr_from_encoder_to_llm_at_each_update():
    s = CoordinatedLRScheduler(_cfg(r_min=1e-6, r_max=1e6))  # clamps tested separately
    mults = _run(s, 0.8, 30)
    updates = [mults[i] for i in range(4, 30, 5)]  # steps 5, 10, ..., 30
    encs = [1.0] + [m["encoder"] for m in updates]
    llms = [1.0] + [m["llm"] for m in updates]
    assert all(b < a for a, b in zip(encs, encs[1:], strict=False))
    assert all(b > a for a, b in zip(llms, llms[1:], strict=False))


def test_below_target_shifts_lr_from_llm_to_encoder():
    s = CoordinatedLRScheduler(_cfg(r_min=1e-6, r_max=1e6))
    mults = _run(s, 0.2, 30)
    updates = [mults[i] for i in range(4, 30, 5)]
    encs = [1.0] + [m["encoder"] for m in updates]
    llms = [1.0] + [m["llm"] for m in updates]
    assert all(b > a for a, b in zip(encs, encs[1:], strict=False))
    assert all(b < a for a, b in zip(llms, llms[1:], strict=False))


def test_at_target_ratio_stays_one():
    s = CoordinatedLRScheduler(_cfg(s_target=0.3))
    _run(s, 0.3, 50)
    assert s.updates == 10
    assert s.ratio == pytest.approx(1.0)


def test_product_of_multipliers_is_one_and_clamps_hold():
    cfg = _cfg(r_min=0.05, r_max=20.0, gain=2.0)
    s = CoordinatedLRScheduler(cfg)
    seq = [0.95, 0.9, 0.05, 0.6, 0.01, 0.99, 0.5, 0.3]
    mults = _run(s, lambda t: seq[t % len(seq)], 200)
    for m in mults:
        assert m["encoder"] * m["llm"] == pytest.approx(1.0, rel=1e-12)

    hi = CoordinatedLRScheduler(cfg)
    _run(hi, 0.9, 200)
    assert hi.ratio == pytest.approx(0.05)
    lo = CoordinatedLRScheduler(cfg)
    _run(lo, 0.1, 200)
    assert lo.ratio == pytest.approx(20.0)
    assert lo.multipliers()["encoder"] == pytest.approx(math.sqrt(20.0))


def test_signal_clipped_before_step():
    # s̄ = 1.0 is clipped to 0.98, so one update multiplies r by 0.02/0.98, not by 0
    s = CoordinatedLRScheduler(_cfg(update_every=1, window=1, r_min=1e-6))
    s.observe(1, kappa=None, share=1.0)
    s.maybe_update(1)
    assert s.ratio == pytest.approx(0.02 / 0.98)


def test_nothing_changes_between_updates():
    s = CoordinatedLRScheduler(_cfg(update_every=7))
    mults = _run(s, lambda t: 0.2 + 0.6 * (t % 3) / 2, 35)
    for block in range(5):  # steps 7k+1 .. 7k+7; the change happens at 7(k+1)
        inside = mults[block * 7 : block * 7 + 6]  # steps 7k+1 .. 7k+6
        assert all(m == inside[0] for m in inside)
    assert s.updates == 5
    assert not s.maybe_update(36)


def test_gain_scales_log_step():
    ratios = {}
    for gain in (0.5, 1.0, 2.0):
        s = CoordinatedLRScheduler(_cfg(update_every=1, window=1, gain=gain))
        s.observe(1, kappa=None, share=0.7)
        s.maybe_update(1)
        ratios[gain] = math.log(s.ratio)
    assert ratios[1.0] == pytest.approx(math.log(0.3 / 0.7))
    assert ratios[2.0] == pytest.approx(2 * ratios[1.0])
    assert ratios[0.5] == pytest.approx(0.5 * ratios[1.0])


def test_kappa_signal_reads_kappa_with_its_own_target():
    # share is far off 0.5 but κ sits exactly on the κ target: r must not move
    s = CoordinatedLRScheduler(_cfg(signal="kappa", s_target=0.3))
    _run(s, 0.9, 20, kappas=0.3)
    assert s.ratio == pytest.approx(1.0)
    assert s.signal_avg == pytest.approx(0.3)
    # κ above its target lowers the encoder multiplier even with share below 0.5
    s2 = CoordinatedLRScheduler(_cfg(signal="kappa", s_target=0.3, update_every=1, window=1))
    s2.observe(1, kappa=0.6, share=0.1)
    s2.maybe_update(1)
    assert s2.ratio == pytest.approx((0.4 / 0.6) * (0.3 / 0.7))


def test_kappa_avg_logged_under_share_signal():
    s = CoordinatedLRScheduler(_cfg(window=2))
    s.observe(1, kappa=0.1, share=0.5)
    s.observe(2, kappa=0.2, share=0.5)
    s.observe(3, kappa=0.4, share=0.5)
    assert s.kappa_avg == pytest.approx(0.3)
    assert s.signal_avg == pytest.approx(0.5)


def test_invalid_values_ignored_and_counted():
    s = CoordinatedLRScheduler(_cfg(update_every=5, window=10))
    bad = [None, float("nan"), float("inf"), float("-inf")]
    for step, v in enumerate(bad, start=1):
        assert not s.observe(step, kappa=v, share=v)
    assert s.skipped == 4
    assert s.signal_avg is None and s.kappa_avg is None
    assert s.observe(5, kappa=0.4, share=0.6)
    assert s.maybe_update(5)
    assert s.signal_avg == pytest.approx(0.6)
    assert s.ratio == pytest.approx(0.4 / 0.6)
    assert s.skipped == 4


def test_empty_window_no_change():
    s = CoordinatedLRScheduler(_cfg(update_every=2))
    for step in range(1, 11):
        s.observe(step, kappa=None, share=None)
        assert not s.maybe_update(step)
    assert s.ratio == 1.0 and s.updates == 0 and s.skipped == 10
    assert s.multipliers() == {"encoder": 1.0, "llm": 1.0}


def test_disabled_keeps_ratio_but_tracks_averages():
    s = CoordinatedLRScheduler(_cfg(), enabled=False)
    _run(s, 0.8, 20, kappas=0.4)
    assert s.ratio == 1.0
    assert s.multipliers() == {"encoder": 1.0, "llm": 1.0}
    assert s.updates == 4
    assert s.signal_avg == pytest.approx(0.8)
    assert s.kappa_avg == pytest.approx(0.4)


def test_same_step_twice_updates_once():
    s = CoordinatedLRScheduler(_cfg(update_every=1, window=1))
    s.observe(1, kappa=None, share=0.7)
    assert s.maybe_update(1)
    r = s.ratio
    assert not s.maybe_update(1)
    assert s.ratio == r


def test_state_round_trip_gives_identical_behaviour():
    cfg = _cfg(update_every=4, window=3)

    def seq(t):
        return None if t % 11 == 0 else 0.3 + 0.5 * ((t * 7) % 10) / 10

    ref = CoordinatedLRScheduler(cfg)
    _run(ref, seq, 17, kappas=lambda t: 0.1 * (t % 5))
    state = ref.state_dict()
    restored_state = json.loads(json.dumps(state))
    assert restored_state == state

    new = CoordinatedLRScheduler(cfg)
    new.load_state_dict(restored_state)
    assert new.state_dict() == state
    for step in range(18, 60):
        for sch in (ref, new):
            sch.observe(step, kappa=0.1 * (step % 5), share=seq(step))
            sch.maybe_update(step)
        assert new.multipliers() == ref.multipliers()
        assert new.signal_avg == ref.signal_avg and new.kappa_avg == ref.kappa_avg
    assert new.state_dict() == ref.state_dict()


def test_load_rejects_unknown_version():
    s = CoordinatedLRScheduler(_cfg())
    with pytest.raises(ValueError, match="version"):
        s.load_state_dict({"version": 99})
