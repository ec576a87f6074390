"""The training methods of METHOD.md §5 as :class:`StepHooks` for the trainer.

| method         | encoder side             | LLM side                 | κ probe       |
| constant       | base LR                  | base LR                  | logged only   |
| feature_cd     | trains                   | frozen                   | logged        |
| language_cd    | frozen                   | trains                   | logged        |
| alternating_cd | even blocks of cd_period | odd blocks               | logged        |
| commit_sched   | scheduled by the signal  | scheduled by the signal  | drives LRs    |
| commit_clr     | base LR + aux loss       | base LR + aux loss       | weights aux   |
| commit         | scheduled + aux loss     | scheduled + aux loss     | drives both   |

Every method probes at the same interval and logs the same ``balance/*`` metrics, so runs
line up in MLflow's compare view whatever the method.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from commit_train.balance import BalanceProbe
from commit_train.config import BalanceConfig, RunConfig
from commit_train.errors import ConfigError
from commit_train.hooks import SIDES, StepHooks
from commit_train.losses import aux_weight, get_aux
from commit_train.lr import in_lr_tail
from commit_train.modeling.base import MultimodalLM
from commit_train.partition import param_groups
from commit_train.scheduler import CoordinatedLRScheduler

SCHEDULED = ("commit_sched", "commit")
WITH_AUX = ("commit_clr", "commit")
STATIC_FROZEN = {"feature_cd": ("llm",), "language_cd": ("encoder",)}


def check_probe_setup(cfg: RunConfig) -> None:
    """Set-ups the probe or the scheduler cannot serve: a :class:`ConfigError` naming keys.

    * ``projector_side: llm`` with a trainable projector: the probe caches the projected
      features E_t and reuses them after the LLM step, so the projector's own step would
      never reach KL_llm (or κ); measuring it needs the encoder output before the
      projector, which the model families do not expose.
    * a scheduled method whose probe_every / update_every / window cannot drive its rule.
    """
    m = cfg.model
    if m.projector_side == "llm" and m.tuning.projector != "freeze":
        raise ConfigError(
            "model.projector_side: llm with a trainable projector (model.tuning.projector: "
            f"{m.tuning.projector}): the κ probe reuses the projected features after the LLM "
            "step, so it cannot measure the projector's step; use projector_side: encoder "
            "(the default) or model.tuning.projector: freeze"
        )
    if cfg.method in SCHEDULED:
        problems = cfg.balance.schedule_problems()
        if problems:
            raise ConfigError(f"method {cfg.method!r}: " + "; ".join(problems))


def scheduled_aux_weight(bal: BalanceConfig, sched: CoordinatedLRScheduler) -> float:
    """λ_t from the scheduler's s̄ and, for ``aux_weighting: excess``, its dead zone.

    Excess weighting needs the standard error of an update; before the first one there is
    no evidence of imbalance, so the weight is 0.
    """
    dead_zone = 0.0
    if bal.aux_weighting == "excess":
        se = sched.signal_se
        if se is None:
            return 0.0
        dead_zone = bal.z * se
    return aux_weight(bal.aux_weight, sched.signal_avg, bal.s_target, dead_zone)


class MethodHooks(StepHooks):
    def __init__(
        self,
        cfg: RunConfig,
        mlm: MultimodalLM,
        autocast: Any = None,
        reduce_mean: Any = None,
    ):
        check_probe_setup(cfg)
        self.method = cfg.method
        self.bal = cfg.balance
        self.train_cfg = cfg.train
        self.frozen_sides = STATIC_FROZEN.get(cfg.method, ())
        self.sched = CoordinatedLRScheduler(
            cfg.balance, enabled=cfg.method in SCHEDULED, warmup_steps=cfg.train.warmup_steps
        )
        # the degradation guard's input (robust rules on scheduled methods only)
        self._guarded = cfg.method in SCHEDULED and cfg.balance.rule != "proportional"
        self._sides = param_groups(mlm, cfg.model) if self._guarded else None
        self.aux_fn = get_aux(cfg.balance.aux) if cfg.method in WITH_AUX else None
        self.probe = BalanceProbe(
            mlm, cfg.balance.probe_size, cfg.balance.epsilon, autocast, reduce_mean
        )
        self.probes = 0
        self.probes_skipped = 0
        self._probing = False

    # ---- which sides move and how fast -------------------------------------------------------
    def lr_multipliers(self, step: int) -> dict[str, float]:
        return self.sched.multipliers()

    def trainable_sides(self, step: int) -> tuple[str, ...]:
        if self.frozen_sides:
            return tuple(s for s in SIDES if s not in self.frozen_sides)
        if self.method == "alternating_cd":
            return ("encoder",) if (step // self.bal.cd_period) % 2 == 0 else ("llm",)
        return SIDES

    def aux_weight(self) -> float:
        return scheduled_aux_weight(self.bal, self.sched)

    def extra_loss(self, step: int, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.aux_fn is None:
            return {}
        w = self.aux_weight()
        if w == 0.0:
            return {"loss/aux": out["logits"].new_zeros((), dtype=torch.float32)}
        return {"loss/aux": w * self.aux_fn(out["logits"], self.bal.aux_temperature)}

    # ---- the probe around the two optimizer steps -----------------------------------------------
    def _grad_ratio(self) -> float | None:
        """Encoder normalised grad norm over the LLM's, on the gradients about to be used.

        A common loss scale (grad accumulation, fp16) cancels in the ratio.
        """
        norms = []
        for side in SIDES:
            params = [p for p in self._sides.params(side) if p.grad is not None]
            if not params:
                return None
            g = torch.stack([p.grad.detach().float().norm() for p in params]).norm()
            w = torch.stack([p.detach().float().norm() for p in params]).norm()
            norms.append(float(g) / max(float(w), 1e-12))
        return norms[0] / norms[1] if norms[1] > 0 else None

    def after_backward(self, step: int, batch: dict[str, Any], out: dict[str, Any]) -> None:
        if self._guarded:
            self.sched.observe_grad_ratio(step + 1, self._grad_ratio())
        self._probing = (step + 1) % self.bal.probe_every == 0
        if self._probing:
            t0 = time.perf_counter()
            self.probe.capture(batch, out)
            self.probe_seconds += time.perf_counter() - t0

    def after_encoder_step(self, step: int, stepped: bool) -> None:
        if self._probing:
            t0 = time.perf_counter()
            self.probe.after_encoder_step(stepped)
            self.probe_seconds += time.perf_counter() - t0

    def after_step(self, step: int, stepped: tuple[str, ...]) -> dict[str, float]:
        logs: dict[str, float] = {}
        if self._probing:
            t0 = time.perf_counter()
            res = self.probe.after_llm_step("llm" in stepped)
            self.probe_seconds += time.perf_counter() - t0
            self._probing = False
            if res is not None:
                self.probes += 1
                self.probes_skipped += int(res.skipped)
                self.sched.observe(step + 1, res.kappa, res.share)
                logs.update(res.metrics())
                logs["balance/probes_skipped"] = float(self.probes_skipped)
        done = step + 1
        tail = in_lr_tail(done, self.train_cfg, self.bal.freeze_below)
        updated = self.sched.maybe_update(done, frozen=tail)
        if updated and self.sched.signal_se is not None:
            logs["balance/signal_se"] = self.sched.signal_se
        if updated and self.sched.last_guard is not None:
            logs["balance/encoder_grad_ratio"] = self.sched.last_guard
        if updated or logs:
            logs["balance/lr_ratio"] = self.sched.ratio
            if self.sched.kappa_avg is not None:
                logs["balance/kappa_avg"] = self.sched.kappa_avg
            if self.sched.signal_avg is not None:
                logs["balance/signal_avg"] = self.sched.signal_avg
            if self.aux_fn is not None:
                logs["balance/aux_weight"] = self.aux_weight()
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {
            "scheduler": self.sched.state_dict(),
            "probes": self.probes,
            "probes_skipped": self.probes_skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.sched.load_state_dict(state["scheduler"])
        self.probes = int(state.get("probes", 0))
        self.probes_skipped = int(state.get("probes_skipped", 0))
