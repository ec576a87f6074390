"""Auxiliary-loss registry, the self-distillation loss and its weight (METHOD.md §4)."""

import pytest
import torch
import torch.nn.functional as F

from commit_train import losses
from commit_train.errors import ConfigError
from commit_train.losses import aux_weight, get_aux, register_aux, self_distill


def _manual(z: torch.Tensor, tau: float) -> torch.Tensor:
    q = F.softmax(z.detach().double() / tau, dim=-1)
    log_p = F.log_softmax(z.double(), dim=-1)
    return (q * (q.log() - log_p)).sum(-1).mean()


def test_zero_when_sharpening_changes_nothing():
    torch.manual_seed(0)
    z = torch.randn(6, 11)
    assert self_distill(z, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    one_hot_like = torch.full((3, 11), -50.0)
    one_hot_like[:, 4] = 50.0
    assert self_distill(one_hot_like, 0.5).item() == pytest.approx(0.0, abs=1e-6)


def test_positive_and_matches_manual_value():
    torch.manual_seed(1)
    z = torch.randn(5, 13)
    loss = self_distill(z, 0.5)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert loss.item() > 1e-3
    assert loss.item() == pytest.approx(_manual(z, 0.5).item(), rel=1e-5)


def test_gradient_flows_to_logits_but_not_through_target():
    torch.manual_seed(2)
    tau = 0.5
    z = torch.randn(4, 9, requires_grad=True)
    self_distill(z, tau).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    # with a detached target q the gradient is (softmax(z) - q) / N
    expected = (F.softmax(z.detach(), -1) - F.softmax(z.detach() / tau, -1)) / z.shape[0]
    torch.testing.assert_close(z.grad, expected, rtol=1e-5, atol=1e-7)
    # and it equals autograd on the manual loss with an explicitly detached target
    z2 = z.detach().clone().requires_grad_(True)
    _manual(z2, tau).backward()
    torch.testing.assert_close(z.grad, z2.grad.float(), rtol=1e-5, atol=1e-7)
    # a non-stopgrad version differs, so the test discriminates
    z3 = z.detach().clone().requires_grad_(True)
    q = F.softmax(z3 / tau, -1)
    (q * (q.log() - F.log_softmax(z3, -1))).sum(-1).mean().backward()
    assert not torch.allclose(z3.grad, z.grad, atol=1e-5)


def test_low_precision_input_computed_in_float32_and_masked_vocab_finite():
    torch.manual_seed(3)
    z = torch.randn(2, 3, 8).bfloat16()  # leading dims are flattened
    loss = self_distill(z, 0.5)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(_manual(z.float().reshape(6, 8), 0.5).item(), rel=1e-5)
    masked = torch.randn(3, 8)
    masked[:, :2] = float("-inf")
    masked.requires_grad_(True)
    out = self_distill(masked, 0.5)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(masked.grad).all()


def test_no_answer_tokens_gives_differentiable_zero():
    z = torch.zeros(0, 7, requires_grad=True)
    loss = self_distill(z, 0.5)
    loss.backward()
    assert loss.item() == 0.0


def test_bad_temperature():
    with pytest.raises(ValueError):
        self_distill(torch.randn(2, 3), 0.0)


def test_registry_lookup_errors_and_registration():
    assert get_aux("self_distill") is self_distill
    with pytest.raises(ConfigError, match="self_distill") as ei:
        get_aux("self_distil")
    assert "self_distil'" in str(ei.value)

    @register_aux("_test_zero")
    def zero(logits, temperature):
        return logits.sum() * 0.0

    try:
        assert get_aux("_test_zero") is zero
        register_aux("_test_zero")(zero)  # re-registering the same function is fine
        with pytest.raises(ValueError, match="already registered"):
            register_aux("_test_zero")(lambda z, t: z.sum())
        with pytest.raises(ValueError):
            register_aux("self_distill")(zero)
    finally:
        losses._REGISTRY.pop("_test_zero", None)


def test_aux_weight():
    assert aux_weight(0.1, 0.5, 0.5) == 0.0
    assert aux_weight(0.1, None, 0.5) == 0.0
    assert aux_weight(0.1, float("nan"), 0.5) == 0.0
    assert aux_weight(0.1, 0.7, 0.5) == pytest.approx(0.1 * 0.2 / 0.5)
    assert aux_weight(0.1, 0.3, 0.5) == pytest.approx(aux_weight(0.1, 0.7, 0.5))
    assert aux_weight(0.2, 0.45, 0.3) == pytest.approx(0.2 * 0.15 / 0.3)
    assert aux_weight(0.0, 0.9, 0.5) == 0.0
    with pytest.raises(ValueError):
        aux_weight(0.1, 0.5, 0.0)


def test_aux_weight_dead_zone_weights_only_the_excess():
    # |0.7 - 0.5| = 0.2, of which 0.15 lies beyond a 0.05 dead zone
    assert aux_weight(0.1, 0.7, 0.5, dead_zone=0.05) == pytest.approx(0.1 * 0.15 / 0.5)
    assert aux_weight(0.1, 0.3, 0.5, dead_zone=0.05) == pytest.approx(0.1 * 0.15 / 0.5)
    # a deviation inside the dead zone (noise) gives no aux term at all, not a negative one
    assert aux_weight(0.1, 0.6, 0.5, dead_zone=0.2) == 0.0
    assert aux_weight(0.1, None, 0.5, dead_zone=0.0) == 0.0
