"""Encoder side vs LLM side: group membership for the composite model (METHOD.md §6).

The HF families (LLaVA, BLIP-2, Qwen2-Audio) are covered in modeling/test_hf_adapters.py.
"""

import pytest
import torch

from commit_train.config import ModelConfig
from commit_train.errors import ConfigError
from commit_train.modeling import load_model
from commit_train.partition import apply_tuning, merge_lora, param_groups


def _cfg(parts, **kw):
    base = {
        "modality": "image",
        "encoder": {"type": "hf", "path": str(parts["vit"])},
        "llm": str(parts["llm"]),
        "lora": {"r": 4, "alpha": 8, "target_modules": {"llm": ["q_proj", "v_proj"]}},
    }
    base.update(kw)
    return ModelConfig.model_validate(base)


def _names(groups, side):
    return [n for n, _ in getattr(groups, side)]


def test_default_partition_lora_llm_full_encoder(tiny_parts):
    cfg = _cfg(tiny_parts)
    mlm, _ = load_model(cfg)
    apply_tuning(mlm, cfg)
    g = param_groups(mlm, cfg)
    enc, llm = _names(g, "encoder"), _names(g, "llm")
    assert enc and llm
    assert all(n.startswith(("encoder.", "projector.")) for n in enc)
    assert any(n.startswith("projector.") for n in enc)
    assert all(n.startswith("language_model.") and "lora_" in n for n in llm)
    assert {n.rsplit(".", 3)[0].rsplit(".", 1)[-1] for n in llm} == {"q_proj", "v_proj"}
    # every encoder parameter is trainable, no base LLM weight is
    n_enc = sum(p.numel() for n, p in mlm.model.named_parameters() if n.startswith("encoder."))
    assert g.counts["encoder"]["trainable"] == n_enc
    assert g.counts["llm"]["trainable"] == sum(p.numel() for _, p in g.llm)
    assert "component" in g.summary()


def test_projector_side_llm_and_frozen_encoder(tiny_parts):
    cfg = _cfg(
        tiny_parts,
        projector_side="llm",
        tuning={"encoder": "freeze", "projector": "full", "llm": "full"},
    )
    mlm, _ = load_model(cfg)
    apply_tuning(mlm, cfg)
    g = param_groups(mlm, cfg)
    assert _names(g, "encoder") == []
    llm = _names(g, "llm")
    assert any(n.startswith("projector.") for n in llm)
    assert not any("lora_" in n for n in llm)
    assert all(
        not p.requires_grad for n, p in mlm.model.named_parameters() if n.startswith("encoder.")
    )


def test_param_groups_is_pure(tiny_parts):
    cfg = _cfg(tiny_parts)
    mlm, _ = load_model(cfg)
    apply_tuning(mlm, cfg)
    before = {n: p.requires_grad for n, p in mlm.model.named_parameters()}
    a, b = param_groups(mlm, cfg), param_groups(mlm, cfg)
    assert _names(a, "encoder") == _names(b, "encoder") and _names(a, "llm") == _names(b, "llm")
    assert before == {n: p.requires_grad for n, p in mlm.model.named_parameters()}


def test_lora_targets_that_match_nothing(tiny_parts):
    cfg = _cfg(tiny_parts, lora={"target_modules": {"llm": ["nonexistent_proj"]}})
    mlm, _ = load_model(cfg)
    with pytest.raises(ConfigError, match="matches no linear layer"):
        apply_tuning(mlm, cfg)


def test_unknown_parameters_need_side_prefixes(tiny_parts):
    cfg = _cfg(tiny_parts)
    mlm, _ = load_model(cfg)
    mlm.model.extra_head = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="side_prefixes"):
        apply_tuning(mlm, cfg)
    cfg2 = _cfg(
        tiny_parts,
        side_prefixes={
            "encoder": ["encoder."],
            "projector": ["projector.", "extra_head."],
            "llm": ["language_model."],
        },
    )
    apply_tuning(mlm, cfg2)
    assert any(n.startswith("extra_head.") for n in _names(param_groups(mlm, cfg2), "encoder"))


def test_merge_lora_keeps_outputs(tiny_parts):
    cfg = _cfg(tiny_parts)
    mlm, proc = load_model(cfg)
    apply_tuning(mlm, cfg)
    with torch.no_grad():
        for n, p in mlm.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # LoRA B starts at zero: make the adapter matter
    mlm.eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    embeds = mlm.input_embeddings()(ids)
    before = mlm.decoder()(inputs_embeds=embeds).last_hidden_state
    merge_lora(mlm.model)
    after = mlm.decoder()(inputs_embeds=embeds).last_hidden_state
    assert not any("lora_" in n for n, _ in mlm.model.named_parameters())
    torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-5)
