"""Hugging Face multimodal families behind the :class:`MultimodalLM` interface.

CoMMIT needs to re-run the encoder side and the LLM side separately (METHOD.md §2), and
to know which parameters belong to which side (§6). HF models fuse both into one
``forward``; the adapters here re-expose each family's own pieces at that seam:

* LLaVA (``LlavaForConditionalGeneration`` and models sharing its layout):
  ``vision_tower`` + ``multi_modal_projector`` -> ``language_model`` + ``lm_head``.
* BLIP-2 (``Blip2ForConditionalGeneration`` with a decoder-only LM):
  ``vision_model`` + ``query_tokens`` + ``qformer`` -> ``language_projection`` ->
  ``language_model``.
* Qwen2-Audio (``Qwen2AudioForConditionalGeneration``):
  ``audio_tower`` -> ``multi_modal_projector`` -> ``language_model`` + ``lm_head``.

Components are located by attribute *and* by module identity, so both the transformers 5
layout (``model.model.vision_tower``, ``model.model.language_model`` = decoder,
``model.lm_head``) and the older 4.x layout (``model.vision_tower``,
``model.language_model`` = CausalLM) yield correct prefixes. Every family produces a
fixed number of media tokens per example, because the collator lays out placeholders
before the model runs; variable-length variants (LLaVA-NeXT "anyres") are refused.

Nothing is registered globally: :func:`load_hf_multimodal` is the single entry point.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from commit_train.errors import ModelLoadError
from commit_train.modeling.base import MultimodalLM, MultimodalProcessor, SidePrefixes

logger = logging.getLogger(__name__)

SUPPORTED_FAMILIES = ("llava", "blip2", "qwen2_audio")

# config.json "architectures" entry or "model_type" -> family.
_ARCH_FAMILY = {
    "LlavaForConditionalGeneration": "llava",
    "Blip2ForConditionalGeneration": "blip2",
    "Qwen2AudioForConditionalGeneration": "qwen2_audio",
}
_TYPE_FAMILY = {
    "llava": "llava",
    "blip-2": "blip2",
    "blip_2": "blip2",
    "qwen2_audio": "qwen2_audio",
}
# Families we recognise but cannot serve: the reason is part of the error message.
_REFUSED_TYPES = {
    "llava_next": "LLaVA-NeXT 'anyres' tiling gives a number of image tokens that depends "
    "on each image's size, but CoMMIT's collator needs a fixed count per example",
    "llava_onevision": "LLaVA-OneVision 'anyres' tiling gives a variable number of image "
    "tokens per example, but CoMMIT's collator needs a fixed count",
}


# ---- locating components ---------------------------------------------------------------------
def _first_attr(root: nn.Module, candidates: tuple[str, ...], what: str) -> str:
    """Dotted path of the first candidate that exists: covers old and new HF layouts."""
    for path in candidates:
        try:
            root.get_submodule(path)
        except AttributeError:
            continue
        return path
    raise ModelLoadError(
        f"{type(root).__name__} has no {what} at any of {', '.join(candidates)}; this "
        "transformers version lays the model out differently from what CoMMIT supports"
    )


def _path_of(root: nn.Module, module: nn.Module) -> str:
    """Qualified name of ``module`` inside ``root``, found by identity (not by guessing)."""
    for name, m in root.named_modules(remove_duplicate=False):
        if m is module:
            return name
    raise ModelLoadError(f"{type(module).__name__} is not a submodule of {type(root).__name__}")


def _features_tensor(out: Any) -> torch.Tensor:
    """Normalise a ``get_*_features`` result to a (B, N, H) tensor.

    transformers 5 returns a ``BaseModelOutputWithPooling`` whose ``pooler_output`` holds
    the projected features (a per-image list for LLaVA); 4.x returned the tensor itself.
    """
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)):
        return torch.stack(list(out))
    return _features_tensor(out.pooler_output)


def _token_id(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise ModelLoadError(f"{type(config).__name__} sets none of {', '.join(names)}")


class _HFLayoutLM(MultimodalLM):
    """Shared plumbing of the HF families: LLM found by attribute, head by identity.

    Only dotted paths are kept (resolved per call with ``get_submodule``), never module
    references: a second reference would register the LLM twice as a child of the wrapper,
    and paths survive in-place LoRA injection, which swaps out leaf modules.
    """

    def __init__(
        self,
        model: nn.Module,
        media_token_id: int,
        encoder: tuple[str, ...],
        projector: tuple[str, ...],
    ):
        lm_path = _first_attr(model, ("model.language_model", "language_model"), "language_model")
        lm = model.get_submodule(lm_path)
        if getattr(lm, "config", None) is not None and lm.config.is_encoder_decoder:
            raise ModelLoadError(
                f"{type(model).__name__} uses an encoder-decoder language model "
                f"({type(lm).__name__}); CoMMIT's answer-position split assumes a "
                "decoder-only LLM (use an OPT/Llama/Qwen-based checkpoint)"
            )
        # A CausalLM (4.x layout, BLIP-2) holds its decoder at base_model; a bare decoder
        # (5.x LLaVA/Qwen2-Audio) is its own base_model.
        base = getattr(lm, "base_model", lm)
        decoder_path = lm_path if base is lm else _path_of(model, base)
        head = model.get_output_embeddings()
        if head is None:
            head = model.get_submodule(_first_attr(model, ("lm_head",), "lm_head"))
        head_path = _path_of(model, head)
        llm = (lm_path + ".",)
        if not head_path.startswith(lm_path + "."):
            llm = llm + (head_path + ".",)
        prefixes = SidePrefixes(encoder=encoder, projector=projector, llm=llm)
        super().__init__(model, prefixes, media_token_id)
        self._decoder_path = decoder_path
        self._head_path = head_path

    def input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def decoder(self) -> nn.Module:
        return self.model.get_submodule(self._decoder_path)

    def lm_head(self) -> nn.Module:
        return self.model.get_submodule(self._head_path)


# ---- models ----------------------------------------------------------------------------------
class LlavaLM(_HFLayoutLM):
    """LLaVA: CLIP/SigLIP tower -> MLP projector -> decoder; one image, fixed token count.

    ``encode`` calls the model's own ``get_image_features`` so the config's
    ``vision_feature_layer`` and ``vision_feature_select_strategy`` (CLS crop) apply
    exactly as in HF's forward.
    """

    family = "llava"
    modality = "image"

    def __init__(self, model: nn.Module):
        tower = _first_attr(model, ("model.vision_tower", "vision_tower"), "vision_tower")
        proj = _first_attr(
            model, ("model.multi_modal_projector", "multi_modal_projector"), "projector"
        )
        super().__init__(
            model,
            _token_id(model.config, "image_token_id", "image_token_index"),
            encoder=(tower + ".",),
            projector=(proj + ".",),
        )

    def encode(self, media: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model.get_image_features(pixel_values=media["pixel_values"])
        return _features_tensor(out)


class Blip2LM(_HFLayoutLM):
    """BLIP-2: ViT -> Q-Former (learned queries) -> linear projection -> decoder-only LM.

    The encoder side includes ``query_tokens`` and the Q-Former: both are trained with
    the vision model in BLIP-2's pre-training and are what turns an image into features;
    ``language_projection`` is the projector. N = ``num_query_tokens``.
    """

    family = "blip2"
    modality = "image"

    def __init__(self, model: nn.Module):
        super().__init__(
            model,
            _token_id(model.config, "image_token_id", "image_token_index"),
            encoder=("vision_model.", "qformer.", "query_tokens"),
            projector=("language_projection.",),
        )

    def encode(self, media: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model.get_image_features(pixel_values=media["pixel_values"])
        feats = _features_tensor(out)
        if feats.shape[-1] != self.model.config.text_config.hidden_size:
            # transformers < 5 returned the ViT pooler here, not the projected queries.
            raise ModelLoadError("BLIP-2 get_image_features did not return projected features")
        return feats


class Qwen2AudioLM(_HFLayoutLM):
    """Qwen2-Audio: Whisper-style encoder -> linear projector -> Qwen2 decoder.

    The tower only accepts exactly ``2 * max_source_positions`` mel frames, so every
    waveform is padded (or truncated) to that window and the *whole* window is encoded,
    silence included, as in Whisper pre-training. That makes the token count fixed,
    ``max_source_positions // 2``, which the collator needs; HF's forward gives the same
    result when ``feature_attention_mask`` is all ones.
    """

    family = "qwen2_audio"
    modality = "audio"

    def __init__(self, model: nn.Module):
        self._tower_path = _first_attr(model, ("model.audio_tower", "audio_tower"), "audio_tower")
        self._proj_path = _first_attr(
            model, ("model.multi_modal_projector", "multi_modal_projector"), "projector"
        )
        super().__init__(
            model,
            _token_id(model.config, "audio_token_id", "audio_token_index"),
            encoder=(self._tower_path + ".",),
            projector=(self._proj_path + ".",),
        )

    def encode(self, media: dict[str, torch.Tensor]) -> torch.Tensor:
        tower = self.model.get_submodule(self._tower_path)
        hidden = tower(media["input_features"]).last_hidden_state
        return self.model.get_submodule(self._proj_path)(hidden)


# ---- processors ------------------------------------------------------------------------------
class _HFProcessor(MultimodalProcessor):
    """Wraps an HF ``ProcessorMixin``: its tokenizer and image/audio part do the work.

    The media-token count is computed from the processor's own settings (the same rule
    HF's ``__call__`` uses to expand placeholders); :func:`load_hf_multimodal` checks it
    against one real encoder pass.
    """

    def __init__(self, hf_processor: Any, media_token: str, num_tokens: int):
        super().__init__(hf_processor.tokenizer, media_token)
        self.hf_processor = hf_processor
        self._num_tokens = int(num_tokens)

    def num_media_tokens(self) -> int:
        return self._num_tokens

    def save_pretrained(self, path: str) -> None:
        self.hf_processor.save_pretrained(str(path))

    def dummy_media(self) -> Any:
        """One neutral item, used to measure the model's real token count at load."""
        raise NotImplementedError


