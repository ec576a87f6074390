"""Encoders: shapes, fixed token counts and save/reload identity, on tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    ASTConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    PretrainedConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    ViTConfig,
    Wav2Vec2Config,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from commit_train.config import EncoderConfig
from commit_train.errors import ModelLoadError
from commit_train.modeling.efficientnet import EfficientNetLiteConfig, EfficientNetLiteEncoder
from commit_train.modeling.encoders import (
    MediaEncoder,
    build_encoder,
    config_from_dict,
    load_encoder,
)
from commit_train.modeling.pretrained import prepare_pretrained, resolve_model_path

VIT_KW = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
)


def _spec(config, modality="image", type_="hf", **kw) -> dict:
    spec = {
        "type": type_,
        "config": config.to_dict(),
        "feature_layer": -1,
        "drop_cls": False,
        "modality": modality,
        **kw,
    }
    return json.loads(json.dumps(spec))  # what the composite config really stores


class _HolderConfig(PretrainedConfig):
    """Stands in for the composite model's config: it stores the encoder spec."""

    model_type = "test_encoder_holder"

    def __init__(self, spec: dict | None = None, **kwargs):
        self.spec = spec
        super().__init__(**kwargs)


class _Holder(PreTrainedModel):
    """Holds the encoder as ``encoder`` like the composite model does."""

    config_class = _HolderConfig

    def __init__(self, config: _HolderConfig):
        super().__init__(config)
        self.encoder = build_encoder(config.spec)
        self.post_init()

    def _init_weights(self, module):
        pass


def _roundtrip(enc: MediaEncoder, media: dict, tmp_path) -> torch.Tensor:
    """Save/reload through the real HF path of a holder model rebuilt from the spec."""
    holder = _Holder(_HolderConfig(spec=enc.spec))
    holder.encoder.load_state_dict(enc.state_dict())
    holder.eval()
    with torch.no_grad():
        out = holder.encoder(media)
    holder.save_pretrained(tmp_path / "holder")
    reloaded = _Holder.from_pretrained(tmp_path / "holder").eval()
    assert sorted(reloaded.state_dict()) == sorted(holder.state_dict())
    assert all(k.startswith("encoder.model.") for k in reloaded.state_dict())
    with torch.no_grad():
        assert torch.equal(reloaded.encoder(media), out)
    return out


@pytest.mark.parametrize(
    ("config", "feature_layer", "drop_cls", "tokens"),
    [
        (CLIPVisionConfig(**VIT_KW), -1, False, 17),
        (CLIPVisionConfig(**VIT_KW), -2, True, 16),
        (SiglipVisionConfig(**VIT_KW), -1, False, 16),
        (ViTConfig(**VIT_KW), 1, False, 17),
    ],
)
def test_vision_encoders(config, feature_layer, drop_cls, tokens, tmp_path):
    torch.manual_seed(0)
    enc = build_encoder(_spec(config, feature_layer=feature_layer, drop_cls=drop_cls))
    assert (enc.num_output_tokens, enc.output_dim, enc.media_key) == (tokens, 32, "pixel_values")
    out = _roundtrip(enc, {"pixel_values": torch.randn(2, 3, 32, 32)}, tmp_path)
    assert out.shape == (2, tokens, 32)
    # every parameter reaches the output (DDP needs it): pruned layers/heads are gone
    out.sum().backward() if out.requires_grad else None
    enc.train()
    enc({"pixel_values": torch.randn(2, 3, 32, 32)}).sum().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)


def test_feature_layer_matches_hidden_states():
    torch.manual_seed(0)
    config = CLIPVisionConfig(**VIT_KW)
    full = CLIPVisionModel(config).eval()
    enc = MediaEncoder(CLIPVisionModel(config), _spec(config, feature_layer=-2)).eval()
    enc.model.load_state_dict(full.state_dict(), strict=False)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = full(pixel_values=x, output_hidden_states=True).hidden_states[-2]
        assert torch.allclose(enc({"pixel_values": x}), want, atol=1e-6)
    layers = getattr(enc.model, "layers", None) or enc.model.encoder.layers
    assert len(layers) == 2


