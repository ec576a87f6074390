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


@pytest.mark.parametrize(
    "family,enc_targets,enc_prefixes",
    [
        ("llava", ["q_proj", "v_proj"], ("model.vision_tower.", "model.multi_modal_projector.")),
        (
            "blip2",
            ["query", "value"],
            ("vision_model.", "qformer.", "query_tokens", "language_projection."),
        ),
        (
            "qwen2_audio",
            ["q_proj", "v_proj"],
            ("model.audio_tower.", "model.multi_modal_projector."),
        ),
    ],
)
def test_hf_family_groups_with_lora_on_both_sides(tmp_path, family, enc_targets, enc_prefixes):
    """LoRA on the encoder and the LLM of each HF family: the groups hold exactly the
    LoRA weights of each side plus the fully trained projector on the encoder side."""
    from commit_train.modeling.hf_adapters import load_hf_multimodal
    from tests.commit_train.modeling.test_hf_adapters import BUILDERS

    BUILDERS[family](tmp_path)
    mlm, _ = load_hf_multimodal(str(tmp_path))
    llm_targets = ["q_proj", "v_proj"]
    cfg = ModelConfig.model_validate(
        {
            "path": str(tmp_path),
            "family": family,
            "tuning": {"encoder": "lora", "projector": "full", "llm": "lora"},
            "lora": {
                "r": 2,
                "alpha": 4,
                "target_modules": {"encoder": enc_targets, "llm": llm_targets},
            },
        }
    )
    apply_tuning(mlm, cfg)
    g = param_groups(mlm, cfg)
    enc, llm = _names(g, "encoder"), _names(g, "llm")
    proj = mlm.prefixes.projector
    enc_lora = [n for n in enc if "lora_" in n]
    assert enc_lora and all(n.startswith(enc_prefixes) for n in enc)
    assert all("lora_" in n or n.startswith(proj) for n in enc)
    assert any(n.startswith(proj) for n in enc)
    assert llm and all("lora_" in n and n.startswith(mlm.prefixes.llm) for n in llm)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in enc_lora} <= set(enc_targets)
    # nothing else trains
    trainable = {n for n, p in mlm.model.named_parameters() if p.requires_grad}
    assert trainable == set(enc) | set(llm)
