"""Label-free auxiliary losses for CoMMIT (METHOD.md §4) and their imbalance-driven weight.

The paper's exact auxiliary loss is unknown, so the form is pluggable: a loss is any
``fn(logits, temperature) -> scalar tensor`` registered under a name with
:func:`register_aux` and selected by ``balance.aux`` in the recipe. The default,
``self_distill``, pulls the output toward its own sharpened prediction; it needs no labels
and keeps both modules changing the output distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from commit_train.errors import ConfigError

AuxLoss = Callable[[torch.Tensor, float], torch.Tensor]

_REGISTRY: dict[str, AuxLoss] = {}


def register_aux(name: str) -> Callable[[AuxLoss], AuxLoss]:
    """Decorator registering an aux loss under ``name``.

    Registering a *different* function under a taken name raises ``ValueError``: silently
    replacing a loss would make two runs with the same recipe compute different things.
    """

    def deco(fn: AuxLoss) -> AuxLoss:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(f"aux loss {name!r} is already registered ({existing!r})")
        _REGISTRY[name] = fn
        return fn

    return deco


def known_aux() -> list[str]:
    """Registered aux-loss names, sorted."""
    return sorted(_REGISTRY)


def get_aux(name: str) -> AuxLoss:
    """The aux loss registered as ``name``; a recipe typo gives a :class:`ConfigError`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"balance.aux: unknown auxiliary loss {name!r}; known: {', '.join(known_aux())}"
        ) from None


@register_aux("self_distill")
def self_distill(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``mean_tokens KL( stopgrad(softmax(z/τ)) || softmax(z) )`` in float32.

    ``logits`` holds the answer-position logits, shape ``(N_answer_tokens, vocab)`` (any
    leading dims are flattened). The target is detached, so the gradient only moves the
    model toward its sharpened prediction (τ < 1) and never toward a flatter target; its
    gradient w.r.t. ``z`` is ``(softmax(z) - softmax(z/τ)) / N``. Vocabulary entries masked
    with ``-inf`` contribute 0 instead of NaN. With no answer tokens the loss is a zero that
    still depends on ``logits``, so ``backward()`` works uniformly.
    """
    if temperature <= 0:
        raise ValueError(f"aux temperature must be > 0, got {temperature}")
    z = logits.float().reshape(-1, logits.shape[-1])
    if z.shape[0] == 0:
        return z.sum() * 0.0
    log_p = F.log_softmax(z, dim=-1)
    log_q = F.log_softmax(z.detach() / temperature, dim=-1)
    q = log_q.exp()
    per_entry = torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q))
    return per_entry.sum(dim=-1).mean()


def aux_weight(lam: float, s_bar: float | None, s_target: float, dead_zone: float = 0.0) -> float:
    """``λ_t = λ · max(0, |s̄ − s_target| − dead_zone) / s_target``: the aux loss matters only
    when imbalanced.

    ``dead_zone`` 0 is METHOD.md §4's weight. A positive one (``balance.aux_weighting:
    excess``: the robust rule's z standard errors) weights only the part of the deviation
    the probes can tell from noise, so the aux term acts on the same evidence the LR step
    does. Returns 0 when s̄ is unknown (no valid probe yet) or non-finite, so the aux term
    cannot act on stale or broken balance information.
    """
    if s_target <= 0:
        raise ValueError(f"s_target must be > 0, got {s_target}")
    if s_bar is None or not math.isfinite(s_bar):
        return 0.0
    return lam * max(0.0, abs(s_bar - s_target) - dead_zone) / s_target
