"""The methods of METHOD.md §5 as trainer hooks, run through the real trainer on tiny models.

Each test checks an observable consequence a wrong implementation would break: which
parameters move in a step, what the κ probe reports when a side is frozen, how the logged
LRs relate to the base schedule and the scheduler's ratio, where the aux loss's gradient
goes, and that bad balance settings fail at load with the key named.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from commit_train.config import apply_overrides, validate
from commit_train.data.collate import Collator
from commit_train.data.records import read_records
from commit_train.errors import ConfigError
from commit_train.losses import get_aux, known_aux
from commit_train.lr import lr_factor
from commit_train.methods import MethodHooks
from commit_train.modeling import load_model
from commit_train.partition import apply_tuning, param_groups
from tests.commit_train.test_balance import changed, run_recorded, side_names
from tests.conftest import tiny_recipe_dict


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the
    thread hand-off makes each step ~10x slower; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# ---------------------------------------------------------------------------------------------
# finding (a): the encoder LR moves κ toward 1


def test_kappa_rises_with_encoder_lr(tiny_parts, tmp_path, monkeypatch):
    means = {}
    for mult in (0.1, 1.0, 10.0):
        rec = run_recorded(
            tiny_parts,
            tmp_path / f"x{mult}",
            monkeypatch,
            steps=20,
            lr_encoder=1e-3 * mult,
            lr_llm=3e-3,
        )
        kappas = rec.series("balance/kappa")
        assert len(kappas) == 20 and all(k >= 0 and math.isfinite(k) for k in kappas)
        means[mult] = (_mean(kappas), _mean(rec.series("balance/share_encoder")))
    # measured: κ 0.06 / 0.19 / 0.39, share 0.09 / 0.27 / 0.47 (seed 0)
    assert means[0.1][0] < means[1.0][0] < means[10.0][0], means
    assert means[0.1][1] < means[1.0][1] < means[10.0][1], means
    assert means[10.0][0] > 2 * means[0.1][0], means


# ---------------------------------------------------------------------------------------------
# coordinate-descent baselines: which side moves


@pytest.mark.parametrize(
    ("method", "moving", "frozen"),
    [("feature_cd", "encoder", "llm"), ("language_cd", "llm", "encoder")],
)
def test_single_side_methods(tiny_parts, tmp_path, monkeypatch, method, moving, frozen):
    rec = run_recorded(
        tiny_parts, tmp_path, monkeypatch, method=method, snapshots=True, steps=3, lr_llm=1e-2
    )
    mlm = rec.hooks.mlm
    assert rec.hooks.frozen_sides == (frozen,)
    groups = param_groups(mlm, rec.cfg.model)
    assert getattr(groups, frozen) == []  # the frozen side has no trainable parameter at all
    every = {n for n, _ in mlm.model.named_parameters()}
    moving_names = side_names(mlm, rec.cfg)[moving]
    for entry in rec.steps:
        assert entry["stepped"] == (moving,)
        assert changed(entry["before"], entry["after"], moving_names)
        assert not changed(entry["before"], entry["after"], every - moving_names)
    assert rec.series(f"lr/{frozen}") == [0.0, 0.0, 0.0]
    assert all(v > 0 for v in rec.series(f"lr/{moving}"))
    kl_s, kl_t = rec.series("balance/kl_encoder"), rec.series("balance/kl_llm")
    kl_joint, kappa = rec.series("balance/kl_joint"), rec.series("balance/kappa")
    assert len(kappa) == 3 and all(v > 1e-6 for v in kl_joint)
    if method == "feature_cd":
        assert all(abs(v) < 1e-9 for v in kl_t)
        assert kl_s == pytest.approx(kl_joint, rel=1e-6)
        assert kappa == pytest.approx([1.0] * 3)
        assert rec.series("balance/share_encoder") == pytest.approx([1.0] * 3)
    else:
        assert all(abs(v) < 1e-9 for v in kl_s)
        assert kl_t == pytest.approx(kl_joint, rel=1e-6)
        assert kappa == pytest.approx([0.0] * 3, abs=1e-9)
        assert rec.series("balance/share_encoder") == pytest.approx([0.0] * 3, abs=1e-9)


def test_alternating_cd_steps_one_side_per_block(tiny_parts, tmp_path, monkeypatch):
    rec = run_recorded(
        tiny_parts,
        tmp_path,
        monkeypatch,
        method="alternating_cd",
        snapshots=True,
        balance={"cd_period": 2},
        steps=6,
        lr_llm=1e-2,
    )
    names = side_names(rec.hooks.mlm, rec.cfg)
    expected = ["encoder", "encoder", "llm", "llm", "encoder", "encoder"]
    assert [e["stepped"] for e in rec.steps] == [(s,) for s in expected]
    for entry, side in zip(rec.steps, expected, strict=True):
        other = "llm" if side == "encoder" else "encoder"
        assert changed(entry["before"], entry["after"], names[side]), entry["step"]
        assert not changed(entry["before"], entry["after"], names[other]), entry["step"]
        # the probe sees only the side that moved
        kappa = entry["logs"]["balance/kappa"]
        assert kappa == pytest.approx(1.0 if side == "encoder" else 0.0, abs=1e-9)
    for side in ("encoder", "llm"):
        lrs = rec.series(f"lr/{side}")
        assert [v > 0 for v in lrs] == [s == side for s in expected], side


# ---------------------------------------------------------------------------------------------
# coordinated LR scheduler inside the trainer


@pytest.mark.parametrize("method", ["commit_sched", "commit", "constant"])
def test_scheduled_lrs_keep_product_and_follow_ratio(tiny_parts, tmp_path, monkeypatch, method):
    rec = run_recorded(
        tiny_parts,
        tmp_path,
        monkeypatch,
        method=method,
        balance={"update_every": 2, "rule": "proportional", "window": 2},
        steps=8,
        warmup_steps=2,
        schedule="cosine",
    )
    cfg = rec.cfg.train
    lr_s, lr_t = rec.series("lr/encoder"), rec.series("lr/llm")
    ratios = rec.series("balance/lr_ratio")
    assert len(lr_s) == len(lr_t) == len(ratios) == 8
    previous = 1.0
    for i, (a, b) in enumerate(zip(lr_s, lr_t, strict=True)):
        factor = lr_factor(i, cfg)
        m_s, m_t = a / (cfg.lr_encoder * factor), b / (cfg.lr_llm * factor)
        assert m_s * m_t == pytest.approx(1.0, rel=1e-9), i  # m_S·m_T = 1
        # the multipliers of step i come from the ratio set at the end of step i-1
        assert m_s / m_t == pytest.approx(previous, rel=1e-9), i
        previous = ratios[i]
    if method == "constant":
        assert ratios == [1.0] * 8
        assert lr_s == pytest.approx([cfg.lr_encoder * lr_factor(i, cfg) for i in range(8)])
    else:
        # updates at steps 2, 4, 6, 8 move r; probes in between leave it alone
        assert ratios[0] == 1.0 and ratios[1] != 1.0
        assert ratios[2] == ratios[1] and ratios[4] == ratios[3]
        assert rec.hooks.sched.updates == 4
        # share < 0.5 on this model (the encoder under-moves the output): r grows
        assert _mean(rec.series("balance/share_encoder")) < 0.5 and ratios[-1] > 1.0


@pytest.mark.parametrize("method", ["commit", "commit_clr", "constant"])
def test_aux_loss_logged_for_aux_methods(tiny_parts, tmp_path, monkeypatch, method):
    rec = run_recorded(tiny_parts, tmp_path, monkeypatch, method=method, steps=4)
    aux = rec.series("loss/aux")
    if method == "constant":
        assert aux == [] and "balance/aux_weight" not in rec.history
        assert rec.series("loss/train") == pytest.approx(rec.series("loss/ce"))
        return
    assert len(aux) == 4 and aux[0] == 0.0  # no probe yet at step 1: weight 0
    assert all(v > 0 for v in aux[1:])  # imbalanced (share ≠ 0.5): a positive term
    weights = rec.series("balance/aux_weight")
    assert all(w > 0 for w in weights)
    total = [c + a for c, a in zip(rec.series("loss/ce"), aux, strict=True)]
    assert rec.series("loss/train") == pytest.approx(total)


def test_excess_aux_weight_acts_only_beyond_the_dead_zone(tiny_parts, tmp_path, monkeypatch):
    """``aux_weighting: excess``: no aux term before the first update (no standard error
    yet), then λ·max(0, |s̄ − t| − z·SE)/t from the values the scheduler logs."""
    bal = {"aux_weighting": "excess", "probe_every": 1, "update_every": 3, "z": 0.5}
    rec = run_recorded(tiny_parts, tmp_path, monkeypatch, method="commit_clr", balance=bal, steps=9)
    aux = rec.series("loss/aux")
    assert aux[:3] == [0.0, 0.0, 0.0]  # steps 1-3 run before the first update
    b = rec.cfg.balance
    weights = rec.history["balance/aux_weight"]
    s_bar = dict(rec.history["balance/signal_avg"])
    se = dict(rec.history["balance/signal_se"])
    assert sorted(se) == [3, 6, 9]  # the updates
    for step, w in weights:  # logged with every probe; it holds the last update's value
        last = max((u for u in se if u <= step), default=None)
        if last is None:
            assert w == 0.0
            continue
        excess = max(0.0, abs(s_bar[last] - b.s_target) - b.z * se[last])
        assert w == pytest.approx(b.aux_weight * excess / b.s_target)
    assert any(w > 0 for _, w in weights)  # this tiny model is far from balance


def test_excess_aux_weight_is_silent_on_noise(tiny_parts, tmp_path, monkeypatch):
    """Where no deviation is significant, ``commit`` with excess weighting is exactly
    ``commit_sched``: the aux loss cannot lock in the model's early guesses on noise."""
    bal = {"aux_weighting": "excess", "probe_every": 1, "update_every": 3, "z": 1e6}
    losses = {}
    for method in ("commit", "commit_sched"):
        rec = run_recorded(
            tiny_parts, tmp_path / method, monkeypatch, method=method, balance=bal, steps=6
        )
        losses[method] = rec.series("loss/train")
    assert losses["commit"] == pytest.approx(losses["commit_sched"], rel=1e-6, abs=1e-7)


