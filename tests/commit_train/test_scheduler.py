"""Coordinated LR scheduler (METHOD.md §3, docs/METHOD.md) on synthetic probe sequences.

The first half pins the ``proportional`` rule (the original METHOD.md §3 update, kept
selectable); the second half the ``robust`` default and its ``slow_dominant`` variant.
"""

import json
import math
import random
import re

import pytest

from commit_train.config import BalanceConfig
from commit_train.scheduler import CoordinatedLRScheduler


def _cfg(**kw) -> BalanceConfig:
    base = {"rule": "proportional", "update_every": 5, "window": 3}
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


def test_proportional_skipped_probes_do_not_keep_old_values():
    """A run of skipped probes empties the window: the next update keeps r."""
    s = CoordinatedLRScheduler(_cfg(update_every=4, window=3))
    s.observe(1, kappa=None, share=0.9)
    for step in (2, 3, 4):
        s.observe(step, kappa=None, share=None)
    assert not s.maybe_update(4)
    assert s.ratio == 1.0 and s.signal_avg is None and s.skipped == 3


def test_proportional_default_gain_and_bounds_are_the_old_ones():
    cfg = BalanceConfig(rule="proportional")
    assert cfg.step_gain == 1.0 and cfg.lr_bounds == (0.01, 100.0)
    robust = BalanceConfig()
    assert robust.rule == "robust"
    assert robust.step_gain == 0.25 and robust.lr_bounds == (0.1, 10.0)
    assert BalanceConfig(gain=0.5, r_max=4.0).step_gain == 0.5
    assert BalanceConfig(r_max=4.0).lr_bounds == (0.1, 4.0)


# ---------------------------------------------------------------------------------------------
# the robust rules

WARMUP = 20


def _robust(**kw) -> BalanceConfig:
    # 10 probes per 50-step update: the regime the robust rule is designed for (see
    # docs/METHOD.md; with 5 per update its dead zone is ~±0.3 at the measured noise)
    return BalanceConfig(**{"rule": "robust", "probe_every": 5, **kw})


def _feed(sched, shares, steps=300, probe_every=None, grad=lambda t: 1.0, frozen=lambda t: False):
    """One probe every ``probe_every`` steps, a grad ratio every step; r after each step."""
    every = probe_every or sched.cfg.probe_every
    out = []
    for step in range(1, steps + 1):
        sched.observe_grad_ratio(step, grad(step))
        if step % every == 0:
            sched.observe(step, kappa=None, share=shares(step))
        sched.maybe_update(step, frozen=frozen(step))
        out.append(sched.ratio)
    return out


def _noisy(mean: float, sd: float, seed: int):
    """Per-probe share_encoder as measured: mostly near 0 or 1 (U-shaped Beta), given mean/sd."""
    rng = random.Random(seed)
    k = mean * (1 - mean) / sd**2 - 1
    return lambda t: rng.betavariate(mean * k, (1 - mean) * k)


def test_robust_pure_noise_keeps_ratio_near_one():
    # per-probe std 0.37 (the std measured at probe_size 4), balanced on average: 20 runs
    # of 300 steps, none may leave [1/1.3, 1.3] at any step
    worst = 1.0
    for seed in range(20):
        s = CoordinatedLRScheduler(_robust(), warmup_steps=WARMUP)
        ratios = _feed(s, _noisy(0.5, 0.37, seed))
        worst = max(worst, *(max(r, 1 / r) for r in ratios))
        assert s.updates == 6
    assert worst <= 1.3, worst


def test_proportional_rule_follows_the_same_noise():
    """The reason for the robust default: the old rule drifts far on the same sequences."""
    worst = 1.0
    for seed in range(20):
        s = CoordinatedLRScheduler(_cfg(update_every=50, window=5, probe_every=10))
        ratios = _feed(s, _noisy(0.5, 0.37, seed), probe_every=10)
        worst = max(worst, *(max(r, 1 / r) for r in ratios))
    assert worst > 3.0, worst


@pytest.mark.parametrize(("mean", "lower"), [(0.8, True), (0.2, False)])
def test_robust_persistent_imbalance_moves_the_right_way(mean, lower):
    for seed in range(10):
        s = CoordinatedLRScheduler(_robust(), warmup_steps=WARMUP)
        ratios = _feed(s, _noisy(mean, 0.3, seed))
        if lower:  # encoder dominates: shift LR toward the LLM
            assert ratios[-1] < 0.9 and max(ratios) <= 1.0, (seed, ratios[-1])
        else:
            assert ratios[-1] > 1.1 and min(ratios) >= 1.0, (seed, ratios[-1])
        assert min(ratios) >= 0.1 and max(ratios) <= 10.0


