"""Shared fixtures: tiny models built from configs and saved through the real
``save_pretrained`` path, plus a small real-content image dataset, so the trainer tests
exercise exactly the code real checkpoints go through — in seconds, with no hub."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 20),
}
SHAPES = ("square", "circle")


def make_tokenizer(extra_words: list[str] | None = None):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = [
        "what",
        "colour",
        "is",
        "the",
        "shape",
        "in",
        "this",
        "image",
        "which",
        "one",
        "is",
        "it",
        "a",
        "square",
        "circle",
        "red",
        "green",
        "blue",
        "yellow",
        "yes",
        "no",
        "answer",
        "question",
    ] + list(extra_words or [])
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=200,
        special_tokens=[
            "<pad>",
            "<unk>",
            "<bos>",
            "<eos>",
            "<|user|>",
            "<|assistant|>",
            "<|system|>",
        ],
    )
    tok.train_from_iterator([" ".join(words)] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_llm(path: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_tiny_vit(path: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    cfg = ViTConfig(
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(1)
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def make_shape_dataset(root: Path, n: int, split: str, seed: int) -> Path:
    """Coloured squares/circles: 'what colour is the shape' -> colour name."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    names = list(COLOURS)
    for i in range(n):
        colour = names[int(rng.integers(len(names)))]
        shape = SHAPES[int(rng.integers(2))]
        img = Image.new("RGB", (32, 32), (255, 255, 255))
        d = ImageDraw.Draw(img)
        x, y = (int(v) for v in rng.integers(2, 14, size=2))
        box = (x, y, x + 16, y + 16)
        (d.rectangle if shape == "square" else d.ellipse)(box, fill=COLOURS[colour])
        rel = f"images/{split}-{i:04d}.png"
        img.save(root / rel)
        lines.append(
            json.dumps(
                {
                    "id": f"{split}-{i}",
                    "modality": "image",
                    "media": rel,
                    "question": "what colour is the shape",
                    "answers": [colour],
                    "split": split,
                }
            )
        )
    out = root / f"{split}.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("tiny_parts")
    data = base / "data"
    return {
        "llm": make_tiny_llm(base / "llm"),
        "vit": make_tiny_vit(base / "vit"),
        "train": make_shape_dataset(data, 48, "train", seed=0),
        "val": make_shape_dataset(data, 16, "val", seed=1),
    }


def tiny_recipe_dict(parts: dict[str, Path], out_dir: Path, **train) -> dict:
    recipe = {
        "method": "constant",
        "seed": 0,
        "model": {
            "modality": "image",
            "encoder": {"type": "hf", "path": str(parts["vit"])},
            "llm": str(parts["llm"]),
            "projector": {"type": "mlp", "num_layers": 2},
            "tuning": {"encoder": "full", "projector": "full", "llm": "lora"},
            "lora": {
                "r": 4,
                "alpha": 8,
                "dropout": 0.1,
                "target_modules": {"llm": ["q_proj", "v_proj"]},
            },
        },
        "data": {"train": str(parts["train"]), "val": str(parts["val"]), "max_length": 64},
        "train": {
            "steps": 6,
            "batch_size": 4,
            "lr_encoder": 1e-3,
            "lr_llm": 3e-3,
            "warmup_steps": 2,
            "eval_every": 3,
            "save_every": 3,
            "output_dir": str(out_dir),
            **train,
        },
        "tracking": {"uri": f"sqlite:///{out_dir.parent / 'mlflow.db'}", "experiment": "tests"},
    }
    return recipe


@pytest.fixture
def tiny_recipe(tiny_parts, tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(tiny_parts, tmp_path / "run")))
    return path
