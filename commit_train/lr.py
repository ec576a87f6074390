"""Base learning-rate schedule per side: linear warm-up, then cosine/linear/constant decay.

A pure function of the step (no state), so resume needs nothing but the step number and
the coordinated scheduler of METHOD.md §3 can multiply on top of it.
"""

from __future__ import annotations

import math

from commit_train.config import TrainConfig


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base LR for optimizer step ``step`` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr_ratio
    if cfg.schedule == "linear":
        return floor + (1.0 - floor) * (1.0 - progress)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def in_lr_tail(step: int, cfg: TrainConfig, below: float) -> bool:
    """Whether ``step`` lies in the schedule's tail: past warm-up, factor under ``below``.

    The coordinated scheduler freezes r there (``balance.freeze_below``); the trainer and
    the offline replay (``benchmarks/guard_replay.py``) must agree on it step for step.
    """
    return step >= cfg.warmup_steps and lr_factor(step, cfg) < below
