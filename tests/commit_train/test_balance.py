"""The κ probe (METHOD.md §2) against a brute-force reference, on the tiny composite model.

The reference is test-only code: it takes the parameters the real trainer had before and
after one optimizer step, builds the four models p(S_t,T_t), p(S_{t+1},T_t),
p(S_t,T_{t+1}), p(S_{t+1},T_{t+1}) by mixing encoder-side and LLM-side parameters, runs
each in eval mode (log-softmax in float32, as METHOD.md asks) and computes the KLs with ``F.kl_div`` — none of it shares
code with :mod:`commit_train.balance` beyond the model's own forward.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from commit_train import trainer as trainer_mod
from commit_train.balance import BalanceProbe, ProbeResult, has_active_dropout, summarize
from commit_train.config import RunConfig, validate
from commit_train.methods import MethodHooks
from commit_train.partition import param_groups
from commit_train.tracking import RunTracker
from tests.conftest import tiny_recipe_dict


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the
    thread hand-off makes each step ~10x slower; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# helpers shared with test_methods.py: run the real trainer and record what happened


def _snapshot(mlm) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in mlm.model.named_parameters()}


class Recorded:
    """What one :func:`run_recorded` call saw: the hooks, per-step records, logged history."""

    def __init__(self) -> None:
        self.hooks: MethodHooks | None = None
        self.tracker: RunTracker | None = None
        self.cfg: RunConfig | None = None
        self.steps: list[dict[str, Any]] = []

    @property
    def history(self) -> dict[str, list[tuple[int, float]]]:
        return self.tracker.history

    def series(self, name: str) -> list[float]:
        return [v for _, v in self.history.get(name, [])]

    def probe_logs(self) -> list[dict[str, float]]:
        return [s["logs"] for s in self.steps if "balance/kl_joint" in s["logs"]]


def run_recorded(
    parts,
    tmp_path,
    monkeypatch,
    *,
    method: str = "constant",
    snapshots: bool = False,
    model: dict | None = None,
    balance: dict | None = None,
    **train,
) -> Recorded:
    """``commit_train.trainer.train`` on the tiny recipe, recording hooks and metrics.

    The trainer builds its own :class:`MethodHooks`; a subclass is patched in so the test
    sees exactly what the trainer ran (batches, parameters before/after each step when
    ``snapshots``, the hooks' returned logs) and the tracker's full metric history.
    """
    rec = Recorded()

    class Hooks(MethodHooks):
        def __init__(self, cfg, mlm, *a, **kw):
            super().__init__(cfg, mlm, *a, **kw)
            self.mlm = mlm
            rec.hooks = self

        def after_backward(self, step, batch, out):
            entry = {"step": step, "batch": batch}
            if snapshots:
                entry["before"] = _snapshot(self.mlm)
            rec.steps.append(entry)
            super().after_backward(step, batch, out)

        def after_step(self, step, stepped):
            logs = super().after_step(step, stepped)
            entry = rec.steps[-1]
            entry.update(stepped=stepped, logs=dict(logs))
            if snapshots:
                entry["after"] = _snapshot(self.mlm)
            return logs

    class Tracker(RunTracker):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            rec.tracker = self

    monkeypatch.setattr(trainer_mod, "MethodHooks", Hooks)
    monkeypatch.setattr(trainer_mod, "RunTracker", Tracker)
    raw = tiny_recipe_dict(parts, tmp_path / "run")
    raw["method"] = method
    raw["data"]["val"] = None
    raw["tracking"]["enabled"] = False
    raw["train"].update(
        {"eval_every": 0, "save_every": 0, "warmup_steps": 0, "schedule": "constant"}
    )
    raw["train"].update(train)
    for key, value in (model or {}).items():
        if isinstance(value, dict):
            raw["model"].setdefault(key, {}).update(value)
        else:
            raw["model"][key] = value
    raw["balance"] = {"probe_every": 1, **(balance or {})}
    rec.cfg = validate(raw)
    trainer_mod.train(rec.cfg)
    return rec


def side_names(mlm, cfg: RunConfig) -> dict[str, set[str]]:
    groups = param_groups(mlm, cfg.model)
    return {side: {n for n, _ in getattr(groups, side)} for side in ("encoder", "llm")}


def changed(before: dict, after: dict, names: set[str]) -> bool:
    return any(not torch.equal(before[n], after[n]) for n in names)


# ---------------------------------------------------------------------------------------------
# the brute-force reference


def reference_kls(mlm, cfg: RunConfig, entry: dict[str, Any]) -> tuple[float, float, float]:
    """KL_S, KL_T, KL_joint of the step in ``entry`` from four separately built models."""
    sides = side_names(mlm, cfg)
    k = cfg.balance.probe_size
    b = entry["batch"]
    sub = {
        "input_ids": b["input_ids"][:k],
        "attention_mask": b["attention_mask"][:k],
        "labels": b["labels"][:k],
        "media": {n: v[:k] for n, v in b["media"].items()},
    }
    model = copy.deepcopy(mlm).eval()
    # accelerate wraps a mixed-precision model's forward in autocast; the reference is fp32
    forward = getattr(model, "_original_forward", model.forward)

    def logp(s_new: bool, t_new: bool) -> torch.Tensor:
        state = dict(entry["before"])
        for side, new in (("encoder", s_new), ("llm", t_new)):
            if new:
                state.update({n: entry["after"][n] for n in sides[side]})
        with torch.no_grad():
            for n, p in model.model.named_parameters():
                p.copy_(state[n])
            logits = forward(**sub)["logits"]
        return F.log_softmax(logits.float(), dim=-1).double()

    ref = logp(False, False)

    def kl(new: torch.Tensor) -> float:  # mean over tokens of KL(new || ref)
        return float(F.kl_div(ref, new, log_target=True, reduction="batchmean"))

    return kl(logp(True, False)), kl(logp(False, True)), kl(logp(True, True))


@pytest.mark.parametrize(
    ("dropout", "grad_accum", "precision"),
    [(0.1, 1, "fp32"), (0.0, 1, "fp32"), (0.0, 2, "fp32"), (0.0, 1, "bf16")],
    ids=[
        "lora-dropout-eval-reference",
        "no-dropout-reuses-training-logits",
        "grad-accum-2",
        # bf16 training, fp32 weights: the probe measures the step in fp32, not bf16 rounding
        "bf16-training-fp32-probe",
    ],
)
def test_probe_matches_brute_force(
    tiny_parts, tmp_path, monkeypatch, dropout, grad_accum, precision
):
    rec = run_recorded(
        tiny_parts,
        tmp_path,
        monkeypatch,
        snapshots=True,
        model={"lora": {"dropout": dropout}},
        balance={"probe_size": 3},  # a strict subset of the batch of 4
        steps=2,
        grad_accum=grad_accum,
        lr_encoder=3e-2,
        lr_llm=3e-2,
        precision=precision,
    )
    hooks = rec.hooks
    assert hooks.probe.dropout is (dropout > 0)
    assert has_active_dropout(hooks.mlm) is (dropout > 0)
    sides = side_names(hooks.mlm, rec.cfg)
    # the last step is still in memory: the model's parameters are that step's "after"
    entry = rec.steps[-1]
    assert entry["stepped"] == ("encoder", "llm")
    assert changed(entry["before"], entry["after"], sides["encoder"])
    assert changed(entry["before"], entry["after"], sides["llm"])
    # with accumulation the probe saw the last micro-batch of the step
    assert len(rec.steps) == 2
    got = entry["logs"]
    want = reference_kls(hooks.mlm, rec.cfg, entry)
    assert all(v > 1e-7 for v in want), want  # the step moved the output measurably
    names = ("balance/kl_encoder", "balance/kl_llm", "balance/kl_joint")
    for name, ref in zip(names, want, strict=True):
        assert got[name] == pytest.approx(ref, rel=1e-4, abs=1e-9), name
    assert got["balance/kappa"] == pytest.approx(want[0] / want[2], rel=1e-3)
    assert got["balance/share_encoder"] == pytest.approx(want[0] / (want[0] + want[1]), rel=1e-3)
    assert hooks.probes == 2 and hooks.probes_skipped == 0
    for step, value in rec.history["balance/kappa"]:
        assert math.isfinite(value) and step in (1, 2)


def test_probe_with_grad_accum_is_finite_every_step(tiny_parts, tmp_path, monkeypatch):
    rec = run_recorded(tiny_parts, tmp_path, monkeypatch, steps=4, grad_accum=2)
    assert rec.hooks.probes == 4
    for name in ("balance/kappa", "balance/share_encoder", "balance/kl_joint"):
        values = rec.series(name)
        assert len(values) == 4 and all(math.isfinite(v) for v in values), name
    assert all(0.0 <= v <= 1.0 for v in rec.series("balance/share_encoder"))
    assert 0.0 < rec.series("time/probe_fraction")[-1] < 1.0


def test_probe_leaves_training_untouched(tiny_parts, tmp_path, monkeypatch):
    """Probing draws no RNG and changes no weight: probe on/off train to identical params."""
    on = run_recorded(tiny_parts, tmp_path / "on", monkeypatch, steps=3)
    off = run_recorded(
        tiny_parts, tmp_path / "off", monkeypatch, steps=3, balance={"probe_every": 100}
    )
    assert on.hooks.probes == 3 and off.hooks.probes == 0
    assert off.series("balance/kappa") == [] and off.series("time/probe_fraction")[-1] == 0.0
    a, b = _snapshot(on.hooks.mlm), _snapshot(off.hooks.mlm)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=0, msg=n)
    assert on.series("loss/train") == off.series("loss/train")


# ---------------------------------------------------------------------------------------------
# skipped probes


@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_zero_learning_rates_skip_every_probe(tiny_parts, tmp_path, monkeypatch, dropout):
    rec = run_recorded(
        tiny_parts,
        tmp_path,
        monkeypatch,
        model={"lora": {"dropout": dropout}},
        steps=4,
        lr_encoder=0.0,
        lr_llm=0.0,
    )
    assert rec.hooks.probes == 4 and rec.hooks.probes_skipped == 4
    assert rec.history["balance/probes_skipped"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    for name in ("balance/kappa", "balance/share_encoder", "balance/kappa_avg"):
        assert rec.series(name) == [], name
    assert all(v < rec.cfg.balance.epsilon for v in rec.series("balance/kl_joint"))
    for values in rec.history.values():
        assert all(math.isfinite(v) for _, v in values)
    assert rec.hooks.sched.skipped == 4


def test_summarize_skips_without_nan():
    eps = 1e-8
    ok = summarize(2e-3, 1e-3, 4e-3, eps)
    assert not ok.skipped and ok.kappa == pytest.approx(0.5) and ok.share == pytest.approx(2 / 3)
    assert set(ok.metrics()) >= {"balance/kappa", "balance/share_encoder"}
    for kls in [
        (0.0, 0.0, 0.0),
        (1e-12, 1e-12, 5e-9),
        (math.nan, 1e-3, 1e-3),
        (1e-3, 1e-3, math.inf),
    ]:
        res = summarize(*kls, eps)
        assert res.skipped and res.kappa is None and res.share is None, kls
        assert "balance/kappa" not in res.metrics()
    # tiny negative KLs from rounding are clamped, never a negative κ
    neg = summarize(-1e-12, 1e-3, 1e-3, eps)
    assert neg.kappa == 0.0 and neg.share == 0.0
    assert isinstance(neg, ProbeResult)


def test_probe_without_reference_returns_none(tiny_parts):
    """Steps that did not capture (not a probe step) produce no measurement."""
    raw = tiny_recipe_dict(tiny_parts, tiny_parts["train"].parent / "unused")
    from commit_train.modeling import load_model

    mlm, _ = load_model(validate(raw).model)
    probe = BalanceProbe(mlm, probe_size=2, epsilon=1e-8)
    probe.after_encoder_step(True)
    assert probe.after_llm_step(True) is None
