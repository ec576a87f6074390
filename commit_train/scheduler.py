"""Coordinated encoder/LLM learning-rate scheduler (METHOD.md §3, docs/METHOD.md).

The scheduler turns the balance probes of §2 into one number, the encoder/LLM LR **ratio**
``r``, and hands the trainer two multipliers to apply on top of the base schedule of
:mod:`commit_train.lr`. Three update rules (``balance.rule``):

* ``robust`` (default): at each update, only the probes since the previous update count
  (at least ``min_probes``); ``r`` moves only when their mean s̄ is more than ``z``
  standard errors from the target (the per-probe std pooled over the run, floored at
  ``std_floor``), and then by ``gain`` times the logit of the part of the deviation beyond
  that dead zone, so a borderline reading moves ``r`` by almost nothing; ``r`` stays in
  [r_min, r_max] (default [0.1, 10]), is frozen in the LR tail (base LR factor below
  ``freeze_below``), and a **degradation guard** acts while the encoder's normalised
  gradient norm, relative to the LLM's, is below ``guard_ratio`` of its early value: it
  never raises the encoder side then (a degrading pretrained encoder moves the output less
  and would otherwise read as "under-trained") and multiplies ``r`` by ``guard_lower`` at
  each such update (the encoder LR is too large for it: slow it down). Multipliers ``m_S = sqrt(r)``,
  ``m_T = 1/sqrt(r)``: their product is 1, so the overall LR scale is kept.
* ``slow_dominant``: the same decisions, but only the dominant side is slowed:
  ``m_S = min(1, r)``, ``m_T = min(1, 1/r)``; no side ever runs above its base LR.
* ``proportional``: the first rule of METHOD.md §3, kept for comparison: every update
  multiplies ``r`` by the odds ratio of the mean of the last ``window`` probes, to the
  power ``gain`` (default 1).

It is independent of the trainer: it only sees floats (probe values, gradient-norm ratios,
step numbers, whether the LR tail has begun), so it is unit-tested on synthetic sequences
and its whole state is a small JSON-serialisable dict that goes into checkpoints.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from commit_train.config import BalanceConfig

# s̄ is clipped before the log-odds step so a degenerate probe (one side not moving the
# output at all) gives a bounded step instead of a division by zero.
SIGNAL_CLIP = (0.02, 0.98)
_STATE_VERSION = 2


def _valid(x: float | None) -> bool:
    return x is not None and math.isfinite(float(x))


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _logit(s: float) -> float:
    lo, hi = SIGNAL_CLIP
    s = min(max(s, lo), hi)
    return math.log(s / (1.0 - s))


class CoordinatedLRScheduler:
    """Encoder/LLM LR ratio driven by the balance probes.

    Protocol (called by the trainer's hooks after each optimizer step ``step``, counted
    1-based as optimizer steps completed):

    * :meth:`observe` after a probe, with its κ and share_S (either may be ``None`` when the
      probe was skipped); a missing or non-finite signal is counted in :attr:`skipped` and
      takes a slot in the window as "no value", so a run of skipped probes empties the
      window instead of leaving old values in it;
    * :meth:`observe_grad_ratio` every step with the encoder's normalised gradient norm over
      the LLM's (the degradation guard's input; robust rules only);
    * :meth:`maybe_update` every step; it acts only when ``step % update_every == 0``, which
      makes the LRs piecewise constant between updates (METHOD.md §1);
    * :meth:`multipliers` to scale the per-side base LRs.

    With ``enabled=False`` (baselines such as ``constant`` or ``commit_clr``) ``r`` stays 1
    but s̄ is still maintained, so the same balance metrics are logged for every method and
    the aux-loss weight can still be derived from s̄.
    """

    def __init__(self, cfg: BalanceConfig, enabled: bool = True, warmup_steps: int = 0) -> None:
        self.cfg = cfg
        self.enabled = enabled
        self.warmup_steps = warmup_steps
        self._ratio = 1.0
        # last ``window`` probes (None = skipped): the proportional rule's window, and κ's
        self._window: deque[float | None] = deque(maxlen=cfg.window)
        self._kappa_window: deque[float | None] = deque(maxlen=cfg.window)
        self._recent: list[float] = []  # valid signal values since the last update
        self._skipped = 0
        self._updates = 0
        self._last_s_bar: float | None = None
        self._last_update_step = 0
        # robust rules: pooled within-update variance of the signal (sum of squares, dof)
        self._ss = 0.0
        self._dof = 0
        self._last_se: float | None = None
        # degradation guard: normalised grad-norm ratio, early reference and current period
        self._ref = [0.0, 0]  # sum, count over steps (warmup, warmup + update_every]
        self._cur = [0.0, 0]  # sum, count since the last update
        self._last_guard: float | None = None

    # ------------------------------------------------------------------ observation
    def observe(self, step: int, kappa: float | None, share: float | None) -> bool:
        """Record one probe result; returns whether the scheduling signal was usable.

        ``step`` is accepted for symmetry with :meth:`maybe_update` and to make call sites
        self-documenting; values are ordered by call order, not by step.
        """
        del step
        self._kappa_window.append(float(kappa) if _valid(kappa) else None)
        value = share if self.cfg.signal == "share" else kappa
        if not _valid(value):
            self._skipped += 1
            self._window.append(None)
            return False
        self._window.append(float(value))  # type: ignore[arg-type]
        self._recent.append(float(value))  # type: ignore[arg-type]
        return True

    def observe_grad_ratio(self, step: int, ratio: float | None) -> None:
        """Encoder normalised grad norm / LLM normalised grad norm at optimizer step ``step``.

        The early reference is the mean over the ``update_every`` steps after warm-up; the
        current value is the mean over the later steps since the last update (a collapse
        right after the reference period is not diluted by it). Non-finite values are
        ignored.
        """
        if not _valid(ratio):
            return
        if step <= self.warmup_steps:
            return
        acc = self._ref if step <= self.warmup_steps + self.cfg.update_every else self._cur
        acc[0] += float(ratio)  # type: ignore[arg-type]
        acc[1] += 1

    @property
    def guard_value(self) -> float | None:
        """Current grad-norm ratio over its early reference (None until both are known)."""
        if self._ref[1] == 0 or self._cur[1] == 0 or self._ref[0] <= 0:
            return None
        return (self._cur[0] / self._cur[1]) / (self._ref[0] / self._ref[1])

    def _encoder_may_rise(self, step: int) -> bool:
        """The guard: no raise before the reference exists, nor once the encoder degrades."""
        if self.cfg.guard_ratio <= 0:
            return True
        if step <= self.warmup_steps + self.cfg.update_every:
            return False  # reference not complete: we cannot tell degradation from health
        g = self.guard_value
        return g is not None and g >= self.cfg.guard_ratio

    def _degraded(self, step: int) -> bool:
        """The guard fires: reference complete and the current value below ``guard_ratio``.

        Unlike the raise block, this needs evidence: without grad ratios (or before the
        reference exists) nothing is lowered.
        """
        if self.cfg.guard_ratio <= 0 or step <= self.warmup_steps + self.cfg.update_every:
            return False
        g = self.guard_value
        return g is not None and g < self.cfg.guard_ratio

    # ------------------------------------------------------------------ update
    def maybe_update(self, step: int, frozen: bool = False) -> bool:
        """Refresh s̄ (and ``r`` when enabled) if ``step`` is an update step.

        Returns ``True`` when s̄ was recomputed at this step. Nothing happens between update
        steps, when no valid probe is available (keep the current ratio rather than guess),
        or when called twice for the same step (e.g. right after a resume). ``frozen``
        (the LR tail, robust rules) recomputes s̄ but keeps ``r``.
        """
        if step <= 0 or step % self.cfg.update_every != 0 or step == self._last_update_step:
            return False
        if self.cfg.rule == "proportional":
            s_bar = _mean(self._window)
            moved = s_bar is not None
            if moved and self.enabled:
                self._ratio = self.next_ratio(self._ratio, s_bar, self.cfg)
        else:
            s_bar = _mean(self._recent)
            moved = s_bar is not None
            if moved:
                self._robust_update(step, s_bar, frozen)
        self._last_guard = self.guard_value
        self._recent = []
        self._cur = [0.0, 0]
        if not moved:
            return False
        self._last_s_bar = s_bar
        self._last_update_step = step
        self._updates += 1
        return True

    def _robust_update(self, step: int, s_bar: float, frozen: bool) -> None:
        n = len(self._recent)
        self._ss += sum((v - s_bar) ** 2 for v in self._recent)
        self._dof += n - 1
        sd = math.sqrt(self._ss / self._dof) if self._dof > 0 else 0.0
        se = max(sd, self.cfg.std_floor) / math.sqrt(n)
        self._last_se = se
        if not self.enabled or frozen:
            return
        step_log = self.robust_step(s_bar, se, self.cfg) if n >= self.cfg.min_probes else 0.0
        if step_log > 0 and not self._encoder_may_rise(step):
            step_log = 0.0
        if self._degraded(step):  # the encoder LR is too large for it: lower r
            step_log = min(step_log, math.log(self.cfg.guard_lower))
        lo, hi = self.cfg.lr_bounds
        self._ratio = min(max(self._ratio * math.exp(step_log), lo), hi)

    @staticmethod
    def robust_step(s_bar: float, se: float, cfg: BalanceConfig) -> float:
        """Change of log r for mean signal ``s_bar`` with standard error ``se`` (pure).

        Zero inside the dead zone |s̄ − target| < z·se; outside it, ``-gain`` times the
        logit distance from the target of the part of the deviation beyond the dead zone.
        """
        t = cfg.s_target
        dev = s_bar - t
        excess = abs(dev) - cfg.z * se
        if excess <= 0:
            return 0.0
        s_eff = t + math.copysign(excess, dev)
        return -cfg.step_gain * (_logit(s_eff) - _logit(t))

    @staticmethod
    def next_ratio(ratio: float, s_bar: float, cfg: BalanceConfig) -> float:
        """One update of the proportional rule (METHOD.md §3), as a pure function.

        The factor is the odds of the *other* side over this side's odds at target: above
        target (encoder moving the output more than its share) it is < 1 and shifts LR from
        the encoder to the LLM; exactly at target it is 1. ``gain`` is an exponent, i.e. it
        scales the step in log-ratio space.
        """
        lo, hi = SIGNAL_CLIP
        s = min(max(s_bar, lo), hi)
        t = cfg.s_target
        factor = ((1.0 - s) / s) * (t / (1.0 - t))
        r_min, r_max = cfg.lr_bounds
        return min(max(ratio * factor**cfg.step_gain, r_min), r_max)

    # ------------------------------------------------------------------ outputs
    def multipliers(self) -> dict[str, float]:
        """Per-side LR multipliers: product 1 (ratio rules), or both ≤ 1 (slow_dominant)."""
        r = self._ratio
        if self.cfg.rule == "slow_dominant":
            return {"encoder": min(1.0, r), "llm": min(1.0, 1.0 / r)}
        root = math.sqrt(r)
        return {"encoder": root, "llm": 1.0 / root}

    @property
    def ratio(self) -> float:
        """Current encoder/LLM LR ratio r (logged as ``balance/lr_ratio``)."""
        return self._ratio

    @property
    def signal_avg(self) -> float | None:
        """s̄ used at the last update, or the mean of the probes so far before the first one.

        This is the value that weights the aux loss (METHOD.md §4); it only changes at
        update steps once updates have started, like the LRs.
        """
        if self._last_s_bar is not None:
            return self._last_s_bar
        if self.cfg.rule == "proportional":
            return _mean(self._window)
        return _mean(self._recent)

    @property
    def signal_se(self) -> float | None:
        """Standard error of s̄ at the last update (robust rules; logged)."""
        return self._last_se

    @property
    def last_guard(self) -> float | None:
        """The degradation guard's value at the last update (logged)."""
        return self._last_guard

    @property
    def kappa_avg(self) -> float | None:
        """Mean of the valid κ values of the last ``window`` probes (``balance/kappa_avg``)."""
        return _mean(self._kappa_window)

    @property
    def skipped(self) -> int:
        """Probes whose scheduling signal was missing or non-finite."""
        return self._skipped

    @property
    def updates(self) -> int:
        """Number of update steps at which s̄ was recomputed."""
        return self._updates

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable state (floats, ints, lists, None) for checkpoints."""
        return {
            "version": _STATE_VERSION,
            "ratio": self._ratio,
            "window": list(self._window),
            "kappa_window": list(self._kappa_window),
            "recent": list(self._recent),
            "skipped": self._skipped,
            "updates": self._updates,
            "last_s_bar": self._last_s_bar,
            "last_update_step": self._last_update_step,
            "pooled": [self._ss, self._dof],
            "last_se": self._last_se,
            "guard_ref": list(self._ref),
            "guard_cur": list(self._cur),
            "last_guard": self._last_guard,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; ``enabled`` and the config stay as constructed.

        Version 1 states (before the robust rules) load with empty robust-rule state. A
        window longer than ``cfg.window`` (recipe changed between runs) keeps its most
        recent values, matching what the deque would have held.
        """
        version = state.get("version")
        if version not in (1, _STATE_VERSION):
            raise ValueError(f"scheduler state version {version!r} is not {_STATE_VERSION}")

        def opt(v):
            return None if v is None else float(v)

        self._ratio = float(state["ratio"])
        self._window = deque((opt(v) for v in state["window"]), maxlen=self.cfg.window)
        self._kappa_window = deque((opt(v) for v in state["kappa_window"]), maxlen=self.cfg.window)
        self._recent = [float(v) for v in state.get("recent", [])]
        self._skipped = int(state["skipped"])
        self._updates = int(state["updates"])
        self._last_s_bar = opt(state["last_s_bar"])
        self._last_update_step = int(state["last_update_step"])
        ss, dof = state.get("pooled", [0.0, 0])
        self._ss, self._dof = float(ss), int(dof)
        self._last_se = opt(state.get("last_se"))
        ref = state.get("guard_ref", [0.0, 0])
        cur = state.get("guard_cur", [0.0, 0])
        self._ref = [float(ref[0]), int(ref[1])]
        self._cur = [float(cur[0]), int(cur[1])]
        self._last_guard = opt(state.get("last_guard"))
