"""Training precision: accelerate's setting for a run, and what the κ probe runs in."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator

from commit_train.config import RunConfig


def _precision(cfg: RunConfig) -> str:
    """accelerate's ``mixed_precision`` value ("no" is its name for fp32)."""
    p = cfg.train.precision
    if p == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16"
        return "no"
    return "no" if p == "fp32" else p


def make_accelerator(cfg: RunConfig) -> Accelerator:
    """An Accelerator at the run's precision.

    accelerate keeps one ``AcceleratorState`` per process and refuses a second Accelerator
    with another ``mixed_precision`` ("has already been initialized"), so a notebook or a
    test that trains fp32 and then bf16 would fail at its second run. The precision part
    is reset then; the process-group part (``PartialState``) is kept, so this is safe under
    torchrun.
    """
    from accelerate.state import AcceleratorState

    precision = _precision(cfg)
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision", precision) != precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision)


def probe_autocast(acc: Accelerator, model: torch.nn.Module) -> Any:
    """The κ probe's forwards: fp32 when the trained weights are fp32, whatever the
    training precision.

    Under bf16 autocast a weight enters the forward rounded to bf16, whose spacing is
    ~2e-4 at |w| = 0.05: an encoder step of 1e-5 changes few rounded weights at all,
    by a whole spacing each, so a bf16 probe reads rounding (KL is quadratic in the
    change, which inflates it by spacing/step) rather than the step. Weights stored in
    bf16 or fp16 are probed as they train: there the rounding is the real update. That
    includes a model whose frozen base is bf16 under fp32 LoRA adapters, whose layers
    expect bf16 inputs, so any non-fp32 weight keeps the training autocast.
    """
    if acc.mixed_precision == "no" or any(p.dtype != torch.float32 for p in model.parameters()):
        return acc.autocast
    device = acc.device.type
    return lambda: torch.autocast(device_type=device, enabled=False)