class _ImageProcessor(_HFProcessor):
    modality = "image"

    def process_media(self, items: list[Any]) -> dict[str, torch.Tensor]:
        images = [im.convert("RGB") if getattr(im, "mode", "RGB") != "RGB" else im for im in items]
        out = self.hf_processor.image_processor(images=images, return_tensors="pt")
        return {"pixel_values": out["pixel_values"].to(torch.float32)}

    def _image_hw(self) -> tuple[int, int]:
        pixels = self.process_media([self.dummy_media()])["pixel_values"]
        return int(pixels.shape[-2]), int(pixels.shape[-1])

    def dummy_media(self) -> Any:
        from PIL import Image

        return Image.new("RGB", (64, 64), color=(127, 127, 127))


class LlavaProcessorAdapter(_ImageProcessor):
    """LLaVA: ``(H/patch)*(W/patch) + extra (CLS) - 1 if the CLS is cropped``."""

    def __init__(self, hf_processor: Any, config: Any):
        token = str(getattr(hf_processor, "image_token", "<image>"))
        super().__init__(hf_processor, token, 0)
        patch = getattr(hf_processor, "patch_size", None) or config.vision_config.patch_size
        strategy = (
            getattr(hf_processor, "vision_feature_select_strategy", None)
            or config.vision_feature_select_strategy
        )
        extra = int(getattr(hf_processor, "num_additional_image_tokens", 0) or 0)
        h, w = self._image_hw()
        self._num_tokens = (h // patch) * (w // patch) + extra - (strategy == "default")


class Blip2ProcessorAdapter(_ImageProcessor):
    """BLIP-2: one placeholder per Q-Former query, whatever the image size."""

    def __init__(self, hf_processor: Any, config: Any):
        token = getattr(hf_processor, "image_token", "<image>")
        token = str(getattr(token, "content", token))
        n = getattr(hf_processor, "num_query_tokens", None) or config.num_query_tokens
        super().__init__(hf_processor, token, n)


class Qwen2AudioProcessorAdapter(_HFProcessor):
    """Qwen2-Audio: waveforms padded/truncated to the feature extractor's fixed window.

    Tokens per example = the encoder's output length for the full window (two stride-2
    stages: conv2, then average pooling), as HF's processor computes for full audio.
    """

    modality = "audio"

    def __init__(self, hf_processor: Any, config: Any):
        fe = hf_processor.feature_extractor
        self.sampling_rate = int(fe.sampling_rate)
        frames = int(fe.nb_max_frames)
        n = (((frames - 1) // 2 + 1) - 2) // 2 + 1
        super().__init__(hf_processor, str(getattr(hf_processor, "audio_token", "<|AUDIO|>")), n)

    def process_media(self, items: list[Any]) -> dict[str, torch.Tensor]:
        waves = [np.asarray(w, dtype=np.float32).reshape(-1) for w in items]
        out = self.hf_processor.feature_extractor(
            waves,
            sampling_rate=self.sampling_rate,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        return {"input_features": out["input_features"].to(torch.float32)}

    def dummy_media(self) -> Any:
        return np.zeros(self.sampling_rate, dtype=np.float32)


# ---- loading ---------------------------------------------------------------------------------
def _families() -> dict[str, tuple[Any, type[_HFLayoutLM], type[_HFProcessor]]]:
    """Family -> (default HF model class, wrapper, processor); imported lazily."""
    from transformers import (
        Blip2ForConditionalGeneration,
        LlavaForConditionalGeneration,
        Qwen2AudioForConditionalGeneration,
    )

    return {
        "llava": (LlavaForConditionalGeneration, LlavaLM, LlavaProcessorAdapter),
        "blip2": (Blip2ForConditionalGeneration, Blip2LM, Blip2ProcessorAdapter),
        "qwen2_audio": (
            Qwen2AudioForConditionalGeneration,
            Qwen2AudioLM,
            Qwen2AudioProcessorAdapter,
        ),
    }


def _looks_local(path: str) -> bool:
    """HF ids are ``name`` or ``org/name``; anything else is a filesystem path."""
    return (
        os.path.isabs(path)
        or path.startswith((".", "~"))
        or path.count("/") > 1
        or (os.sep != "/" and os.sep in path)
    )


def _unavailable(path: str, err: BaseException | None = None) -> ModelLoadError:
    detail = f" ({type(err).__name__}: {' '.join(str(err).split())})" if err is not None else ""
    return ModelLoadError(
        f"cannot load model '{path}': it is not a local directory with a config.json, and "
        "as an HF hub id it is not in the local cache (runs are offline, "
        "HF_HUB_OFFLINE=1); run `commit prepare` or point model.path at a downloaded "
        f"copy{detail}"
    )


def _read_config(path: str) -> dict[str, Any]:
    """The raw config.json: enough to pick the family without building anything."""
    if os.path.isdir(path):
        cfg_file = os.path.join(path, "config.json")
        if not os.path.isfile(cfg_file):
            raise _unavailable(path)
        with open(cfg_file, encoding="utf-8") as fh:
            return json.load(fh)
    if _looks_local(path):
        raise _unavailable(path)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path).to_dict()
    except (OSError, ValueError) as err:
        raise _unavailable(path, err) from err


def detect_family(raw_config: dict[str, Any], path: str = "<config>") -> str:
    """Family of a config.json: ``architectures`` first, then ``model_type``."""
    model_type = str(raw_config.get("model_type", ""))
    for arch in raw_config.get("architectures") or []:
        if arch in _ARCH_FAMILY:
            return _ARCH_FAMILY[arch]
    if model_type in _TYPE_FAMILY:
        return _TYPE_FAMILY[model_type]
    reason = _REFUSED_TYPES.get(model_type)
    archs = ", ".join(raw_config.get("architectures") or []) or "none listed"
    raise ModelLoadError(
        f"model '{path}' has an unsupported architecture (model_type={model_type or '?'}, "
        f"architectures: {archs})"
        + (f": {reason}. " if reason else ". ")
        + f"Supported HF families: {', '.join(SUPPORTED_FAMILIES)} (plus the project's "
        "composite model). If the model shares one of these layouts, pass its family "
        "explicitly; for the parameter partition alone, model.side_prefixes "
        "{encoder: [...], projector: [...], llm: [...]} can be given."
    )


def load_hf_multimodal(
    path: str | os.PathLike,
    family: str = "auto",
    dtype: torch.dtype = torch.float32,
    verify: bool = True,
) -> tuple[MultimodalLM, MultimodalProcessor]:
    """Load an HF multimodal checkpoint (local dir or cached hub id) and its processor.

    ``family="auto"`` reads config.json; an explicit family loads the class named in
    ``architectures`` (so LLaVA-layout relatives work) with the family's wrapper.
    ``verify`` runs the encoder once on a dummy item and makes the model's real token
    count authoritative: a stale processor config (e.g. a missing
    ``num_additional_image_tokens``) would otherwise mis-size every prompt.
    """
    path = os.fspath(path)
    raw = _read_config(path)
    fam = detect_family(raw, path) if family == "auto" else family
    families = _families()
    if fam not in families:
        raise ModelLoadError(
            f"unknown model family '{fam}' for '{path}'; supported: {', '.join(families)}"
        )
    default_cls, wrapper_cls, proc_cls = families[fam]
    import transformers
    from transformers import AutoProcessor

    archs = list(raw.get("architectures") or [])
    named = [getattr(transformers, a, None) for a in archs]
    if archs and all(c is None for c in named):
        raise ModelLoadError(
            f"model '{path}' declares architectures {', '.join(archs)}, which are not "
            "transformers classes (e.g. an original-repository LLaVA checkpoint); use the "
            "HF-converted checkpoint (such as llava-hf/...), whose weights load without "
            "custom code"
        )
    model_cls = next((c for c in named if c is not None), default_cls)
    try:
        model, info = model_cls.from_pretrained(path, dtype=dtype, output_loading_info=True)
    except OSError as err:
        raise _unavailable(path, err) from err
    if info.get("missing_keys"):
        # Silently random weights would train and "work"; a layout mismatch must stop here.
        missing = sorted(info["missing_keys"])
        raise ModelLoadError(
            f"model '{path}' loaded as {model_cls.__name__} but {len(missing)} weights were "
            f"missing from the checkpoint (e.g. {', '.join(missing[:3])}); it was saved by a "
            "different architecture or transformers layout"
        )
    try:
        hf_processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"model '{path}' has no usable processor files (tokenizer plus image processor "
            "or feature extractor, as written by the HF processor's save_pretrained): "
            f"{' '.join(str(err).split())}"
        ) from err
    mlm = wrapper_cls(model)
    processor = proc_cls(hf_processor, model.config)
    ids = processor.tokenizer(processor.media_token, add_special_tokens=False)["input_ids"]
    if list(ids) != [mlm.media_token_id]:
        raise ModelLoadError(
            f"model '{path}': the placeholder {processor.media_token!r} tokenizes to {ids}, "
            f"but the model scatters media features at token id {mlm.media_token_id}; the "
            "tokenizer and config.json disagree"
        )
    if verify:
        _check_token_count(mlm, processor, path)
    return mlm, processor


def _check_token_count(mlm: MultimodalLM, processor: _HFProcessor, path: str) -> None:
    """One dummy encoder pass: the model, not the processor config, decides N."""
    media = processor.process_media([processor.dummy_media()])
    param = next(mlm.model.parameters())
    media = {k: v.to(param.device, param.dtype) for k, v in media.items()}
    was_training = mlm.training
    mlm.eval()
    with torch.no_grad():
        n = int(mlm.encode(media).shape[1])
    mlm.train(was_training)
    if n != processor.num_media_tokens():
        logger.warning(
            "%s: the processor config implies %d media tokens per example but the model "
            "produces %d; using %d (HF's own processor would expand placeholders wrongly)",
            path,
            processor.num_media_tokens(),
            n,
            n,
        )
        processor._num_tokens = n
