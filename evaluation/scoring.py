"""From generated text to scores: answer extraction and per-record metric choice.

A record's own shape says how it is scored, so one benchmark may mix question types:
records with ``choices`` use multiple-choice accuracy, records with 10 annotator answers
(VQA-style: TextVQA, A-OKVQA direct answer) the official VQA accuracy, and the rest exact
match against any accepted answer. Captioning benchmarks use corpus-level BLEU-4, ROUGE-L
and CIDEr-D. All metric code lives in the local ``evaluate`` modules of
:mod:`evaluation.metrics`.
"""

from __future__ import annotations

import re
from collections import defaultdict

from commit_train.data.records import Record
from commit_train.errors import DataError
from evaluation.metrics import load_metric

VQA_MIN_ANSWERS = 10
_PREFIX = re.compile(r"^(?:the\s+)?answer\s*(?:is)?\s*[:\-]?\s*", re.IGNORECASE)


def extract_answer(text: str) -> str:
    """First non-empty line, without an "Answer:" prefix, quotes or a final period."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = _PREFIX.sub("", line).strip().strip("\"'`").strip()
    return line[:-1].strip() if line.endswith(".") else line


def metric_of(record: Record) -> str:
    if record.choices:
        return "mc_accuracy"
    if len(record.answers) >= VQA_MIN_ANSWERS:
        return "vqa_accuracy"
    return "exact_match"


def _qtype(record: Record) -> str:
    return str(record.meta.get("qtype", "all")) if record.meta else "all"


def per_example_scores(records: list[Record], predictions: list[str]) -> list[float]:
    """One score in [0, 1] per record, each from its own metric."""
    if len(records) != len(predictions):
        raise DataError(
            f"{len(predictions)} predictions for {len(records)} references: they must match"
        )
    scores = [0.0] * len(records)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[metric_of(r)].append(i)
    for name, idx in groups.items():
        preds = [predictions[i] for i in idx]
        if name == "mc_accuracy":
            res = load_metric("mc_accuracy").compute(
                predictions=preds,
                references=[records[i].answers[0] for i in idx],
                choices=[records[i].choices for i in idx],
                return_per_example=True,
            )
        elif name == "vqa_accuracy":
            res = load_metric("vqa_accuracy").compute(
                predictions=preds,
                references=[records[i].answers for i in idx],
                return_per_example=True,
            )
        else:
            res = load_metric("exact_match_qa").compute(
                predictions=preds,
                references=[records[i].answers for i in idx],
                return_per_example=True,
            )
        for i, s in zip(idx, res["per_example"], strict=True):
            scores[i] = float(s)
    return scores


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def score(
    records: list[Record], predictions: list[str], kind: str = "qa"
) -> tuple[dict[str, float], dict[str, dict[str, float]], list[float]]:
    """``(overall metrics, metrics per question type, per-example scores)``."""
    if not records:
        raise DataError("nothing to score: the split is empty")
    if kind == "caption":
        refs = [r.answers for r in records]
        metrics: dict[str, float] = {}
        for name in ("bleu4", "rouge_l", "cider"):
            res = load_metric(name).compute(predictions=predictions, references=refs)
            metrics[name] = float(res[name])
        return metrics, {}, [float("nan")] * len(records)
    per = per_example_scores(records, predictions)
    metrics = {"accuracy": _mean(per)}
    by_metric: dict[str, list[float]] = defaultdict(list)
    by_qtype: dict[str, list[float]] = defaultdict(list)
    for r, s in zip(records, per, strict=True):
        by_metric[metric_of(r)].append(s)
        by_qtype[_qtype(r)].append(s)
    if len(by_metric) > 1:
        metrics.update({k: _mean(v) for k, v in by_metric.items()})
    breakdown = {qt: {"accuracy": _mean(v), "n": float(len(v))} for qt, v in by_qtype.items()}
    return metrics, breakdown, per
