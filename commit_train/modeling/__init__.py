"""Model loading for every supported family behind one call.

``load_model(cfg)`` returns a :class:`MultimodalLM` and its :class:`MultimodalProcessor`:
a composite assembled from parts (``model.encoder`` + ``model.llm``), a saved composite
directory, or an HF LLaVA-family / BLIP-2 / Qwen2-Audio model (dir or HF id).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from commit_train.config import ModelConfig
from commit_train.errors import ModelLoadError
from commit_train.fsutil import atomic_dir
from commit_train.modeling.base import MultimodalLM, MultimodalProcessor


def load_model(cfg: ModelConfig, seed: int = 0) -> tuple[MultimodalLM, MultimodalProcessor]:
    from commit_train.modeling import composite

    if cfg.path is None:
        return composite.build_composite(cfg, seed=seed)
    from commit_train.modeling.pretrained import resolve_model_path

    path = resolve_model_path(cfg.path)
    if cfg.family in ("auto", "composite") and composite.is_composite_dir(path):
        mlm, proc = composite.load_composite(path)
        return mlm.to(getattr(torch, cfg.dtype)), proc
    if cfg.family == "composite":
        raise ModelLoadError(
            f"model.path {cfg.path!r} is not a composite model directory (no config.json "
            f"with model_type {composite.MODEL_TYPE!r}); train one with `commit train` first"
        )
    from commit_train.modeling.hf_adapters import load_hf_multimodal

    return load_hf_multimodal(path, family=cfg.family, dtype=getattr(torch, cfg.dtype))


#: the resolved recipe, saved inside an exported model dir (evaluation reads its prompt)
RECIPE_NAME = "commit_recipe.yaml"


def save_model_dir(
    mlm: MultimodalLM,
    processor: MultimodalProcessor,
    path: str | Path,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Export a loadable HF-style directory with LoRA merged, atomically.

    The live model is left untouched (a copy is merged), so training state stays valid.
    ``extra_files`` (name -> text, e.g. the resolved recipe) are written inside it.
    """
    from commit_train.partition import merge_lora

    path = Path(path)
    export = copy.deepcopy(mlm)
    merge_lora(export.model)
    for p in export.parameters():
        p.requires_grad_(False)
    with atomic_dir(path) as tmp:
        export.save_pretrained(str(tmp))
        processor.save_pretrained(str(tmp))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return path
