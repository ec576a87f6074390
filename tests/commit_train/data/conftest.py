"""Shared fixtures: a tiny tokenizer/processor pair trained in-test, and media writers.

Training a byte-level BPE on a few sentences takes milliseconds and exercises the same
code paths (special tokens, chat templates, eos/pad handling) as a real LLM tokenizer,
without any download.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from commit_train.modeling.base import MultimodalProcessor

try:  # transformers 5 names the torchvision-free variant explicitly
    from transformers import ViTImageProcessorPil as ViTImageProcessor
except ImportError:  # pragma: no cover - older transformers
    from transformers import ViTImageProcessor

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "USER: What kind of clothing item is this? ASSISTANT: sneaker",
    "What number is spoken? seven eight nine zero one two three",
    "Is this a bag? yes no. Which of these items is shown in the image?",
    "A. coat B. dress C. shirt D. sandal ankle boot trousers pullover",
]


def make_tokenizer(chat: bool, pad: bool = True) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<s>", "</s>", "<image>", "<audio>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 5, trainer)
    kwargs = {"pad_token": "<pad>"} if pad else {}
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<image>", "<audio>", "<|im_start|>", "<|im_end|>"],
        **kwargs,
    )
    if chat:
        out.chat_template = CHATML
    return out


class TinyImageProcessor(MultimodalProcessor):
    """4 placeholder tokens per image, 16x16 pixels through a real HF image processor."""

    modality = "image"

    def __init__(self, tokenizer, n_tokens: int = 4):
        super().__init__(tokenizer, "<image>")
        self.n_tokens = n_tokens
        self.image_processor = ViTImageProcessor(size={"height": 16, "width": 16})

    def num_media_tokens(self) -> int:
        return self.n_tokens

    def process_media(self, items):
        return {"pixel_values": self.image_processor(items, return_tensors="pt")["pixel_values"]}


class TinyAudioProcessor(MultimodalProcessor):
    """Waveforms zero-padded to the longest; 3 placeholder tokens per clip."""

    modality = "audio"
    sampling_rate = 16_000

    def __init__(self, tokenizer):
        super().__init__(tokenizer, "<audio>")

    def num_media_tokens(self) -> int:
        return 3

    def process_media(self, items):
        width = max(len(w) for w in items)
        out = torch.zeros(len(items), width)
        for i, w in enumerate(items):
            out[i, : len(w)] = torch.from_numpy(w)
        return {"input_features": out}


@pytest.fixture(scope="session")
def chat_tokenizer():
    return make_tokenizer(chat=True)


@pytest.fixture(scope="session")
def plain_tokenizer():
    return make_tokenizer(chat=False)


def write_png(path: Path, size=(8, 8), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_tone(path: Path, rate: int = 16_000, seconds: float = 0.25, freq: float = 440.0,
               channels: int = 1) -> Path:  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    sf.write(path, data, rate)
    return path
