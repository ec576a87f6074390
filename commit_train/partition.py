"""Which parameters are encoder side and which are LLM side (METHOD.md §6).

Two steps, kept apart on purpose:

* :func:`apply_tuning` mutates the model once: injects LoRA (peft) into the components set
  to ``lora`` and sets ``requires_grad`` per component (``freeze | lora | full``).
* :func:`param_groups` is a pure function of the (tuned) model and the config: it returns
  the trainable parameters of each side, which become the two optimizers. The projector
  goes to ``projector_side``. LLaVA's training script hid its per-module learning rates in
  a Trainer subclass and forks silently lost them; here the groups are explicit and tested.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from peft import LoraConfig as PeftLoraConfig
from peft import inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from commit_train.config import ModelConfig
from commit_train.errors import ConfigError
from commit_train.modeling.base import MultimodalLM

log = logging.getLogger(__name__)
COMPONENTS = ("encoder", "projector", "llm")


def component_prefixes(mlm: MultimodalLM, cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    if cfg.side_prefixes:
        given = {k: tuple(v) for k, v in cfg.side_prefixes.items()}
        missing = [c for c in COMPONENTS if c not in given]
        if missing:
            raise ConfigError(f"model.side_prefixes must list {', '.join(missing)} as well")
        return given
    return mlm.prefixes.as_dict()


def component_of(name: str, prefixes: dict[str, tuple[str, ...]]) -> str | None:
    """The component a parameter (or module) name belongs to; longest prefix wins."""
    best, best_len = None, -1
    for comp, prefs in prefixes.items():
        for p in prefs:
            if (name.startswith(p) or name == p.rstrip(".")) and len(p) > best_len:
                best, best_len = comp, len(p)
    return best


def _check_coverage(model: nn.Module, prefixes: dict[str, tuple[str, ...]], family: str) -> None:
    stray = [n for n, _ in model.named_parameters() if component_of(n, prefixes) is None]
    if stray:
        shown = ", ".join(stray[:5]) + (f" and {len(stray) - 5} more" if len(stray) > 5 else "")
        raise ConfigError(
            f"cannot tell which side these parameters of the {family!r} model are on: {shown}. "
            "Supported: composite, llava (and its family), blip2, qwen2_audio; for another "
            "architecture set model.side_prefixes: {encoder: [...], projector: [...], llm: [...]} "
            "with parameter-name prefixes."
        )


def _lora_regex(prefixes: tuple[str, ...], targets: list[str]) -> str:
    pre = "|".join(re.escape(p) for p in prefixes)
    names = "|".join(re.escape(t) for t in targets)
    return rf"(?:{pre})(?:.*\.)?(?:{names})"


def apply_tuning(mlm: MultimodalLM, cfg: ModelConfig) -> dict[str, str]:
    """Inject LoRA and set ``requires_grad`` per component. Returns component -> mode."""
    prefixes = component_prefixes(mlm, cfg)
    _check_coverage(mlm.model, prefixes, mlm.family)
    modes = {
        "encoder": cfg.tuning.encoder,
        "projector": cfg.tuning.projector,
        "llm": cfg.tuning.llm,
    }
    lora_parts = [c for c in ("encoder", "llm") if modes[c] == "lora"]
    if lora_parts:
        pattern = "|".join(
            f"(?:{_lora_regex(prefixes[c], cfg.lora.target_modules.get(c, []))})"
            for c in lora_parts
        )
        matched = {
            c: [
                n
                for n, m in mlm.model.named_modules()
                if isinstance(m, nn.Linear)
                and re.fullmatch(_lora_regex(prefixes[c], cfg.lora.target_modules.get(c, [])), n)
            ]
            for c in lora_parts
        }
        for c, names in matched.items():
            if not names:
                raise ConfigError(
                    f"model.tuning.{c}=lora but model.lora.target_modules.{c}="
                    f"{cfg.lora.target_modules.get(c, [])} matches no linear layer of the "
                    f"{c}; name modules that exist (e.g. q_proj, v_proj)"
                )
        peft_cfg = PeftLoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=pattern,
        )
        inject_adapter_in_model(peft_cfg, mlm.model)
    for name, p in mlm.model.named_parameters():
        comp = component_of(name, prefixes)
        mode = modes[comp]
        is_lora = "lora_" in name
        p.requires_grad_(mode == "full" and not is_lora or mode == "lora" and is_lora)
    return modes


@dataclass
class SideGroups:
    """Trainable parameters of each side, plus counts for the start-of-run log."""

    encoder: list[tuple[str, nn.Parameter]] = field(default_factory=list)
    llm: list[tuple[str, nn.Parameter]] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    projector_names: set[str] = field(default_factory=set)

    def params(self, side: str) -> list[nn.Parameter]:
        return [p for _, p in getattr(self, side)]

    def split_projector(self, side: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """``(other, projector)`` parameters of one side, for a separate projector LR."""
        other = [p for n, p in getattr(self, side) if n not in self.projector_names]
        proj = [p for n, p in getattr(self, side) if n in self.projector_names]
        return other, proj

    def summary(self, modes: dict[str, str] | None = None) -> str:
        lines = ["component   side      mode    trainable       total"]
        for comp, c in self.counts.items():
            mode = (modes or {}).get(comp, "")
            lines.append(
                f"{comp:<11} {c['side_name']:<9} {mode:<7} {c['trainable']:>11,} {c['total']:>11,}"
            )
        return "\n".join(lines)


def param_groups(mlm: MultimodalLM, cfg: ModelConfig) -> SideGroups:
    """Pure: split trainable parameters into encoder side and LLM side."""
    prefixes = component_prefixes(mlm, cfg)
    side_of = {"encoder": "encoder", "projector": cfg.projector_side, "llm": "llm"}
    groups = SideGroups()
    counts: dict[str, dict] = {
        c: {"trainable": 0, "total": 0, "side_name": side_of[c]} for c in COMPONENTS
    }
    for name, p in mlm.model.named_parameters():
        comp = component_of(name, prefixes)
        if comp is None:
            _check_coverage(mlm.model, prefixes, mlm.family)
        counts[comp]["total"] += p.numel()
        if p.requires_grad:
            counts[comp]["trainable"] += p.numel()
            getattr(groups, side_of[comp]).append((name, p))
            if comp == "projector":
                groups.projector_names.add(name)
    groups.counts = counts
    return groups


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA weights into their base layers and drop the wrappers (for export)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    return model