def test_degradation_pattern_never_raises_the_encoder_lr():
    """Encoder LR too large: its grad-norm ratio collapses and it moves the output little.

    The share then reads "encoder under-trained"; a share-only rule would raise the encoder
    LR further (what the proportional rule did at ×10). The guard blocks every raise; the
    same shares with a healthy encoder do raise it.
    """
    for seed in range(10):

        def collapse(t):
            return 1.0 if t <= WARMUP + 50 else 0.25

        degraded = CoordinatedLRScheduler(_robust(), warmup_steps=WARMUP)
        ratios = _feed(degraded, _noisy(0.15, 0.2, seed), grad=collapse)
        assert max(ratios) <= 1.0, (seed, max(ratios))
        assert degraded.last_guard == pytest.approx(0.25)
        healthy = CoordinatedLRScheduler(_robust(), warmup_steps=WARMUP)
        assert _feed(healthy, _noisy(0.15, 0.2, seed))[-1] > 1.5


def _collapse(t):
    return 1.0 if t <= WARMUP + 50 else 0.25


@pytest.mark.parametrize("rule", ["robust", "slow_dominant"])
def test_degradation_guard_lowers_the_encoder_side(rule):
    """While the guard fires, each update multiplies r by ``guard_lower`` (down to r_min).

    Whatever the shares say: balanced, encoder "under-trained" (the degraded reading) or
    dominant, the encoder side is slowed from the first update after the reference.
    """
    for mean in (0.15, 0.5, 0.85):
        s = CoordinatedLRScheduler(_robust(rule=rule), warmup_steps=WARMUP)
        ratios = _feed(s, _noisy(mean, 0.2, 0), grad=_collapse)
        assert ratios[99] <= 0.5 * ratios[98] <= 0.5, (mean, ratios[99])  # step 100
        assert ratios[-1] == pytest.approx(0.1)  # bounded below by r_min
        assert s.multipliers()["encoder"] < 1.0


def test_degradation_guard_lower_1_only_blocks_raises():
    """``guard_lower: 1`` is the earlier guard: no raise, but no lowering either."""
    s = CoordinatedLRScheduler(_robust(guard_lower=1.0), warmup_steps=WARMUP)
    assert max(_feed(s, _noisy(0.15, 0.2, 0), grad=_collapse)) == 1.0


def test_degradation_guard_needs_evidence_to_lower():
    """No grad ratios (or a healthy ratio) never lowers r on a balanced run."""
    for grad in (lambda t: None, lambda t: 1.0, lambda t: 1.0 if t <= WARMUP + 50 else 0.7):
        s = CoordinatedLRScheduler(_robust(), warmup_steps=WARMUP)
        ratios = _feed(s, lambda t: 0.5, grad=grad)
        assert ratios[-1] == 1.0


def test_degradation_guard_stops_when_the_encoder_recovers():
    """Lowered while degraded, r then stays (no raise past the share rule's own steps)."""

    def dip(t):
        return 0.25 if WARMUP + 50 < t <= 100 else 1.0

    s = CoordinatedLRScheduler(_robust(), warmup_steps=WARMUP)
    ratios = _feed(s, lambda t: 0.5, grad=dip)
    assert ratios[99] == pytest.approx(0.5) and ratios[-1] == pytest.approx(0.5)


def test_robust_uses_only_probes_since_the_last_update():
    cfg = _robust(update_every=10, min_probes=3, guard_ratio=0.0)
    s = CoordinatedLRScheduler(cfg)
    for step in range(1, 11):
        s.observe(step, kappa=None, share=0.95)
    assert s.maybe_update(10) and s.ratio < 1.0
    r = s.ratio
    for step in range(11, 21):  # balanced now: the 0.95s of the first period must not count
        s.observe(step, kappa=None, share=0.5)
    assert s.maybe_update(20)
    assert s.ratio == r and s.signal_avg == pytest.approx(0.5)


def test_robust_needs_min_probes_and_skips_count_as_missing():
    cfg = _robust(update_every=10, min_probes=3, guard_ratio=0.0)
    s = CoordinatedLRScheduler(cfg)
    s.observe(1, kappa=None, share=0.99)
    s.observe(2, kappa=None, share=0.99)
    for step in range(3, 10):
        s.observe(step, kappa=None, share=float("nan"))
    assert s.maybe_update(10)  # s̄ is known (aux weight, logs) ...
    assert s.ratio == 1.0 and s.signal_avg == pytest.approx(0.99)  # ... but r stays
    assert s.skipped == 7


