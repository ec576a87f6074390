"""Extension points of one optimizer step, shared by the trainer and the methods."""

from __future__ import annotations

from typing import Any

import torch

SIDES = ("encoder", "llm")


class StepHooks:
    """Extension points of one optimizer step (``commit_train.methods`` implements them).

    ``lr_multipliers`` scales each side's base LR; ``trainable_sides`` lets coordinate
    descent baselines skip a side's step; ``extra_loss`` adds terms to CE;
    ``after_backward`` sees the last micro-batch before any step (the κ probe's reference);
    ``after_encoder_step`` runs between the two optimizer steps; ``after_step`` returns
    metrics to log; ``state_dict``/``load_state_dict`` fill the checkpoint's balance slot.
    """

    #: sides a method never trains: their parameters are frozen and get no optimizer
    frozen_sides: tuple[str, ...] = ()
    #: seconds spent in balance probes so far (for ``time/probe_fraction``)
    probe_seconds: float = 0.0

    def lr_multipliers(self, step: int) -> dict[str, float]:
        return {"encoder": 1.0, "llm": 1.0}

    def trainable_sides(self, step: int) -> tuple[str, ...]:
        return SIDES

    def extra_loss(self, step: int, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {}

    def after_backward(self, step: int, batch: dict[str, Any], out: dict[str, Any]) -> None:
        return None

    def after_encoder_step(self, step: int, stepped: bool) -> None:
        return None

    def after_step(self, step: int, stepped: tuple[str, ...]) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