def _model_and_batch(parts, tmp_path, method):
    raw = tiny_recipe_dict(parts, tmp_path / "run")
    raw["method"] = method
    cfg = validate(raw)
    mlm, proc = load_model(cfg.model, seed=0)
    apply_tuning(mlm, cfg.model)
    recs, _ = read_records(cfg.data.train)
    batch = Collator(proc, cfg.data.max_length)(recs[:4], root=parts["train"].parent)
    return cfg, mlm, batch


def test_aux_gradient_reaches_both_sides(tiny_parts, tmp_path):
    cfg, mlm, batch = _model_and_batch(tiny_parts, tmp_path, "commit")
    groups = param_groups(mlm, cfg.model)
    hooks = MethodHooks(cfg, mlm)
    mlm.eval()
    args = {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "media")}

    def grad_norms(share: float) -> tuple[float, dict[str, float]]:
        mlm.zero_grad(set_to_none=True)
        hooks.sched.load_state_dict({**hooks.sched.state_dict(), "last_s_bar": share})
        aux = hooks.extra_loss(0, mlm(**args))["loss/aux"]
        if aux.requires_grad:
            aux.backward()
        norms = {
            side: math.sqrt(
                sum(float(p.grad.pow(2).sum()) for p in groups.params(side) if p.grad is not None)
            )
            for side in ("encoder", "llm")
        }
        return float(aux.detach()), norms

    value, norms = grad_norms(0.9)  # encoder-dominated: λ_t = 0.1·0.4/0.5
    assert value > 0 and norms["encoder"] > 0 and norms["llm"] > 0, (value, norms)
    # the logged term is λ_t times the registered loss
    with torch.no_grad():
        plain = get_aux(cfg.balance.aux)(mlm(**args)["logits"], cfg.balance.aux_temperature)
    assert value == pytest.approx(0.08 * float(plain), rel=1e-5)
    value, norms = grad_norms(0.5)  # balanced: no aux term, no gradient
    assert value == 0.0 and norms == {"encoder": 0.0, "llm": 0.0}
    constant = validate(tiny_recipe_dict(tiny_parts, tmp_path / "run"))
    assert MethodHooks(constant, mlm).extra_loss(0, {"logits": torch.zeros(2, 3)}) == {}


