"""CTranslate2 -> HF Whisper converter, on a tiny synthetic v6 binary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoFeatureExtractor, WhisperForConditionalGeneration

from commit_train.modeling.whisper_ct2 import convert_ct2_whisper, read_ct2, write_ct2

D, FFN, MELS, VOCAB, SRC, TGT = 8, 16, 4, 20, 100, 10


def _tiny_ct2_variables(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def w(*shape):
        return rng.standard_normal(shape).astype(np.float16)

    v: dict[str, np.ndarray] = {
        "encoder/num_heads": np.array(2, np.int16),
        "decoder/num_heads": np.array(2, np.int16),
        "decoder/pre_norm": np.array(1, np.int8),
        "decoder/activation": np.array(1, np.int8),
        "encoder/conv1/weight": w(D, MELS, 3),
        "encoder/conv1/bias": w(D),
        "encoder/conv2/weight": w(D, D, 3),
        "encoder/conv2/bias": w(D),
        "encoder/position_encodings/encodings": w(SRC, D),
        "decoder/position_encodings/encodings": w(TGT, D),
        "decoder/embeddings/weight": w(VOCAB, D),
    }
    for side in ("encoder", "decoder"):
        for name in ("layer_norm",):
            v[f"{side}/{name}/gamma"], v[f"{side}/{name}/beta"] = w(D), w(D)
        p = f"{side}/layer_0"
        for ln in ("self_attention", "ffn") + (("attention",) if side == "decoder" else ()):
            v[f"{p}/{ln}/layer_norm/gamma"], v[f"{p}/{ln}/layer_norm/beta"] = w(D), w(D)
        qkv_bias = w(3 * D)
        qkv_bias[D : 2 * D] = 0  # CT2 stores a zero key bias
        v[f"{p}/self_attention/linear_0/weight"] = w(3 * D, D)
        v[f"{p}/self_attention/linear_0/bias"] = qkv_bias
        v[f"{p}/self_attention/linear_1/weight"], v[f"{p}/self_attention/linear_1/bias"] = (
            w(D, D),
            w(D),
        )
        v[f"{p}/ffn/linear_0/weight"], v[f"{p}/ffn/linear_0/bias"] = w(FFN, D), w(FFN)
        v[f"{p}/ffn/linear_1/weight"], v[f"{p}/ffn/linear_1/bias"] = w(D, FFN), w(D)
        if side == "decoder":
            kv_bias = w(2 * D)
            kv_bias[:D] = 0
            v[f"{p}/attention/linear_0/weight"], v[f"{p}/attention/linear_0/bias"] = w(D, D), w(D)
            v[f"{p}/attention/linear_1/weight"], v[f"{p}/attention/linear_1/bias"] = (
                w(2 * D, D),
                kv_bias,
            )
            v[f"{p}/attention/linear_2/weight"], v[f"{p}/attention/linear_2/bias"] = w(D, D), w(D)
    return v


def _tiny_tokenizer(path) -> None:
    vocab = {c: i for i, c in enumerate("abcdefgh")}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_special_tokens(["<|endoftext|>", "<|startoftranscript|>"])
    tok.save(str(path))


@pytest.fixture
def ct2_dir(tmp_path):
    variables = _tiny_ct2_variables(np.random.default_rng(0))
    d = tmp_path / "ct2"
    d.mkdir()
    write_ct2(
        d / "model.bin", variables, {"decoder/projection/weight": "decoder/embeddings/weight"}
    )
    _tiny_tokenizer(d / "tokenizer.json")
    return d, variables


def test_binary_roundtrip(ct2_dir):
    d, variables = ct2_dir
    spec, read = read_ct2(d / "model.bin")
    assert spec == "WhisperSpec"
    assert set(read) == set(variables) | {"decoder/projection/weight"}
    for k, v in variables.items():
        assert read[k].dtype == v.dtype and np.array_equal(read[k], v)


def test_convert_loads_strictly_and_maps_tensors(ct2_dir, tmp_path, monkeypatch):
    import commit_train.modeling.whisper_ct2 as ct2

    # tiny vocab: point the special ids inside it so the config is valid
    monkeypatch.setattr(ct2, "EOT", 0)
    monkeypatch.setattr(ct2, "SOT", 1)
    d, v = ct2_dir
    out = convert_ct2_whisper(d, tmp_path / "hf", max_source_positions=50)
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    sd = model.state_dict()
    # strict: a fresh model of the saved config takes the converted state, nothing left over
    WhisperForConditionalGeneration(model.config).load_state_dict(sd, strict=True)

    def f32(name):
        return torch.from_numpy(v[name].astype(np.float32))

    enc, dec = "model.encoder.layers.0", "model.decoder.layers.0"
    qkv = f32("encoder/layer_0/self_attention/linear_0/weight")
    assert torch.equal(sd[f"{enc}.self_attn.q_proj.weight"], qkv[:D])
    assert torch.equal(sd[f"{enc}.self_attn.k_proj.weight"], qkv[D : 2 * D])
    assert torch.equal(sd[f"{enc}.self_attn.v_proj.weight"], qkv[2 * D :])
    assert f"{enc}.self_attn.k_proj.bias" not in sd
    bias = f32("encoder/layer_0/self_attention/linear_0/bias")
    assert torch.equal(sd[f"{enc}.self_attn.v_proj.bias"], bias[2 * D :])
    kv = f32("decoder/layer_0/attention/linear_1/weight")
    assert torch.equal(sd[f"{dec}.encoder_attn.k_proj.weight"], kv[:D])
    assert torch.equal(sd[f"{dec}.encoder_attn.v_proj.weight"], kv[D:])
    assert torch.equal(
        sd[f"{dec}.encoder_attn.out_proj.weight"], f32("decoder/layer_0/attention/linear_2/weight")
    )
    assert torch.equal(
        sd[f"{dec}.final_layer_norm.weight"], f32("decoder/layer_0/ffn/layer_norm/gamma")
    )
    assert torch.equal(sd["model.encoder.layer_norm.bias"], f32("encoder/layer_norm/beta"))
    pos = f32("encoder/position_encodings/encodings")
    assert torch.equal(sd["model.encoder.embed_positions.weight"], pos[:50])
    emb = f32("decoder/embeddings/weight")
    assert torch.equal(sd["model.decoder.embed_tokens.weight"], emb)
    assert torch.equal(model.proj_out.weight, emb)  # tied output projection
    assert model.config.max_source_positions == 50 and model.config.encoder_attention_heads == 2

    fe = AutoFeatureExtractor.from_pretrained(out)
    feats = fe(np.zeros(3000, np.float32), sampling_rate=16000, return_tensors="pt")
    assert feats["input_features"].shape == (1, MELS, 100)  # 2 * max_source_positions
    with torch.no_grad():
        enc_out = model.model.encoder(feats["input_features"]).last_hidden_state
    assert enc_out.shape == (1, 50, D)


def test_rejects_bad_window(ct2_dir, tmp_path):
    d, _ = ct2_dir
    with pytest.raises(ValueError, match="multiple of 50"):
        convert_ct2_whisper(d, tmp_path / "x", max_source_positions=60)
    with pytest.raises(ValueError, match="max_source_positions"):
        convert_ct2_whisper(d, tmp_path / "y", max_source_positions=200)


@pytest.mark.pretrained
def test_real_whisper_transcribes_alsa_clip():
    """The converted tiny.en transcribes a real human clip shipped by Debian alsa-utils."""
    from pathlib import Path

    clip = Path("/usr/share/sounds/alsa/Front_Center.wav")
    if not clip.is_file():
        pytest.skip("alsa-utils sounds are not installed")
    import soundfile as sf
    from scipy.signal import resample_poly
    from transformers import WhisperProcessor

    from commit_train.modeling.pretrained import prepare_pretrained

    path = prepare_pretrained(parts=("whisper",))["whisper"]
    audio, sr = sf.read(clip, dtype="float32")
    audio = resample_poly(audio if audio.ndim == 1 else audio.mean(1), 16000, sr)
    proc = WhisperProcessor.from_pretrained(path)
    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    feats = proc(audio.astype(np.float32), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(feats.input_features, max_new_tokens=10)
    text = proc.batch_decode(ids, skip_special_tokens=True)[0].lower()
    assert "front" in text and "center" in text
