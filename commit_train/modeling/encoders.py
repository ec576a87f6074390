"""One interface over every media encoder the composite model can use.

The composite model (encoder + projector + LLM) must be rebuilt from its own config when a
checkpoint is loaded, without the original encoder directory. So an encoder is described
by a JSON-serializable *spec* (stored in the composite config) and two entry points:

* :func:`load_encoder` - pretrained weights from a recipe's ``model.encoder`` section;
  returns the encoder, its spec and the HF media processor to save next to the model.
* :func:`build_encoder` - the same architecture, random init, from a spec; the checkpoint
  then fills the weights.

Both go through the :class:`MediaEncoder` constructor, so parameter names
(``model.*`` inside the encoder, ``encoder.model.*`` in the composite model) are identical
in both paths. Every encoder emits a fixed number of tokens per example (images are
resized, audio padded to a fixed window), which the processor needs to insert the right
number of placeholder tokens.

``feature_layer`` semantics: ``-1`` is the model's own output (``last_hidden_state``, with
the final norm where the model has one); any other index ``k`` is ``hidden_states[k]``, the
residual stream after ``k`` layers without a final norm (LLaVA uses -2). For the vision
transformers the layers after ``k`` and the unused norms/heads are removed, which saves
compute and leaves no parameter without a gradient (DDP requires that).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    ASTFeatureExtractor,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    CLIPVisionModel,
    PretrainedConfig,
    SiglipVisionModel,
    ViTImageProcessor,
    ViTModel,
    Wav2Vec2FeatureExtractor,
    WhisperModel,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from commit_train.config import EncoderConfig
from commit_train.errors import ModelLoadError
from commit_train.modeling.efficientnet import (
    EfficientNetLiteConfig,
    EfficientNetLiteEncoder,
    lite0_image_processor,
)
from commit_train.modeling.pretrained import pretrained_path, resolve_model_path
from commit_train.modeling.whisper_ct2 import whisper_feature_extractor

log = logging.getLogger(__name__)

ENCODER_TYPES = ("hf", "efficientnet_lite0", "whisper_encoder")
VISION_TYPES = {
    "clip": "clip_vision_model",
    "clip_vision_model": "clip_vision_model",
    "siglip": "siglip_vision_model",
    "siglip_vision_model": "siglip_vision_model",
    "vit": "vit",
}
AUDIO_TYPES = ("whisper", "wav2vec2", "hubert", "audio-spectrogram-transformer")
# Default fixed audio window for wav2vec2/HuBERT, whose extractor does not pad by itself.
DEFAULT_AUDIO_SAMPLES = 5 * 16000


class MediaEncoder(nn.Module):
    """``forward(media) -> (B, num_output_tokens, output_dim)`` for any supported encoder.

    Attributes:
      model: the wrapped encoder (HF module, possibly pruned after ``feature_layer``).
      spec: the JSON-serializable description :func:`build_encoder` rebuilds it from.
      modality: "image" or "audio".
      media_key: the key of ``media`` this encoder reads (``pixel_values``,
        ``input_features`` for Whisper, ``input_values`` for wav2vec2/HuBERT/AST, which is
        what their HF feature extractors emit).
      output_dim, num_output_tokens: shape of one example's features.
      max_audio_samples: wav2vec2/HuBERT only - the waveform length (16 kHz samples) the
        processor must pad or cut every clip to; None otherwise.
    """

    def __init__(self, model: nn.Module, spec: dict[str, Any]):
        super().__init__()
        self.spec = copy.deepcopy(spec)
        self.kind = _kind(spec)
        self.modality = spec["modality"]
        self.feature_layer = int(spec.get("feature_layer", -1))
        self.drop_cls = bool(spec.get("drop_cls", False))
        self.max_audio_samples = spec.get("max_audio_samples")
        self.model = model
        self._layer_index = _prune(model, self.kind, self.feature_layer)
        self.media_key = _MEDIA_KEYS[self.kind]
        self.output_dim, base_tokens = _output_shape(model, self.kind, spec)
        if self.drop_cls and self.kind in ("siglip_vision_model", "efficientnet_lite"):
            raise ModelLoadError(
                f"encoder.drop_cls is set but a {self.kind} encoder has no CLS token; "
                "set encoder.drop_cls: false"
            )
        self.num_output_tokens = base_tokens - int(self.drop_cls)

    def forward(self, media: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.media_key not in media:
            raise KeyError(
                f"{self.kind} encoder reads media[{self.media_key!r}] but got keys "
                f"{sorted(media)}; the processor and the encoder disagree"
            )
        x = media[self.media_key].to(self._dtype())
        if self.kind == "efficientnet_lite" or self.kind in VISION_TYPES.values():
            out = self.model(pixel_values=x).last_hidden_state
        else:
            arg = "input_features" if self.kind == "whisper" else "input_values"
            if self._layer_index is None:
                out = self.model(**{arg: x}).last_hidden_state
            else:
                hidden = self.model(**{arg: x}, output_hidden_states=True).hidden_states
                out = hidden[self._layer_index]
        if self.drop_cls:
            out = out[:, 1:]
        return out

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


# ---- spec -> module ---------------------------------------------------------------------
def build_encoder(spec: dict[str, Any]) -> MediaEncoder:
    """Random-init encoder from a spec (as stored in the composite model's config)."""
    _check_spec(spec)
    config = config_from_dict(spec["config"])
    kind = _kind(spec)
    if kind == "efficientnet_lite":
        model: nn.Module = EfficientNetLiteEncoder(config)
    elif kind == "clip_vision_model":
        model = CLIPVisionModel(config)
    elif kind == "siglip_vision_model":
        model = SiglipVisionModel(config)
    elif kind == "vit":
        model = ViTModel(config, add_pooling_layer=False)
    elif kind == "whisper":
        model = WhisperEncoder(config)
    else:
        model = AutoModel.from_config(config)
    return MediaEncoder(model, spec)


def config_from_dict(d: dict[str, Any]) -> PretrainedConfig:
    """An HF config from its ``to_dict()`` form (the class is picked by ``model_type``)."""
    d = dict(d)
    model_type = d.get("model_type")
    if not model_type:
        raise ValueError("encoder spec config has no model_type")
    if model_type == EfficientNetLiteConfig.model_type:
        return EfficientNetLiteConfig.from_dict(d)
    return AutoConfig.for_model(**d)


def _check_spec(spec: dict[str, Any]) -> None:
    missing = [k for k in ("type", "config", "modality") if k not in spec]
    if missing:
        raise ValueError(f"encoder spec lacks {missing}: {spec}")
    if spec["type"] not in ENCODER_TYPES:
        raise ValueError(f"encoder spec type {spec['type']!r} not in {ENCODER_TYPES}")


def _kind(spec: dict[str, Any]) -> str:
    """Normalized architecture name, e.g. ``clip_vision_model``, ``whisper``, ``vit``."""
    mt = spec["config"]["model_type"]
    mt = VISION_TYPES.get(mt, mt)
    if mt not in (*VISION_TYPES.values(), *AUDIO_TYPES, "efficientnet_lite"):
        raise ModelLoadError(
            f"encoder model_type {mt!r} is not supported; supported: CLIP/SigLIP/ViT vision "
            "towers, Whisper, wav2vec2, HuBERT, AST, or encoder.type: efficientnet_lite0"
        )
    return mt


_MEDIA_KEYS = {
    "efficientnet_lite": "pixel_values",
    "clip_vision_model": "pixel_values",
    "siglip_vision_model": "pixel_values",
    "vit": "pixel_values",
    "whisper": "input_features",
    "wav2vec2": "input_values",
    "hubert": "input_values",
    "audio-spectrogram-transformer": "input_values",
}


def _prune(model: nn.Module, kind: str, feature_layer: int) -> int | None:
    """Drop what the chosen feature layer does not use; returns the hidden-state index.

    Vision towers are truncated in place (returns None: ``last_hidden_state`` is then the
    wanted layer). Audio encoders keep all layers and return the ``hidden_states`` index to
    read, or None for ``last_hidden_state``.
    """
    if kind == "efficientnet_lite":
        if feature_layer != -1:
            raise ModelLoadError("efficientnet_lite0 only supports encoder.feature_layer: -1")
        return None
    if kind in VISION_TYPES.values():
        # transformers 5 flattened these towers; older layouts nest them one level deeper
        vm = getattr(model, "vision_model", model)
        layers = _first_attr(vm, ("layers", "encoder.layers", "encoder.layer"))
        if kind == "clip_vision_model":
            vm.post_layernorm = nn.Identity()  # only feeds the pooled output
        elif kind == "siglip_vision_model":
            vm.use_head = False  # attention-pooling head: not part of the token output
            if hasattr(vm, "head"):
                del vm.head
        final_norm_attr = (vm, "layernorm" if kind == "vit" else "post_layernorm")
    else:
        if feature_layer == -1:
            return None
        n = model.config.num_hidden_layers
        return _layer_index(feature_layer, n)
    if feature_layer == -1:
        return None
    k = _layer_index(feature_layer, len(layers))
    del layers[k:]
    setattr(final_norm_attr[0], final_norm_attr[1], nn.Identity())
    return None


def _first_attr(module: nn.Module, dotted_names: tuple[str, ...]) -> nn.ModuleList:
    for dotted in dotted_names:
        obj: Any = module
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ModelLoadError(f"cannot find the layer list of {type(module).__name__}")


def _layer_index(feature_layer: int, n_layers: int) -> int:
    k = feature_layer if feature_layer >= 0 else n_layers + 1 + feature_layer
    if not 0 <= k <= n_layers:
        raise ModelLoadError(
            f"encoder.feature_layer {feature_layer} is out of range for a {n_layers}-layer "
            f"encoder (use -{n_layers + 1}..{n_layers})"
        )
    return k


def _output_shape(model: nn.Module, kind: str, spec: dict[str, Any]) -> tuple[int, int]:
    cfg = model.config
    if kind == "efficientnet_lite":
        return cfg.hidden_size, cfg.num_tokens
    if kind in VISION_TYPES.values():
        grid = cfg.image_size // cfg.patch_size
        return cfg.hidden_size, grid * grid + (0 if kind == "siglip_vision_model" else 1)
    if kind == "whisper":
        return cfg.d_model, cfg.max_source_positions
    if kind == "audio-spectrogram-transformer":
        f = (cfg.num_mel_bins - cfg.patch_size) // cfg.frequency_stride + 1
        t = (cfg.max_length - cfg.patch_size) // cfg.time_stride + 1
        return cfg.hidden_size, f * t + 2  # CLS + distillation tokens
    # wav2vec2/HuBERT conv feature extractor (plain ints: this also runs on meta tensors
    # inside from_pretrained)
    n = int(spec.get("max_audio_samples") or DEFAULT_AUDIO_SAMPLES)
    for kernel, stride in zip(cfg.conv_kernel, cfg.conv_stride, strict=True):
        n = (n - kernel) // stride + 1
    return cfg.hidden_size, n


# ---- pretrained loading -----------------------------------------------------------------
def load_encoder(cfg: EncoderConfig, modality: str) -> tuple[MediaEncoder, dict[str, Any], Any]:
    """Pretrained encoder from a recipe's encoder section.

    Returns ``(encoder, spec, media_processor)``; the processor is an HF image processor
    or feature extractor configured so its output matches ``encoder.num_output_tokens``.
    Raises :class:`ModelLoadError` when the weights cannot be found offline.
    """
    if modality not in ("image", "audio"):
        raise ModelLoadError(f"model.modality must be image or audio, got {modality!r}")
    if cfg.type == "efficientnet_lite0":
        return _load_lite0(cfg, modality)
    path = cfg.path
    if path is None and cfg.type == "whisper_encoder":
        path = str(pretrained_path("whisper-tiny.en"))
    if path is None:
        raise ModelLoadError(
            "model.encoder.path is not set: give a local encoder directory or an HF id "
            "(or use encoder.type: efficientnet_lite0 / whisper_encoder for the offline "
            "pretrained parts prepared by `commit prepare`)"
        )
    path = _check_path(resolve_model_path(path))
    config = _guarded(path, lambda: AutoConfig.from_pretrained(path))
    mt = config.model_type
    if cfg.type == "whisper_encoder" and mt != "whisper":
        raise ModelLoadError(
            f"encoder.type is whisper_encoder but {path} holds a {mt!r} model; "
            "use encoder.type: hf for other encoders"
        )
    spec_type = "whisper_encoder" if mt == "whisper" else "hf"
    base = {
        "type": spec_type,
        "feature_layer": cfg.feature_layer,
        "drop_cls": cfg.drop_cls,
        "modality": modality,
    }
    kind = VISION_TYPES.get(mt, mt)
    _kind({"config": {"model_type": kind}})
    expected = "image" if kind in VISION_TYPES.values() else "audio"
    if modality != expected:
        raise ModelLoadError(
            f"{path} is a {expected} encoder ({mt}) but model.modality is {modality}"
        )
    f32 = {"dtype": torch.float32}
    if kind == "clip_vision_model":
        model = _guarded(path, lambda: CLIPVisionModel.from_pretrained(path, **f32))
    elif kind == "siglip_vision_model":
        model = _guarded(path, lambda: SiglipVisionModel.from_pretrained(path, **f32))
    elif kind == "vit":
        model = _guarded(
            path, lambda: ViTModel.from_pretrained(path, add_pooling_layer=False, **f32)
        )
    elif kind == "whisper":
        model = _guarded(path, lambda: WhisperModel.from_pretrained(path, **f32)).get_encoder()
    else:
        model = _guarded(path, lambda: AutoModel.from_pretrained(path, **f32))
    spec = {**base, "config": _config_dict(model.config)}
    if kind in VISION_TYPES.values():
        spec["image_size"] = int(model.config.image_size)
    if kind in ("wav2vec2", "hubert"):
        spec["max_audio_samples"] = DEFAULT_AUDIO_SAMPLES
    encoder = MediaEncoder(model, spec)
    processor = _media_processor(path, kind, model.config)
    log.info(
        "loaded %s encoder from %s: %d tokens x %d dims per example",
        kind,
        path,
        encoder.num_output_tokens,
        encoder.output_dim,
    )
    return encoder, spec, processor


def _load_lite0(cfg: EncoderConfig, modality: str):
    if modality != "image":
        raise ModelLoadError("encoder.type efficientnet_lite0 is an image encoder")
    size = cfg.image_size
    if cfg.path is None:
        model = EfficientNetLiteEncoder(EfficientNetLiteConfig(image_size=size))
        model.load_packaged_weights()
        source = "packaged ImageNet weights"
    else:
        path = _check_path(resolve_model_path(cfg.path))
        model = _guarded(
            path, lambda: EfficientNetLiteEncoder.from_pretrained(path, image_size=size)
        )
        source = path
    spec = {
        "type": "efficientnet_lite0",
        "config": _config_dict(model.config),
        "feature_layer": cfg.feature_layer,
        "drop_cls": cfg.drop_cls,
        "image_size": size,
        "modality": "image",
    }
    encoder = MediaEncoder(model, spec)
    log.info(
        "loaded EfficientNet-Lite0 (%s) at %d px: %d tokens x %d dims",
        source,
        size,
        encoder.num_output_tokens,
        encoder.output_dim,
    )
    return encoder, spec, lite0_image_processor(size)


def _media_processor(path: str, kind: str, config: PretrainedConfig) -> Any:
    """The processor the encoder's own directory ships, adjusted to a fixed output size."""
    if kind == "whisper":
        # Always built here: it must yield exactly 2 * max_source_positions frames even
        # when the directory's extractor was made for another window.
        return whisper_feature_extractor(config.num_mel_bins, config.max_source_positions)
    try:
        if kind in VISION_TYPES.values():
            return AutoImageProcessor.from_pretrained(path)
        if kind == "audio-spectrogram-transformer":
            fe = ASTFeatureExtractor.from_pretrained(path)
        else:
            return Wav2Vec2FeatureExtractor.from_pretrained(path)
    except (OSError, ValueError) as e:
        log.warning("%s has no usable media processor (%s); using defaults", path, e)
        if kind in VISION_TYPES.values():
            s = int(config.image_size)
            return ViTImageProcessor(size={"height": s, "width": s})
        if kind == "audio-spectrogram-transformer":
            fe = ASTFeatureExtractor()
        else:
            return Wav2Vec2FeatureExtractor()
    # The token count depends on these two, so they must follow the model config.
    fe.num_mel_bins = fe.feature_size = config.num_mel_bins
    fe.max_length = config.max_length
    return fe


def _config_dict(config: PretrainedConfig) -> dict[str, Any]:
    d = config.to_dict()
    d.pop("_name_or_path", None)
    d.pop("transformers_version", None)
    return d


def _check_path(path: str) -> str:
    """A path that looks local must exist; anything else is treated as an HF id."""
    p = Path(path).expanduser()
    if p.exists():
        return str(p)
    looks_local = path.startswith(("/", ".", "~")) or path.count("/") > 1
    if looks_local:
        raise ModelLoadError(
            f"encoder path {path} does not exist. Give an existing local model directory, "
            "or run `commit prepare` to create the offline pretrained parts."
        )
    return path


def _guarded(path: str, fn):
    """Run a from_pretrained call, turning "cannot fetch / not a model dir" into a clear error."""
    try:
        return fn()
    except (OSError, ValueError, KeyError) as e:
        raise ModelLoadError(
            f"could not load the encoder from {path!r}: {str(e).splitlines()[0]} "
            "There is no model hub access here: give a local directory that holds the "
            "model (config.json + weights), or run `commit prepare` and use a cache:// "
            "path for the offline pretrained parts."
        ) from None
