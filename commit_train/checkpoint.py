"""Training checkpoints that a killed run resumes from exactly.

Layout of ``<output_dir>/checkpoints/step-0000050/``::

    trainable.safetensors      every parameter with requires_grad (LoRA or full weights)
    optim-encoder.pt           AdamW state of the encoder side (loaded weights_only=True)
    optim-llm.pt               AdamW state of the LLM side
    rng-rank<r>.pt             torch RNG states of each process (ByteTensors)
    state.json                 step, data position, MLflow run id, python/numpy RNG,
                               balance state (κ history, LR ratio: the CoMMIT issue fills it)

A checkpoint is written into ``step-N.tmp`` and renamed when complete, so a kill never
leaves a directory that :func:`latest_checkpoint` would pick up half-written. Nor is one
written from NaN/inf weights or optimizer state (:class:`NonFiniteState`): every
checkpoint that exists is one a run can resume from, so "the last checkpoint" is always
"the last good state".
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from commit_train.errors import TrainingDiverged

log = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step-(\d+)$")


class NonFiniteState(TrainingDiverged):
    """The state to checkpoint holds NaN/inf; nothing was written."""

    def __init__(self, step: int, bad: list[str], total: int):
        self.step, self.bad, self.total = step, bad, total
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        super().__init__(
            f"checkpoint of step {step} not written: {len(bad)} of {total} tensors hold "
            f"NaN or inf ({shown}); training diverged, the previous checkpoint is the last "
            "good state. Lower train.lr_encoder / train.lr_llm or enable train.max_grad_norm"
        )


def nonfinite_tensors(
    model: nn.Module, optimizers: dict[str, torch.optim.Optimizer | None]
) -> tuple[list[str], int]:
    """Names of the trainable parameters and optimizer-state tensors holding NaN/inf, and
    how many tensors were checked."""
    bad: list[str] = []
    total = 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            total += 1
            if not bool(torch.isfinite(p.detach()).all()):
                bad.append(name)
    for side, opt in optimizers.items():
        if opt is None:
            continue
        for i, st in enumerate(opt.state.values()):
            for key, t in st.items():
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    total += 1
                    if not bool(torch.isfinite(t).all()):
                        bad.append(f"optim-{side}[{i}].{key}")
    return bad, total


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return None
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / "state.json").is_file()
    ]
    return max(found)[1] if found else None


def _python_numpy_rng() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def _restore_python_numpy_rng(d: dict[str, Any]) -> None:
    py = d["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = d["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))


def _torch_rng() -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer | None],
    state: dict[str, Any],
    rank: int = 0,
    world_size: int = 1,
    barrier: Any = None,
    keep: int = 2,
) -> Path:
    """Write a complete checkpoint atomically. Call on every process (RNG is per rank).

    ``barrier`` synchronises processes (``accelerator.wait_for_everyone``) under DDP.
    Raises :class:`NonFiniteState` (before writing anything) if the weights or optimizer
    state hold NaN/inf; every process checks its replica, so all of them raise together.
    """
    bad, total = nonfinite_tensors(model, optimizers)
    if bad:
        raise NonFiniteState(step, bad, total)
    sync = barrier or (lambda: None)
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:07d}"
    tmp = root / f"step-{step:07d}.tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    sync()
    torch.save(_torch_rng(), tmp / f"rng-rank{rank}.pt")
    if rank == 0:
        # Clone: tied/shared tensors cannot be saved twice by safetensors, and a copy per
        # name loads back into the same shared storage anyway.
        tensors = {
            n: p.detach().to("cpu").clone().contiguous()
            for n, p in model.named_parameters()
            if p.requires_grad
        }
        save_file(tensors, str(tmp / "trainable.safetensors"))
        for side, opt in optimizers.items():
            if opt is not None:
                torch.save(opt.state_dict(), tmp / f"optim-{side}.pt")
        full_state = dict(state, step=step, world_size=world_size, rng=_python_numpy_rng())
        (tmp / "state.json").write_text(json.dumps(full_state, indent=1))
    sync()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _prune(root, keep)
        log.info("checkpoint written: %s", final)
    sync()
    return final


def _prune(root: Path, keep: int) -> None:
    steps = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)))
    for _, p in steps[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizers: dict[str, torch.optim.Optimizer | None],
    rank: int = 0,
) -> dict[str, Any]:
    """Restore weights, optimizers and RNG in place; returns the saved ``state`` dict."""
    state = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise RuntimeError(
            f"checkpoint {path} holds parameters this model does not have ({unknown[:3]}...): "
            "was it written by a different recipe?"
        )
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t)
    for side, opt in optimizers.items():
        f = path / f"optim-{side}.pt"
        if opt is not None:
            opt.load_state_dict(torch.load(f, map_location="cpu", weights_only=True))
    rng_file = path / f"rng-rank{rank}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if torch.cuda.is_available():
            cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
            if cuda:
                torch.cuda.set_rng_state_all(cuda)
    _restore_python_numpy_rng(state["rng"])
    return state
