"""Coordinated encoder/LLM learning-rate scheduler (METHOD.md §3).

The scheduler turns the balance probes of §2 into one number, the encoder/LLM LR **ratio**
``r``, and hands the trainer two multipliers ``m_S = sqrt(r)`` and ``m_T = 1/sqrt(r)`` to
apply on top of the base schedule of :mod:`commit_train.lr`. Using a ratio (rather than two
independent multipliers) keeps ``m_S * m_T = 1``, so the overall LR scale is never eroded by
an imbalanced run; see METHOD.md §3 for the prototype failure that motivated this.

It is deliberately independent of the trainer: it only sees floats (probe values and step
numbers), so it can be unit-tested on synthetic sequences and its whole state is a small
JSON-serialisable dict that goes into checkpoints.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from commit_train.config import BalanceConfig

# s̄ is clipped before the log-odds step so a degenerate probe (one side not moving the
# output at all) gives a bounded step instead of a division by zero.
SIGNAL_CLIP = (0.02, 0.98)
_STATE_VERSION = 1


def _valid(x: float | None) -> bool:
    return x is not None and math.isfinite(float(x))


def _mean(values: deque[float]) -> float | None:
    return sum(values) / len(values) if values else None


class CoordinatedLRScheduler:
    """Encoder/LLM LR ratio driven by a window of balance-probe values.

    Protocol (called by the trainer after each optimizer step ``step``, counted 1-based as
    optimizer steps completed):

    * :meth:`observe` after a probe, with its κ and share_S (either may be ``None`` when the
      probe was skipped); non-finite or missing values of the scheduling signal are ignored
      and counted in :attr:`skipped`, so one bad probe can never poison ``r``;
    * :meth:`maybe_update` every step; it acts only when ``step % update_every == 0``, which
      is what makes the LRs piecewise constant between updates (METHOD.md §1: the paper
      changes the LRs only every ``L_lr`` steps);
    * :meth:`multipliers` to scale the per-side base LRs.

    With ``enabled=False`` (baselines such as ``constant`` or ``commit_clr``) ``r`` stays 1
    but the windows and s̄ are still maintained, so the same balance metrics are logged for
    every method and the aux-loss weight can still be derived from s̄.
    """

    def __init__(self, cfg: BalanceConfig, enabled: bool = True) -> None:
        self.cfg = cfg
        self.enabled = enabled
        self._ratio = 1.0
        # Valid values of the scheduling signal, and (separately) of κ for logging; each
        # keeps the last ``cfg.window`` valid values.
        self._window: deque[float] = deque(maxlen=cfg.window)
        self._kappa_window: deque[float] = deque(maxlen=cfg.window)
        self._skipped = 0
        self._updates = 0
        self._last_s_bar: float | None = None
        self._last_update_step = 0

    # ------------------------------------------------------------------ observation
    def observe(self, step: int, kappa: float | None, share: float | None) -> bool:
        """Record one probe result; returns whether the scheduling signal was usable.

        ``step`` is accepted for symmetry with :meth:`maybe_update` and to make call sites
        self-documenting; the window is ordered by call order, not by step.
        """
        del step
        if _valid(kappa):
            self._kappa_window.append(float(kappa))  # type: ignore[arg-type]
        value = share if self.cfg.signal == "share" else kappa
        if not _valid(value):
            self._skipped += 1
            return False
        self._window.append(float(value))  # type: ignore[arg-type]
        return True

    # ------------------------------------------------------------------ update
    def maybe_update(self, step: int) -> bool:
        """Refresh s̄ (and ``r`` when enabled) if ``step`` is an update step.

        Returns ``True`` when s̄ was recomputed at this step. Nothing happens between update
        steps, when the window is empty (no valid probe yet: keep the current ratio rather
        than guess), or when called twice for the same step (e.g. right after a resume).
        """
        if step <= 0 or step % self.cfg.update_every != 0 or step == self._last_update_step:
            return False
        s_bar = _mean(self._window)
        if s_bar is None:
            return False
        self._last_s_bar = s_bar
        self._last_update_step = step
        self._updates += 1
        if self.enabled:
            self._ratio = self.next_ratio(self._ratio, s_bar, self.cfg)
        return True

    @staticmethod
    def next_ratio(ratio: float, s_bar: float, cfg: BalanceConfig) -> float:
        """One update of METHOD.md §3, as a pure function (also used by the tests).

        The factor is the odds of the *other* side over this side's odds at target: above
        target (encoder moving the output more than its share) it is < 1 and shifts LR from
        the encoder to the LLM; exactly at target it is 1. ``gain`` is an exponent, i.e. it
        scales the step in log-ratio space.
        """
        lo, hi = SIGNAL_CLIP
        s = min(max(s_bar, lo), hi)
        t = cfg.s_target
        factor = ((1.0 - s) / s) * (t / (1.0 - t))
        return min(max(ratio * factor**cfg.gain, cfg.r_min), cfg.r_max)

    # ------------------------------------------------------------------ outputs
    def multipliers(self) -> dict[str, float]:
        """Per-side LR multipliers; their product is 1 so the overall LR scale is kept."""
        root = math.sqrt(self._ratio)
        return {"encoder": root, "llm": 1.0 / root}

    @property
    def ratio(self) -> float:
        """Current encoder/LLM LR ratio r (logged as ``balance/lr_ratio``)."""
        return self._ratio

    @property
    def signal_avg(self) -> float | None:
        """s̄ used at the last update, or the current window mean before the first update.

        This is the value that weights the aux loss (METHOD.md §4); it only changes at
        update steps once updates have started, like the LRs.
        """
        if self._last_s_bar is not None:
            return self._last_s_bar
        return _mean(self._window)

    @property
    def kappa_avg(self) -> float | None:
        """Mean of the valid κ values in the window (logged as ``balance/kappa_avg``)."""
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
        """Plain JSON-serialisable state (floats, ints, lists) for checkpoints."""
        return {
            "version": _STATE_VERSION,
            "ratio": self._ratio,
            "window": list(self._window),
            "kappa_window": list(self._kappa_window),
            "skipped": self._skipped,
            "updates": self._updates,
            "last_s_bar": self._last_s_bar,
            "last_update_step": self._last_update_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; ``enabled`` and the config stay as constructed.

        A window longer than ``cfg.window`` (recipe changed between runs) keeps its most
        recent values, matching what the deque would have held.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"scheduler state version {state.get('version')!r} is not {_STATE_VERSION}"
            )
        self._ratio = float(state["ratio"])
        self._window = deque((float(v) for v in state["window"]), maxlen=self.cfg.window)
        self._kappa_window = deque(
            (float(v) for v in state["kappa_window"]), maxlen=self.cfg.window
        )
        self._skipped = int(state["skipped"])
        self._updates = int(state["updates"])
        last = state["last_s_bar"]
        self._last_s_bar = None if last is None else float(last)
        self._last_update_step = int(state["last_update_step"])
