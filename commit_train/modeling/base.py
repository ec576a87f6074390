"""The one view of a multimodal LLM that the trainer, the κ probe and evaluation use.

Every supported architecture (our composite model, LLaVA-family, BLIP-2, Qwen2-Audio) is
wrapped in a :class:`MultimodalLM`. The wrapper splits the forward pass at the seam CoMMIT
cares about, so the κ probe can re-run one side without the other (METHOD.md §2):

    features = encode(media)                       # encoder side: encoder + projector
    embeds   = embed(input_ids, features)          # features scattered at placeholder tokens
    hidden   = decoder(inputs_embeds=embeds, ...)  # LLM side
    logits   = lm_head(hidden[answer positions])   # only where labels are set: cheap

Only answer positions get logits: the LM head over a 49k vocabulary is a large share of a
small model's compute, and both the loss and the probe only need those positions.

Subclasses implement the family-specific hooks; ``forward`` is shared, and it is the only
entry point the trainer calls on the (possibly DDP-wrapped) module so gradients sync.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

SIDES = ("encoder", "projector", "llm")


@dataclass(frozen=True)
class SidePrefixes:
    """Parameter-name prefixes (relative to ``MultimodalLM.model``) of each component."""

    encoder: tuple[str, ...]
    projector: tuple[str, ...]
    llm: tuple[str, ...]

    def as_dict(self) -> dict[str, tuple[str, ...]]:
        return {"encoder": self.encoder, "projector": self.projector, "llm": self.llm}


def answer_mask(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose *next* token is an answer token (causal shift), shape (B, T-1)."""
    return labels[:, 1:] != -100


class MultimodalLM(nn.Module):
    """Uniform wrapper: ``self.model`` is the underlying HF/composite model.

    Attributes set by subclasses:
      family: short architecture name ("composite", "llava", "blip2", "qwen2_audio").
      modality: "image" or "audio".
      prefixes: :class:`SidePrefixes` of the wrapped model's parameter names.
      media_token_id: id of the placeholder token that features replace.
    """

    family: str = "base"
    modality: str = "image"

    def __init__(self, model: nn.Module, prefixes: SidePrefixes, media_token_id: int):
        super().__init__()
        self.model = model
        self.prefixes = prefixes
        self.media_token_id = int(media_token_id)

    # ---- family hooks -------------------------------------------------------------------
    def encode(self, media: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder side: media tensors (as the processor made them) -> (B, N, H_llm)."""
        raise NotImplementedError

    def input_embeddings(self) -> nn.Embedding:
        raise NotImplementedError

    def decoder(self) -> nn.Module:
        """The LLM body without its head: called as decoder(inputs_embeds=, attention_mask=)."""
        raise NotImplementedError

    def lm_head(self) -> nn.Module:
        raise NotImplementedError

    # ---- shared logic -------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Token embeddings with ``features`` written at the placeholder positions.

        The number of placeholders per row must equal the features' token count N; the
        collator guarantees it, and a mismatch is a bug worth a loud error.
        """
        embeds = self.input_embeddings()(input_ids)
        mask = input_ids == self.media_token_id
        n_slots = int(mask.sum())
        feats = features.reshape(-1, features.shape[-1])
        if n_slots != feats.shape[0]:
            raise ValueError(
                f"{self.family}: {n_slots} media placeholder tokens in the batch but the "
                f"encoder produced {feats.shape[0]} feature vectors; the processor and the "
                "model disagree on the number of media tokens per example"
            )
        return embeds.masked_scatter(mask.unsqueeze(-1), feats.to(embeds.dtype))

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        embeds = self.embed(input_ids, features)
        out = self.decoder()(inputs_embeds=embeds, attention_mask=attention_mask)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def answer_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        features: torch.Tensor,
    ) -> torch.Tensor:
        """Logits predicting each answer token, shape (num_answer_tokens, vocab)."""
        hidden = self.hidden_states(input_ids, attention_mask, features)
        sel = hidden[:, :-1][answer_mask(labels)]
        return self.lm_head()(sel)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        media: dict[str, torch.Tensor],
        features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Returns ``{"logits": (N_ans, V), "targets": (N_ans,), "features": (B, N, H)}``.

        ``features`` may be passed to skip the encoder (the κ probe re-uses cached ones).
        """
        if features is None:
            features = self.encode(media)
        logits = self.answer_logits(input_ids, attention_mask, labels, features)
        targets = labels[:, 1:][answer_mask(labels)]
        return {"logits": logits, "targets": targets, "features": features}

    # ---- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        media: dict[str, torch.Tensor],
        max_new_tokens: int = 16,
        eos_token_ids: list[int] | None = None,
        pad_token_id: int = 0,
    ) -> torch.Tensor:
        """Greedy decoding of a left-padded prompt batch -> new tokens (B, <= max_new_tokens).

        One loop for every family, on the same encode/embed/decoder/head split as training
        (so evaluation scores exactly the model that was trained), with the decoder's KV
        cache; rows that emitted an EOS are padded with ``pad_token_id`` afterwards.
        """
        features = self.encode(media)
        embeds = self.embed(input_ids, features)
        mask = attention_mask.clone()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        decoder = self.decoder()
        # transformers 5.2x renamed past_key_values -> cache; accept both.
        cache_kw = (
            "cache"
            if "cache" in inspect.signature(decoder.forward).parameters
            else "past_key_values"
        )
        out = decoder(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True
        )
        past = getattr(out, cache_kw)
        logits = self.lm_head()(out.last_hidden_state[:, -1])
        eos = torch.tensor(eos_token_ids or [], dtype=torch.long, device=input_ids.device)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        tokens = []
        pos = positions[:, -1:]
        for _ in range(max_new_tokens):
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, pad_token_id), nxt)
            tokens.append(nxt)
            done |= torch.isin(nxt, eos)
            if bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            pos = pos + 1
            out = decoder(
                inputs_embeds=self.input_embeddings()(nxt[:, None]),
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
                **{cache_kw: past},
            )
            past = getattr(out, cache_kw)
            logits = self.lm_head()(out.last_hidden_state[:, -1])
        return torch.stack(tokens, dim=1) if tokens else input_ids.new_zeros(input_ids.shape[0], 0)

    # ---- saving -------------------------------------------------------------------------
    def save_pretrained(self, path: str, **kwargs: Any) -> None:
        """Save the wrapped model as an HF directory (config + safetensors)."""
        self.model.save_pretrained(path, safe_serialization=True, **kwargs)


class MultimodalProcessor:
    """Turns raw media + text into what a :class:`MultimodalLM` consumes.

    One per family; the collator (``commit_train.data.collate``) only uses this interface:
      tokenizer: an HF tokenizer (chat template used when it has one).
      modality: "image" or "audio".
      media_token: the placeholder string; it must tokenize to ``media_token_id`` alone.
      sampling_rate: audio only, the rate the feature extractor expects.
    """

    modality: str = "image"
    sampling_rate: int | None = None

    def __init__(self, tokenizer: Any, media_token: str):
        self.tokenizer = tokenizer
        self.media_token = media_token

    @property
    def media_token_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(self.media_token))

    def num_media_tokens(self) -> int:
        """Placeholder tokens per example (fixed per model: media is resized/padded)."""
        raise NotImplementedError

    def process_media(self, items: list[Any]) -> dict[str, torch.Tensor]:
        """PIL images (RGB) or 1-D float32 waveforms at ``sampling_rate`` -> batch tensors."""
        raise NotImplementedError

    def save_pretrained(self, path: str) -> None:
        raise NotImplementedError
