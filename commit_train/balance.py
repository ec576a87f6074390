"""The κ probe: how much each side's optimizer step moved the output distribution.

METHOD.md §2. With one optimizer per side the step actually taken can be decomposed
without copying weights or taking a tentative step:

1. before stepping: reference log-probs p(S_t, T_t) at the answer positions of a probe
   subset of the last micro-batch, and its projected encoder features E_t;
2. after the encoder-side step: E_{t+1} = encode(media); p(S_{t+1}, T_t) = LLM(E_{t+1});
3. after the LLM-side step: p(S_{t+1}, T_{t+1}) = LLM(E_{t+1}) and p(S_t, T_{t+1}) = LLM(E_t),
   computed in one batched forward.

KL_S, KL_T and KL_joint compare each to the reference; κ = KL_S / KL_joint and
share_S = KL_S / (KL_S + KL_T). All probe forwards run without grad, in eval mode (no
dropout or stochastic depth, so they draw nothing from the RNG and do not perturb
training), with log-softmax in float32.

The reference must come from the same (eval-mode) forward as the other three, or the KLs
carry an LR-independent floor: EfficientNet-Lite0's stochastic depth, for one, is a
functional call active in training mode that no ``nn.Dropout`` scan sees, and with the
training logits as reference every vision probe read share ≈ 1 whatever the LRs. Even
without a stochastic layer, the training forward (with grad) and an eval forward can
differ by float noise of the order of ``epsilon``, enough to turn a zero-LR probe into a
reading. So the reference is always recomputed in eval mode; at ``probe_size`` 1 that
costs one encoder and one LLM forward of one example (measured in BENCHMARKS.md, "Probe
noise vs cost").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from commit_train.modeling.base import MultimodalLM


def kl_mean(logp_new: torch.Tensor, logp_old: torch.Tensor) -> torch.Tensor:
    """mean over tokens of KL(p_new || p_old), from float32 log-probs (N, V).

    Entries with p_new = 0 (a ``-inf`` logit, e.g. a masked vocabulary slot) contribute 0,
    as in the definition, instead of ``0 * (-inf - -inf) = NaN``; an entry with p_new > 0
    where p_old = 0 gives +inf, which the probe then skips as non-finite.
    """
    terms = logp_new.exp() * (logp_new - logp_old)
    terms = torch.where(torch.isneginf(logp_new), torch.zeros_like(terms), terms)
    return terms.sum(-1).mean()


@dataclass
class ProbeResult:
    kl_encoder: float
    kl_llm: float
    kl_joint: float
    kappa: float | None
    share: float | None
    skipped: bool

    def metrics(self) -> dict[str, float]:
        out = {
            "balance/kl_encoder": self.kl_encoder,
            "balance/kl_llm": self.kl_llm,
            "balance/kl_joint": self.kl_joint,
        }
        if not self.skipped:
            out["balance/kappa"] = float(self.kappa)
            out["balance/share_encoder"] = float(self.share)
        return out


def summarize(kl_s: float, kl_t: float, kl_joint: float, epsilon: float) -> ProbeResult:
    """κ and share_S from the three KLs; skipped (never NaN/inf) when nothing moved."""
    vals = (kl_s, kl_t, kl_joint)
    if not all(math.isfinite(v) for v in vals) or kl_joint < epsilon:
        return ProbeResult(kl_s, kl_t, kl_joint, None, None, True)
    kl_s, kl_t = max(kl_s, 0.0), max(kl_t, 0.0)
    kappa = kl_s / kl_joint
    share = kl_s / (kl_s + kl_t) if kl_s + kl_t > 0 else 0.5
    return ProbeResult(kl_s, kl_t, kl_joint, kappa, share, False)


def has_active_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


class BalanceProbe:
    """Runs the probe around the two optimizer steps; one instance per run."""

    def __init__(
        self,
        mlm: MultimodalLM,
        probe_size: int,
        epsilon: float,
        autocast: Any = None,
        reduce_mean: Any = None,
    ):
        self.mlm = mlm
        self.probe_size = probe_size
        self.epsilon = epsilon
        self.autocast = autocast or torch.autocast
        self.reduce_mean = reduce_mean or (lambda t: t)
        self.dropout = has_active_dropout(mlm)
        self._cache: dict[str, Any] | None = None

    def _subset(self, batch: dict[str, Any]) -> dict[str, Any]:
        k = self.probe_size
        return {
            "input_ids": batch["input_ids"][:k],
            "attention_mask": batch["attention_mask"][:k],
            "labels": batch["labels"][:k],
            "media": {n: v[:k] for n, v in batch["media"].items()},
        }

    @torch.no_grad()
    def _logp(self, sub: dict[str, Any], features: torch.Tensor) -> torch.Tensor:
        with self._ctx():
            logits = self.mlm.answer_logits(
                sub["input_ids"], sub["attention_mask"], sub["labels"], features
            )
        return F.log_softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def _encode(self, sub: dict[str, Any]) -> torch.Tensor:
        with self._ctx():
            return self.mlm.encode(sub["media"])

    def _ctx(self):
        return self.autocast() if callable(self.autocast) else self.autocast

    def _eval(self, fn, *args):
        was = self.mlm.training
        self.mlm.eval()
        try:
            return fn(*args)
        finally:
            self.mlm.train(was)

    def capture(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> None:
        """Step 1, before any optimizer step: reference distribution and E_t."""
        sub = self._subset(batch)
        feats = self._eval(self._encode, sub)
        ref = self._eval(self._logp, sub, feats)
        self._cache = {"sub": sub, "feats_t": feats, "ref": ref}

    def after_encoder_step(self, encoder_stepped: bool) -> None:
        """Step 2: p(S_{t+1}, T_t)."""
        c = self._cache
        if c is None:
            return
        c["feats_t1"] = self._eval(self._encode, c["sub"]) if encoder_stepped else c["feats_t"]
        c["p_s"] = self._eval(self._logp, c["sub"], c["feats_t1"]) if encoder_stepped else c["ref"]

    def after_llm_step(self, llm_stepped: bool) -> ProbeResult | None:
        """Step 3: p(S_{t+1}, T_{t+1}) and p(S_t, T_{t+1}); returns the measurement."""
        c, self._cache = self._cache, None
        if c is None or "p_s" not in c:
            return None
        if llm_stepped:
            # Two forwards of the subset's own shape, not one of twice the batch: a
            # different batch size changes the matmul blocking, and that float noise
            # (KL ~1e-7) would read as a step when nothing moved.
            p_joint = self._eval(self._logp, c["sub"], c["feats_t1"])
            p_t = self._eval(self._logp, c["sub"], c["feats_t"])
        else:
            p_joint, p_t = c["p_s"], c["ref"]
        kls = torch.stack(
            [kl_mean(c["p_s"], c["ref"]), kl_mean(p_t, c["ref"]), kl_mean(p_joint, c["ref"])]
        )
        kls = self.reduce_mean(kls.to(torch.float64))
        return summarize(float(kls[0]), float(kls[1]), float(kls[2]), self.epsilon)