def test_lite0_from_config_and_hf_roundtrip(tmp_path):
    torch.manual_seed(0)
    config = EfficientNetLiteConfig(image_size=64)
    enc = build_encoder(_spec(config, type_="efficientnet_lite0", image_size=64))
    assert (enc.num_output_tokens, enc.output_dim) == (4, 1280)
    x = torch.randn(2, 3, 64, 64)
    out = _roundtrip(enc, {"pixel_values": x}, tmp_path)
    assert out.shape == (2, 4, 1280)
    enc.model.save_pretrained(tmp_path / "enc")
    reloaded = EfficientNetLiteEncoder.from_pretrained(tmp_path / "enc").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(x).last_hidden_state, out)
    # BN statistics stay frozen in training mode: output is batch-independent
    enc.train()
    assert not any(m.training for m in enc.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_lite0_load_from_saved_dir(tmp_path):
    EfficientNetLiteEncoder(EfficientNetLiteConfig(image_size=224)).save_pretrained(tmp_path)
    enc, spec, proc = load_encoder(
        EncoderConfig(type="efficientnet_lite0", path=str(tmp_path), image_size=128), "image"
    )
    assert enc.num_output_tokens == 16 and spec["image_size"] == 128
    assert spec["config"]["image_size"] == 128
    from PIL import Image

    pix = proc(Image.new("RGB", (300, 200)), return_tensors="pt")["pixel_values"]
    assert enc({"pixel_values": pix}).shape == (1, 16, 1280)


def _tiny_whisper(msp=20) -> WhisperConfig:
    return WhisperConfig(
        vocab_size=100,
        num_mel_bins=8,
        d_model=16,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=msp,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=0,
        decoder_start_token_id=1,
    )


def test_whisper_encoder_spec_and_dir(tmp_path):
    torch.manual_seed(0)
    config = _tiny_whisper()
    enc = build_encoder(_spec(config, "audio", "whisper_encoder"))
    assert (enc.num_output_tokens, enc.output_dim, enc.media_key) == (20, 16, "input_features")
    feats = {"input_features": torch.randn(2, 8, 40)}
    assert _roundtrip(enc, feats, tmp_path).shape == (2, 20, 16)
    # a WhisperForConditionalGeneration dir provides the encoder weights
    full = WhisperForConditionalGeneration(_tiny_whisper(50)).eval()
    full.save_pretrained(tmp_path / "full")
    loaded, spec, fe = load_encoder(
        EncoderConfig(type="whisper_encoder", path=str(tmp_path / "full")), "audio"
    )
    assert spec["type"] == "whisper_encoder" and loaded.num_output_tokens == 50
    x = fe([0.1 * torch.randn(8000).numpy()], sampling_rate=16000, return_tensors="pt")
    assert x["input_features"].shape == (1, 8, 100)  # exactly 2 * max_source_positions
    with torch.no_grad():
        want = full.model.encoder(x["input_features"]).last_hidden_state
        assert torch.equal(loaded.eval()(dict(x)), want)


def test_wav2vec2_and_ast(tmp_path):
    torch.manual_seed(0)
    w2v = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
    )
    enc = build_encoder(_spec(w2v, "audio", max_audio_samples=1600))
    assert enc.media_key == "input_values" and enc.num_output_tokens == 79
    out = _roundtrip(enc, {"input_values": torch.randn(2, 1600)}, tmp_path / "w")
    assert out.shape == (2, 79, 16)
    ast = ASTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_mel_bins=32,
        max_length=48,
        patch_size=16,
        frequency_stride=16,
        time_stride=16,
    )
    enc = build_encoder(_spec(ast, "audio", feature_layer=0))
    assert enc.num_output_tokens == 2 * 3 + 2
    out = _roundtrip(enc, {"input_values": torch.randn(2, 48, 32)}, tmp_path / "a")
    assert out.shape == (2, 8, 16)


def test_config_from_dict_roundtrip():
    d = json.loads(json.dumps(EfficientNetLiteConfig(image_size=96).to_dict()))
    assert config_from_dict(d).image_size == 96
    assert config_from_dict(CLIPVisionConfig(**VIT_KW).to_dict()).patch_size == 8


def test_missing_paths_raise_model_load_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMIT_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="commit prepare"):
        resolve_model_path("cache://missing")
    assert resolve_model_path("org/model") == "org/model"
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_encoder(EncoderConfig(path=str(tmp_path / "nope")), "image")
    with pytest.raises(ModelLoadError, match="commit prepare"):
        load_encoder(EncoderConfig(path="cache://efficientnet-lite0"), "image")
    with pytest.raises(ModelLoadError, match="commit prepare"):
        load_encoder(EncoderConfig(type="whisper_encoder"), "audio")


@pytest.mark.pretrained
def test_real_lite0_classifies_and_loads_from_cache():
    """The packaged Lite0 sees skimage's cat as a cat (ImageNet classes 281-285)."""
    import importlib.util
    from pathlib import Path

    from PIL import Image

    from commit_train.modeling.efficientnet import lite0_classifier_logits

    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.submodule_search_locations is None:
        pytest.skip("scikit-image (for its real test photos) is not installed")
    cat = Path(next(iter(spec.submodule_search_locations))) / "data" / "chelsea.png"

    path = prepare_pretrained(parts=("lite0",))["lite0"]
    enc, spec, proc = load_encoder(
        EncoderConfig(type="efficientnet_lite0", path=str(path), image_size=224), "image"
    )
    pix = proc(Image.open(cat).convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = lite0_classifier_logits(enc.eval()({"pixel_values": pix}))
    assert 281 <= int(logits.argmax()) <= 285