def test_robust_step_hand_computed():
    # three identical readings: sample std 0 is floored at 0.1, se = 0.1/sqrt(3); the step
    # is the logit of the deviation beyond 2 se, times the gain 0.25
    cfg = _robust(update_every=3, guard_ratio=0.0)
    s = CoordinatedLRScheduler(cfg)
    for step in (1, 2, 3):
        s.observe(step, kappa=None, share=0.8)
    s.maybe_update(3)
    se = 0.1 / math.sqrt(3)
    s_eff = 0.8 - 2 * se
    assert s.signal_se == pytest.approx(se)
    assert math.log(s.ratio) == pytest.approx(-0.25 * math.log(s_eff / (1 - s_eff)))
    m = s.multipliers()
    assert m["encoder"] * m["llm"] == pytest.approx(1.0)
    # inside the dead zone nothing moves
    assert CoordinatedLRScheduler.robust_step(0.5 + 1.9 * se, se, cfg) == 0.0
    assert CoordinatedLRScheduler.robust_step(0.5 - 2.1 * se, se, cfg) > 0.0


def test_robust_bounds_and_tail_freeze():
    s = CoordinatedLRScheduler(_robust(guard_ratio=0.0), warmup_steps=WARMUP)
    ratios = _feed(s, lambda t: 0.02, steps=2000)
    assert max(ratios) == pytest.approx(10.0)
    s = CoordinatedLRScheduler(_robust(guard_ratio=0.0), warmup_steps=WARMUP)
    ratios = _feed(s, lambda t: 0.98, steps=2000)
    assert min(ratios) == pytest.approx(0.1)
    # frozen from step 150 on: r set by the first updates, then kept
    s = CoordinatedLRScheduler(_robust(guard_ratio=0.0), warmup_steps=WARMUP)
    ratios = _feed(s, lambda t: 0.9, frozen=lambda t: t >= 150)
    assert ratios[148] < ratios[98] < 1.0
    assert all(r == ratios[148] for r in ratios[149:])
    assert s.updates == 6  # s̄ still refreshed (aux weight, logs)


def test_slow_dominant_only_slows_the_dominant_side():
    s = CoordinatedLRScheduler(_robust(rule="slow_dominant", guard_ratio=0.0))
    _feed(s, lambda t: 0.9, steps=100)
    m = s.multipliers()
    assert s.ratio < 1.0 and m["encoder"] == pytest.approx(s.ratio) and m["llm"] == 1.0
    s = CoordinatedLRScheduler(_robust(rule="slow_dominant", guard_ratio=0.0))
    _feed(s, lambda t: 0.1, steps=100)
    m = s.multipliers()
    assert s.ratio > 1.0 and m["encoder"] == 1.0 and m["llm"] == pytest.approx(1 / s.ratio)


def test_robust_state_round_trip_mid_period():
    cfg = _robust(update_every=20)

    def seq(t):
        return None if t % 7 == 0 else 0.2 + 0.05 * (t % 5)

    ref = CoordinatedLRScheduler(cfg, warmup_steps=5)
    _feed(ref, seq, steps=73, probe_every=2, grad=lambda t: 1.0 / (1 + t / 50))
    state = json.loads(json.dumps(ref.state_dict()))
    new = CoordinatedLRScheduler(cfg, warmup_steps=5)
    new.load_state_dict(state)
    assert new.state_dict() == ref.state_dict()
    for sch in (ref, new):
        for step in range(74, 200):
            sch.observe_grad_ratio(step, 1.0 / (1 + step / 50))
            if step % 2 == 0:
                sch.observe(step, kappa=0.3, share=seq(step))
            sch.maybe_update(step)
    assert new.state_dict() == ref.state_dict() and new.updates == ref.updates > 3


def test_version_one_state_still_loads():
    old = {
        "version": 1,
        "ratio": 2.0,
        "window": [0.4, 0.6],
        "kappa_window": [0.2],
        "skipped": 1,
        "updates": 3,
        "last_s_bar": 0.5,
        "last_update_step": 150,
    }
    s = CoordinatedLRScheduler(_robust())
    s.load_state_dict(old)
    assert s.ratio == 2.0 and s.updates == 3 and s.signal_avg == 0.5


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"rule": "robust", "probe_every": 20, "update_every": 50}, r"2 probes per update"),
        ({"rule": "proportional", "probe_every": 20, "window": 5}, r"balance\.window \(5\)"),
    ],
)
def test_schedule_problems_name_the_keys(kw, pattern):
    problems = BalanceConfig(**kw).schedule_problems()
    assert len(problems) == 1 and re.search(pattern, problems[0]), problems
    assert BalanceConfig(probe_every=10, update_every=50).schedule_problems() == []
