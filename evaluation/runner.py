"""Batched evaluation: generate answers for a benchmark split, score them, write reports.

``evaluate_model(...)`` is the one library call that the CLI (`commit evaluate`) and the KFP
evaluate component wrap: a model directory in, a results directory (predictions, metrics,
report) and MLflow metrics ``eval/<benchmark>/<metric>`` out.

Batching is what makes evaluation affordable on a CPU: prompts are left-padded and decoded
together with a KV cache, so a batch of 16 costs little more than one example.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from commit_train.config import ModelConfig
from commit_train.data.collate import Collator, RecordDataset
from commit_train.data.records import Record, validate_records
from commit_train.errors import DataError
from commit_train.modeling import load_model
from commit_train.modeling.base import MultimodalLM, MultimodalProcessor
from commit_train.registry import is_registry_uri, resolve_model_uri, trained_system_prompt
from evaluation.benchmarks import BenchmarkData, load_benchmark
from evaluation.report import write_outputs
from evaluation.scoring import extract_answer, score

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    benchmark: str
    split: str
    metrics: dict[str, float]
    by_qtype: dict[str, dict[str, float]]
    n: int
    output_dir: Path
    samples_per_s: float
    predictions: list[str] = field(default_factory=list, repr=False)


def _eos_ids(tokenizer: Any) -> list[int]:
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def _prompt_chars(record: Record) -> int:
    """Cheap proxy for a prompt's token count: its question and choices in characters."""
    return len(record.question) + sum(len(c) + 4 for c in record.choices or ())


@torch.no_grad()
def generate_answers(
    mlm: MultimodalLM,
    processor: MultimodalProcessor,
    records: list[Record],
    root: Path,
    batch_size: int = 16,
    max_new_tokens: int = 16,
    max_length: int = 256,
    system_prompt: str | None = None,
    progress: bool = True,
) -> list[str]:
    """Greedy answers for ``records`` in order (raw decoded text, special tokens removed)."""
    mlm.eval()
    collator = Collator(processor, max_length, system_prompt, prompt_only=True)
    dataset = RecordDataset(records, root, processor.sampling_rate)
    tok = processor.tokenizer
    eos = _eos_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    device = next(mlm.parameters()).device
    out: list[str] = [""] * len(records)
    # Batch prompts of similar length together (answers go back in the original order):
    # every row of a batch is left-padded to its longest prompt, and on a CPU the padded
    # positions cost as much as real ones.
    order = sorted(range(len(records)), key=lambda i: _prompt_chars(records[i]))
    bar = tqdm(total=len(records), desc="evaluate", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(records), batch_size):
        idx = order[start : start + batch_size]
        items = [dataset[i] for i in idx]
        batch = collator(items)
        new = mlm.generate(
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            {k: v.to(device) for k, v in batch["media"].items()},
            max_new_tokens=max_new_tokens,
            eos_token_ids=eos,
            pad_token_id=pad,
        )
        for i, text in zip(idx, tok.batch_decode(new, skip_special_tokens=True), strict=True):
            out[i] = text
        bar.update(len(items))
    bar.close()
    return out


def prepare_benchmark(
    benchmark: str,
    split: str = "test",
    data_dir: str | Path | None = None,
    limit: int | None = None,
) -> BenchmarkData:
    """The benchmark's records (first ``limit``), every one validated as training does:
    fields, one modality for all (the model has one encoder; before, only the first record
    was looked at and a record of the other modality crashed after the model was loaded),
    media inside the dataset root and readable. Call it before starting an MLflow run or
    loading a model, so bad input fails at once and leaves nothing behind."""
    data: BenchmarkData = load_benchmark(benchmark, split, data_dir=data_dir)
    records = data.records[:limit] if limit else data.records
    if not records:
        raise DataError(f"benchmark {benchmark!r} split {split!r} has no records to evaluate")
    # Format loaders' records have not been through read_records.
    records, _ = validate_records(
        records,
        data.root,
        f"{data.name}:{split}",
        modality=records[0].modality,
        hint="Fix these records (evaluation scores every one), or stage the dataset with "
        "`commit stage`, which drops bad records and lists them in its manifest.",
    )
    data.records = records
    return data


def evaluate_model(
    model: str | Path,
    benchmark: str,
    split: str = "test",
    output_dir: str | Path | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 16,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    system_prompt: str | None = None,
    tracking: Any = None,
    progress: bool = True,
    data: BenchmarkData | None = None,
) -> EvalResult:
    """Evaluate a saved model directory on a benchmark split.

    ``benchmark`` is a built-in name, a real dataset's format name (with ``data_dir``), or a
    path to a canonical JSONL file. ``model`` may also be a registry URI
    (``models:/<name>@champion``), downloaded first by :func:`resolve_model_uri`.
    ``tracking`` is an open ``RunTracker`` (or None). ``data``: the records already
    validated by :func:`prepare_benchmark` (a caller that opens an MLflow run first does
    that before opening it), else they are validated here.
    """
    if is_registry_uri(model):  # models:/name@champion -> a cached local copy
        model = resolve_model_uri(model)
        system_prompt = system_prompt if system_prompt is not None else trained_system_prompt(model)
    if data is None:
        data = prepare_benchmark(benchmark, split, data_dir=data_dir, limit=limit)
    records = data.records
    cfg = ModelConfig(path=str(model), modality=records[0].modality)
    mlm, processor = load_model(cfg)
    if processor.modality != records[0].modality:
        raise DataError(
            f"model {model} takes {processor.modality} input but benchmark {benchmark!r} is "
            f"{records[0].modality}"
        )
    t0 = time.perf_counter()
    raw = generate_answers(
        mlm,
        processor,
        records,
        data.root,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        system_prompt=system_prompt,
        progress=progress,
    )
    elapsed = time.perf_counter() - t0
    preds = [extract_answer(r) for r in raw]
    metrics, by_qtype, per_example = score(records, preds, kind=data.kind)
    metrics["samples_per_s"] = len(records) / max(elapsed, 1e-9)
    out_dir = Path(output_dir or Path("runs") / "eval" / f"{data.name}-{split}")
    write_outputs(
        out_dir,
        data.name,
        split,
        records,
        raw,
        preds,
        per_example,
        metrics,
        by_qtype,
        chance=data.chance,
        model=str(model),
    )
    if tracking is not None:
        flat = {f"eval/{data.name}/{k}": v for k, v in metrics.items()}
        for qt, m in by_qtype.items():
            flat.update({f"eval/{data.name}/{qt}/{k}": v for k, v in m.items() if k != "n"})
        tracking.log_metrics(flat, step=0)
        tracking.log_artifacts(out_dir, f"eval/{data.name}")
    log.info(
        "%s/%s: %s", data.name, split, json.dumps({k: round(v, 4) for k, v in metrics.items()})
    )
    return EvalResult(
        benchmark=data.name,
        split=split,
        metrics=metrics,
        by_qtype=by_qtype,
        n=len(records),
        output_dir=out_dir,
        samples_per_s=metrics["samples_per_s"],
        predictions=preds,
    )