def test_self_distill_gradient_pushes_toward_sharpened_output():
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, -1.0]], requires_grad=True)
    loss = get_aux("self_distill")(z, 0.5)
    loss.backward()
    expect = (F.softmax(z, -1) - F.softmax(z.detach() / 0.5, -1)) / z.shape[0]
    torch.testing.assert_close(z.grad, expect.detach())
    # gradient descent raises the argmax logit relative to the rest
    top = z.detach().argmax(-1)
    assert (z.grad[torch.arange(2), top] < 0).all() and loss.item() > 0


# ---------------------------------------------------------------------------------------------
# configuration errors at load, naming the key

BAD = [
    (["balance.probe_every=0"], r"balance\.probe_every"),
    (["balance.s_target=0"], r"balance\.s_target"),
    (["balance.s_target=1.0"], r"balance\.s_target"),
    (["balance.r_min=10", "balance.r_max=1"], r"balance\.r_min \(10\.0\) > balance\.r_max"),
    (["balance.aux_weight=-0.1"], r"balance\.aux_weight"),
    (["balance.aux_temperature=0"], r"balance\.aux_temperature"),
    (["balance.signal=entropy"], r"balance\.signal"),
    (["balance.aux=sharpen"], r"balance\.aux: .*'sharpen'.*self_distill"),
    (["balance.aux_weighting=always"], r"balance\.aux_weighting"),
    (
        ["balance.aux_weighting=excess", "balance.rule=proportional"],
        r"aux_weighting: excess needs a standard error.*robust rules",
    ),
    (["method=commit_v2"], r"(?m)^\s*method: "),
    (
        ["method=commit", "model.tuning.encoder=freeze", "model.tuning.projector=freeze"],
        r"'commit' needs both sides trainable.*encoder side is frozen by model\.tuning",
    ),
    (["method=alternating_cd", "model.tuning.llm=freeze"], r"LLM side is frozen"),
]


@pytest.mark.parametrize(("overrides", "pattern"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_balance_settings_fail_at_load(tiny_parts, tmp_path, overrides, pattern):
    raw = apply_overrides(tiny_recipe_dict(tiny_parts, tmp_path), overrides)
    with pytest.raises(ConfigError, match=pattern):
        validate(raw, source="recipe.yaml")


def test_single_side_methods_accept_one_frozen_side(tiny_parts, tmp_path):
    raw = tiny_recipe_dict(tiny_parts, tmp_path)
    ok = ["method=feature_cd", "model.tuning.llm=freeze", "balance.aux=self_distill"]
    assert validate(apply_overrides(raw, ok)).method == "feature_cd"
    assert "self_distill" in known_aux()
