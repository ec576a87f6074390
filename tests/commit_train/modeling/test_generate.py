"""Greedy generation on the encode/embed/decoder split equals HF's own generate."""

import torch
from transformers import GenerationConfig

from commit_train.config import ModelConfig
from commit_train.data.collate import Collator
from commit_train.data.records import read_records
from commit_train.modeling import load_model


def test_generate_matches_hf_generate(tiny_parts):
    cfg = ModelConfig.model_validate(
        {
            "modality": "image",
            "encoder": {"type": "hf", "path": str(tiny_parts["vit"])},
            "llm": str(tiny_parts["llm"]),
        }
    )
    mlm, proc = load_model(cfg)
    mlm.eval()
    recs, _ = read_records(tiny_parts["val"])
    batch = Collator(proc, 64, prompt_only=True)(recs[:3], root=tiny_parts["val"].parent)
    assert (batch["attention_mask"][:, 0] == 0).any() or batch["attention_mask"].all()
    tok = proc.tokenizer
    ours = mlm.generate(
        batch["input_ids"],
        batch["attention_mask"],
        batch["media"],
        max_new_tokens=6,
        eos_token_ids=[tok.eos_token_id],
        pad_token_id=tok.pad_token_id,
    )
    with torch.no_grad():
        embeds = mlm.embed(batch["input_ids"], mlm.encode(batch["media"]))
        ref = mlm.model.language_model.generate(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            generation_config=GenerationConfig(
                max_new_tokens=6,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            ),
        )
    assert ours.shape[0] == 3 and ours.shape[1] <= 6
    assert torch.equal(ours, ref[:, : ours.shape[1]])
