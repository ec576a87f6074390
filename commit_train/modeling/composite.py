"""Our own multimodal LLM: any media encoder + MLP projector + any HF causal LM.

LLaVA-style: the encoder's output tokens are projected to the LLM's width and written into
the input embeddings at ``<media>`` placeholder positions. It is a plain ``nn.Module``
with ``save_pretrained``/``from_pretrained`` of its own (``config.json`` +
``model.safetensors`` + tokenizer + media processor) rather than an HF ``PreTrainedModel``:
the encoder and the LM are themselves HF models with their own tied-weight rules, and
``safetensors.torch.save_model`` stores shared tensors (SmolLM2 ties its embeddings) once
and restores them tied, which a nested ``PreTrainedModel`` does not do reliably.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoTokenizer,
)
from transformers.utils import logging as hf_logging

from commit_train.config import ModelConfig
from commit_train.errors import ModelLoadError
from commit_train.modeling.base import MultimodalLM, MultimodalProcessor, SidePrefixes
from commit_train.modeling.encoders import build_encoder, load_encoder

log = logging.getLogger(__name__)

MEDIA_TOKEN = "<media>"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PROCESSOR_NAME = "commit_processor.json"
MODEL_TYPE = "commit_composite"
_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


class Projector(nn.Module):
    """Encoder tokens (B, N, D_enc) -> LLM embeddings (B, N // k, D_llm).

    ``downsample`` k concatenates k adjacent tokens first (long audio sequences become
    affordable for the LLM, as Qwen2-Audio's pooling and SALMONN's windows do).
    """

    def __init__(self, in_dim: int, out_dim: int, spec: dict[str, Any]):
        super().__init__()
        self.downsample = int(spec.get("downsample", 1))
        width = int(spec.get("hidden_size") or out_dim)
        d_in = in_dim * self.downsample
        # Pretrained encoders emit features far larger than the LLM's token embeddings
        # (Lite0: projected norm ~45 vs ~3); normalising the input keeps the new
        # projector's output near the embedding scale so the LLM attends to it from step 0.
        self.norm = nn.LayerNorm(d_in) if spec.get("input_norm", True) else nn.Identity()
        if spec.get("type", "mlp") == "linear":
            self.net = nn.Sequential(nn.Linear(d_in, out_dim))
        else:
            layers: list[nn.Module] = []
            dims = [d_in] + [width] * (int(spec.get("num_layers", 2)) - 1) + [out_dim]
            for i in range(len(dims) - 1):
                layers.append(nn.Linear(dims[i], dims[i + 1]))
                if i < len(dims) - 2:
                    layers.append(_ACTIVATIONS[spec.get("activation", "gelu")]())
            self.net = nn.Sequential(*layers)

    def num_tokens(self, n_in: int) -> int:
        return n_in // self.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.downsample
        if k > 1:
            b, n, d = x.shape
            n = (n // k) * k
            x = x[:, :n].reshape(b, n // k, d * k)
        return self.net(self.norm(x))


class CompositeModel(nn.Module):
    """encoder + projector + language_model, rebuilt from a JSON config."""

    def __init__(
        self,
        config: dict[str, Any],
        encoder: nn.Module | None = None,
        language_model: nn.Module | None = None,
    ):
        """Random-init parts from ``config`` unless pretrained ``encoder``/``language_model``
        modules are given (assembly from parts avoids building each twice)."""
        super().__init__()
        self.config = config
        self.encoder = encoder if encoder is not None else build_encoder(config["encoder"])
        if language_model is None:
            llm_cfg = dict(config["llm"])
            llm_config = AutoConfig.for_model(llm_cfg.pop("model_type"), **llm_cfg)
            language_model = AutoModelForCausalLM.from_config(llm_config)
        self.language_model = language_model
        self.projector = Projector(
            self.encoder.output_dim,
            self.language_model.config.hidden_size,
            config["projector"],
        )

    @property
    def num_media_tokens(self) -> int:
        return self.projector.num_tokens(self.encoder.num_output_tokens)

    def save_pretrained(self, path: str | os.PathLike, **_: Any) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_model(self, str(path / WEIGHTS_NAME))
        (path / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> CompositeModel:
        path = Path(path)
        config = json.loads((path / CONFIG_NAME).read_text())
        model = cls(config)
        load_model(model, str(path / WEIGHTS_NAME), strict=True)
        return model.eval()


class CompositeLM(MultimodalLM):
    family = "composite"

    def __init__(self, model: CompositeModel, media_token_id: int):
        super().__init__(
            model,
            SidePrefixes(
                encoder=("encoder.",), projector=("projector.",), llm=("language_model.",)
            ),
            media_token_id,
        )
        self.modality = model.config["modality"]

    def encode(self, media: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.projector(self.model.encoder(media))

    def input_embeddings(self) -> nn.Embedding:
        return self.model.language_model.get_input_embeddings()

    def decoder(self) -> nn.Module:
        return self.model.language_model.get_decoder()

    def lm_head(self) -> nn.Module:
        return self.model.language_model.get_output_embeddings()


class CompositeProcessor(MultimodalProcessor):
    """Tokenizer + the encoder's HF image processor or audio feature extractor."""

    def __init__(
        self,
        tokenizer: Any,
        media_processor: Any,
        modality: str,
        num_tokens: int,
        media_key: str,
        media_token: str = MEDIA_TOKEN,
    ):
        super().__init__(tokenizer, media_token)
        self.media_processor = media_processor
        self.modality = modality
        self.media_key = media_key
        self._num_tokens = int(num_tokens)
        if modality == "audio":
            self.sampling_rate = int(media_processor.sampling_rate)

    def num_media_tokens(self) -> int:
        return self._num_tokens

    def process_media(self, items: list[Any]) -> dict[str, torch.Tensor]:
        if self.modality == "image":
            out = self.media_processor(images=items, return_tensors="pt")
            return {"pixel_values": out["pixel_values"]}
        mp = self.media_processor
        kwargs: dict[str, Any] = {"sampling_rate": self.sampling_rate, "return_tensors": "pt"}
        if self.media_key == "input_values":
            # Fixed length so every example yields the same number of media tokens.
            kwargs.update(padding="max_length", truncation=True, max_length=self._max_samples())
        elif type(mp).__name__ == "WhisperFeatureExtractor":
            kwargs.update(padding="max_length", truncation=True)
        out = mp(items, **kwargs)
        return {self.media_key: out[self.media_key]}

    def _max_samples(self) -> int:
        return int(getattr(self.media_processor, "max_samples", None) or 5 * self.sampling_rate)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        self.media_processor.save_pretrained(path)
        meta = {
            "modality": self.modality,
            "media_token": self.media_token,
            "num_media_tokens": self._num_tokens,
            "media_key": self.media_key,
        }
        (path / PROCESSOR_NAME).write_text(json.dumps(meta, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> CompositeProcessor:
        path = Path(path)
        meta = json.loads((path / PROCESSOR_NAME).read_text())
        # The Auto* loaders peek at config.json and warn that commit_composite is not an
        # HF model type; the processor files themselves are standard.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            tok = AutoTokenizer.from_pretrained(path)
            if meta["modality"] == "image":
                mp = AutoImageProcessor.from_pretrained(path)
            else:
                mp = AutoFeatureExtractor.from_pretrained(path)
        finally:
            hf_logging.set_verbosity(verbosity)
        return cls(
            tok,
            mp,
            meta["modality"],
            meta["num_media_tokens"],
            meta["media_key"],
            meta["media_token"],
        )


def is_composite_dir(path: str | os.PathLike) -> bool:
    cfg = Path(path) / CONFIG_NAME
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, json.JSONDecodeError):
        return False


def load_composite(path: str | os.PathLike) -> tuple[CompositeLM, CompositeProcessor]:
    """Load a saved composite directory (as written by ``save_model_dir``)."""
    model = CompositeModel.from_pretrained(path)
    processor = CompositeProcessor.from_pretrained(path)
    return CompositeLM(model, processor.media_token_id), processor


def _load_llm(path: str, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    from commit_train.modeling.pretrained import resolve_model_path

    resolved = resolve_model_path(path)
    try:
        tok = AutoTokenizer.from_pretrained(resolved)
        llm = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype)
    except OSError as e:
        raise ModelLoadError(
            f"cannot load the causal LM {path!r} (model.llm): {e.__class__.__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}. Give a local directory written by "
            "save_pretrained, an HF id available in the local HF cache (this machine has no "
            "network), or cache://<part> after `commit prepare`."
        ) from None
    return llm, tok


def build_composite(cfg: ModelConfig, seed: int = 0) -> tuple[CompositeLM, CompositeProcessor]:
    """Assemble a new composite from pretrained parts: encoder + new projector + LM."""
    assert cfg.encoder is not None and cfg.llm is not None
    dtype = getattr(torch, cfg.dtype)
    encoder, enc_spec, media_processor = load_encoder(cfg.encoder, cfg.modality)
    llm, tok = _load_llm(cfg.llm, dtype)
    if MEDIA_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [MEDIA_TOKEN]})
    if len(tok) > llm.get_input_embeddings().weight.shape[0]:
        llm.resize_token_embeddings(len(tok), mean_resizing=False)
    llm_cfg = llm.config.to_dict()
    for k in ("quantization_config", "_name_or_path", "transformers_version", "architectures"):
        llm_cfg.pop(k, None)
    config = {
        "model_type": MODEL_TYPE,
        "modality": cfg.modality,
        "encoder": enc_spec,
        "llm": llm_cfg,
        "projector": cfg.projector.model_dump(),
    }
    # Only the projector is new; seed it so the same recipe gives the same start.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CompositeModel(config, encoder=encoder, language_model=llm)
    model.to(dtype)
    processor = CompositeProcessor(
        tok, media_processor, cfg.modality, model.num_media_tokens, encoder.media_key
    )
    log.info(
        "assembled composite: %s encoder (%d tokens -> %d media tokens), LLM %s",
        enc_spec.get("type"),
        encoder.num_output_tokens,
        model.num_media_tokens,
        llm_cfg.get("model_type"),
    )
    return CompositeLM(model, processor.media_token_id), processor
