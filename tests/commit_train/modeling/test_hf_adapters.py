"""HF family adapters against the HF models' own forward, on tiny random checkpoints.

Each family is built from a tiny config, saved with ``save_pretrained`` (model and
processor) and loaded back through :func:`load_hf_multimodal`, so the real
``from_pretrained`` / ``AutoProcessor`` path is exercised without a model hub.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessorPil,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    OPTConfig,
    PreTrainedTokenizerFast,
    Qwen2AudioConfig,
    Qwen2AudioEncoderConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2AudioProcessor,
    Qwen2Config,
    WhisperFeatureExtractor,
)

from commit_train.errors import ModelLoadError
from commit_train.modeling.base import SIDES
from commit_train.modeling.hf_adapters import (
    Blip2LM,
    LlavaLM,
    Qwen2AudioLM,
    detect_family,
    load_hf_multimodal,
)

VOCAB = 256
CORPUS = [
    "what is in the picture ? a red cat on a blue mat .",
    "describe the sound . a dog barks twice near the door .",
    "the quick brown fox jumps over the lazy dog and runs away",
    "question answer image audio yes no one two three four five",
]


def tiny_tokenizer(media_token: str) -> PreTrainedTokenizerFast:
    """A ~150-token word-piece tokenizer whose placeholder is a single special token."""
    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<pad>", "<unk>", "<s>", "</s>", media_token]
    tok.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=150, special_tokens=specials)
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=[media_token],
    )
    assert len(wrapped) < VOCAB
    return wrapped


def llama_text(**kw) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        **kw,
    )


def save_llava(path, extra_tokens: int = 1) -> None:
    tok = tiny_tokenizer("<image>")
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=30,
        patch_size=10,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=llama_text(),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    image_proc = CLIPImageProcessorPil(
        size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}
    )
    LlavaProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        patch_size=10,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=extra_tokens,
    ).save_pretrained(path)


def save_blip2(path, text: str = "opt") -> None:
    tok = tiny_tokenizer("<image>")
    if text == "opt":
        text_config = OPTConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            word_embed_proj_dim=32,
            max_position_embeddings=256,
            pad_token_id=0,
        )
    else:
        text_config = llama_text()
    config = Blip2Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 30,
            "patch_size": 10,
        },
        qformer_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "encoder_hidden_size": 32,
            "vocab_size": 64,
        },
        text_config=text_config.to_dict(),
        num_query_tokens=5,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(config).save_pretrained(path)
    tok.image_token = "<image>"
    image_proc = BlipImageProcessorPil(size={"height": 30, "width": 30})
    Blip2Processor(image_processor=image_proc, tokenizer=tok, num_query_tokens=5).save_pretrained(
        path
    )


def save_qwen2_audio(path) -> None:
    tok = tiny_tokenizer("<|AUDIO|>")
    audio = Qwen2AudioEncoderConfig(
        num_mel_bins=16,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=64,
        d_model=32,
        max_source_positions=50,
    )
    text = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    config = Qwen2AudioConfig(
        audio_config=audio,
        text_config=text,
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(0)
    Qwen2AudioForConditionalGeneration(config).save_pretrained(path)
    # 1 s at 16 kHz, hop 160 -> 100 mel frames = 2 * max_source_positions.
    fe = WhisperFeatureExtractor(
        feature_size=16, sampling_rate=16000, hop_length=160, chunk_length=1
    )
    Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(path)


BUILDERS = {"llava": save_llava, "blip2": save_blip2, "qwen2_audio": save_qwen2_audio}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """family -> (path, mlm, processor), built once per module (saving is the slow part)."""
    out = {}
    for family, build in BUILDERS.items():
        path = tmp_path_factory.mktemp(family)
        build(path)
        mlm, proc = load_hf_multimodal(str(path))
        out[family] = (path, mlm.eval(), proc)
    return out


def media_items(proc, n: int) -> list:
    rng = np.random.default_rng(0)
    if proc.modality == "audio":
        return [
            rng.standard_normal(proc.sampling_rate * (i + 1) // 2).astype(np.float32)
            for i in range(n)
        ]
    return [
        Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 36, 3), dtype=np.uint8)) for i in range(n)
    ]


def batch(proc, n_media: int):
    """Two right-padded rows: prompt, placeholders, prompt, answer; labels on the answer."""
    tok = proc.tokenizer
    ids_a = tok("what is in the", add_special_tokens=False)["input_ids"]
    ids_b = tok("describe", add_special_tokens=False)["input_ids"]
    ans_a = tok("a red cat", add_special_tokens=False)["input_ids"]
    ans_b = tok("a dog barks twice", add_special_tokens=False)["input_ids"]
    bos, media = tok.bos_token_id, proc.media_token_id
    rows, labels = [], []
    for prompt, ans in ((ids_a, ans_a), (ids_b, ans_b)):
        seq = [bos] + [media] * n_media + prompt + ans
        rows.append(seq)
        labels.append([-100] * (len(seq) - len(ans)) + ans)
    width = max(map(len, rows))
    input_ids = torch.full((2, width), tok.pad_token_id)
    lab = torch.full((2, width), -100)
    mask = torch.zeros((2, width), dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels, strict=True)):
        input_ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(lb)] = torch.tensor(lb)
        mask[i, : len(r)] = 1
    return input_ids, mask, lab


@pytest.mark.parametrize("family", list(BUILDERS))
def test_split_forward_matches_hf_forward(loaded, family):
    _, mlm, proc = loaded[family]
    media = proc.process_media(media_items(proc, 2))
    input_ids, mask, labels = batch(proc, proc.num_media_tokens())
    with torch.no_grad():
        ours = mlm(input_ids, mask, labels, media)
        if family == "qwen2_audio":
            feat_mask = torch.ones(media["input_features"].shape[::2], dtype=torch.long)
            hf = mlm.model(
                input_ids=input_ids,
                attention_mask=mask,
                input_features=media["input_features"],
                feature_attention_mask=feat_mask,
            )
        else:
            hf = mlm.model(input_ids=input_ids, attention_mask=mask, **media)
    sel = labels[:, 1:] != -100
    expected = hf.logits[:, :-1][sel]
    assert ours["logits"].shape == expected.shape
    assert ours["logits"].dtype == torch.float32
    torch.testing.assert_close(ours["logits"], expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(ours["targets"], labels[:, 1:][sel])
    # The probe path: cached features give the same logits without re-encoding.
    with torch.no_grad():
        again = mlm(input_ids, mask, labels, media={}, features=ours["features"])
    torch.testing.assert_close(again["logits"], ours["logits"])
    # The media really reach the answer logits (a wrong placeholder id would not).
    with torch.no_grad():
        other = mlm(input_ids, mask, labels, media={}, features=ours["features"].flip(0))
    assert not torch.allclose(other["logits"], ours["logits"])


@pytest.mark.parametrize("family", list(BUILDERS))
def test_gradients_reach_every_side(loaded, family):
    _, mlm, proc = loaded[family]
    media = proc.process_media(media_items(proc, 2))
    input_ids, mask, labels = batch(proc, proc.num_media_tokens())
    mlm.zero_grad()
    out = mlm(input_ids, mask, labels, media)
    torch.nn.functional.cross_entropy(out["logits"], out["targets"]).backward()
    for side, prefs in mlm.prefixes.as_dict().items():
        grads = [
            p.grad
            for n, p in mlm.model.named_parameters()
            if any(n.startswith(q) for q in prefs) and p.requires_grad
        ]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), side
    mlm.zero_grad()


EXPECTED_TOP = {
    # side -> top-level parameter-name roots expected there (transformers 5 layout).
    "llava": {
        "encoder": {"model.vision_tower"},
        "projector": {"model.multi_modal_projector"},
        "llm": {"model.language_model", "lm_head"},
    },
    "blip2": {
        "encoder": {"vision_model", "qformer", "query_tokens"},
        "projector": {"language_projection"},
        "llm": {"language_model"},
    },
    "qwen2_audio": {
        "encoder": {"model.audio_tower"},
        "projector": {"model.multi_modal_projector"},
        "llm": {"model.language_model", "lm_head"},
    },
}


def _root(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "model" else parts[0]


@pytest.mark.parametrize("family", list(BUILDERS))
def test_prefixes_partition_every_parameter(loaded, family):
    _, mlm, _ = loaded[family]
    prefixes = mlm.prefixes.as_dict()
    seen = {side: set() for side in SIDES}
    for name, _ in mlm.model.named_parameters(remove_duplicate=False):
        owners = [
            side
            for side, prefs in prefixes.items()
            if any(name.startswith(p) or name == p.rstrip(".") for p in prefs)
        ]
        assert len(owners) == 1, f"{name} owned by {owners}"
        seen[owners[0]].add(_root(name))
    for side in SIDES:
        assert seen[side], f"{family}: no parameter on the {side} side"
    assert seen == EXPECTED_TOP[family]


@pytest.mark.parametrize("family", list(BUILDERS))
def test_num_media_tokens_matches_encoder(loaded, family):
    path, mlm, proc = loaded[family]
    # verify=False: the processor's own rule, not the load-time measurement, is under test.
    _, raw_proc = load_hf_multimodal(str(path), verify=False)
    media = proc.process_media(media_items(proc, 3))
    with torch.no_grad():
        feats = mlm.encode(media)
    assert feats.shape[0] == 3
    assert feats.shape[1] == raw_proc.num_media_tokens() == proc.num_media_tokens()
    assert feats.shape[2] == mlm.model.config.text_config.hidden_size
    ids = proc.tokenizer(proc.media_token, add_special_tokens=False)["input_ids"]
    assert ids == [mlm.media_token_id]
    # HF's own processor expands to the same count (BLIP-2 prepends its queries itself;
    # Qwen2-Audio counts only real frames, so give it a full-window waveform).
    hf = proc.hf_processor
    if family == "qwen2_audio":
        wave = [np.ones(hf.feature_extractor.n_samples, dtype=np.float32)]
        enc = hf(text=["hi " + proc.media_token], audio=wave, sampling_rate=proc.sampling_rate)
    else:
        text = "hi" if family == "blip2" else "hi " + proc.media_token
        enc = hf(text=[text], images=media_items(proc, 1))
    assert int((np.asarray(enc["input_ids"]) == mlm.media_token_id).sum()) == feats.shape[1]
    # save_pretrained round-trip keeps the count and the placeholder.
    out = path.parent / f"{family}_proc_copy"
    proc.save_pretrained(str(out))
    mlm.save_pretrained(str(out))
    mlm2, proc2 = load_hf_multimodal(str(out), family=family)
    assert proc2.num_media_tokens() == proc.num_media_tokens()
    assert proc2.media_token == proc.media_token
    assert type(mlm2) is type(mlm)


def test_expected_values_and_wrappers(loaded):
    assert isinstance(loaded["llava"][1], LlavaLM)
    assert isinstance(loaded["blip2"][1], Blip2LM)
    assert isinstance(loaded["qwen2_audio"][1], Qwen2AudioLM)
    # 3x3 patches + CLS - CLS (default strategy); 5 queries; 100 frames -> 50 -> 25.
    assert loaded["llava"][2].num_media_tokens() == 9
    assert loaded["blip2"][2].num_media_tokens() == 5
    assert loaded["qwen2_audio"][2].num_media_tokens() == 25
    assert loaded["qwen2_audio"][2].sampling_rate == 16000
    assert loaded["qwen2_audio"][1].modality == "audio"


def test_stale_processor_config_is_corrected_from_the_model(tmp_path, caplog):
    # An older LLaVA processor config without num_additional_image_tokens undercounts by
    # the CLS token; the load-time encoder pass fixes the count and says so.
    save_llava(tmp_path, extra_tokens=0)
    _, stale = load_hf_multimodal(str(tmp_path), verify=False)
    assert stale.num_media_tokens() == 8
    with caplog.at_level("WARNING", logger="commit_train.modeling.hf_adapters"):
        _, fixed = load_hf_multimodal(str(tmp_path))
    assert fixed.num_media_tokens() == 9
    assert "produces 9" in caplog.text


def test_blip2_with_llama_language_model(tmp_path):
    save_blip2(tmp_path, text="llama")
    mlm, proc = load_hf_multimodal(str(tmp_path))
    mlm.eval()
    assert mlm.prefixes.llm == ("language_model.",)
    media = proc.process_media(media_items(proc, 2))
    input_ids, mask, labels = batch(proc, proc.num_media_tokens())
    with torch.no_grad():
        ours = mlm(input_ids, mask, labels, media)["logits"]
        hf = mlm.model(input_ids=input_ids, attention_mask=mask, **media).logits
    torch.testing.assert_close(ours, hf[:, :-1][labels[:, 1:] != -100], rtol=1e-4, atol=1e-5)


def test_unknown_architecture_is_refused(tmp_path):
    LlamaForCausalLM(llama_text()).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError) as err:
        load_hf_multimodal(str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path) in msg
    assert "llava" in msg and "blip2" in msg and "qwen2_audio" in msg
    assert "side_prefixes" in msg


def test_variable_token_family_is_refused_with_reason(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"model_type": "llava_next", "architectures": ["LlavaNextForConditionalGeneration"]}
        )
    )
    with pytest.raises(ModelLoadError, match="anyres"):
        load_hf_multimodal(str(tmp_path))
    assert detect_family({"model_type": "blip-2"}) == "blip2"


@pytest.mark.parametrize("missing", ["does/not/exist/here", "/nonexistent/commit-model"])
def test_missing_path_is_a_model_load_error(tmp_path, missing):
    with pytest.raises(ModelLoadError) as err:
        load_hf_multimodal(missing)
    assert missing in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=str(empty)):
        load_hf_multimodal(str(empty))


def test_uncached_hub_id_offline_is_a_model_load_error(tmp_path):
    # A subprocess, because huggingface_hub reads HF_HUB_OFFLINE once at import.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = (
        "from commit_train.errors import ModelLoadError\n"
        "from commit_train.modeling.hf_adapters import load_hf_multimodal\n"
        "try:\n    load_hf_multimodal('someorg/not-cached-model')\n"
        "except ModelLoadError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    msg = out.stdout.strip()
    assert "someorg/not-cached-model" in msg
    assert "\n" not in msg  # one paragraph for the CLI


def test_incomplete_checkpoints_are_refused(loaded, tmp_path):
    from safetensors.torch import load_file, save_file

    src = loaded["llava"][0]
    # Weights missing (a different layout): must not silently train random weights.
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in src.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = load_file(str(broken / "model.safetensors"))
    dropped = next(k for k in weights if "multi_modal_projector" in k)
    del weights[dropped]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="missing from the checkpoint"):
        load_hf_multimodal(str(broken))
    # Model without processor files.
    bare = tmp_path / "bare"
    loaded["llava"][1].save_pretrained(str(bare))
    with pytest.raises(ModelLoadError, match="processor"):
        load_hf_multimodal(str(bare))
    # Original-repository checkpoint: model_type llava, but no transformers class.
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["LlavaLlamaForCausalLM"]
    orig = tmp_path / "orig"
    orig.mkdir()
    (orig / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="HF-converted"):
        load_hf_multimodal(str(orig))
