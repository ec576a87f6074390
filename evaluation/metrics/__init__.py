"""The project's evaluation metrics, as local ``evaluate`` modules that load offline.

Each metric is a folder ``<name>/<name>.py`` holding one ``evaluate.Metric`` subclass, so it
loads with ``evaluate.load(<folder>)`` without the Hugging Face Hub (``evaluate.load("accuracy")``
needs the network and fails on the training machines) and can be logged or shared like any
hub metric. Every module follows the script that produced the published numbers it is
compared with; its docstring names that script.

==================  ===========================================  ===========================
name                used for                                     follows
==================  ===========================================  ===========================
``vqa_accuracy``    TextVQA, A-OKVQA direct answer               VQA ``vqaEval.py`` / mmf
``mc_accuracy``     A-OKVQA multiple choice, IconQA choices      LLaVA-style letter parsing
``exact_match_qa``  ClothoAQA, IconQA fill-in-the-blank          SQuAD ``normalize_answer``
``bleu4``           MACS, Song Describer captions                coco-caption ``Bleu``
``rouge_l``         MACS, Song Describer captions                coco-caption ``Rouge``
``cider``           MACS, Song Describer captions                coco-caption ``Cider`` (-D)
==================  ===========================================  ===========================

Not provided: METEOR (coco-caption runs the Java ``meteor-1.5.jar`` with its paraphrase
tables; NLTK's re-implementation needs WordNet data and gives different numbers) and
SPICE/SPIDEr (SPIDEr is the mean of SPICE and CIDEr, and SPICE is a Java program that
parses captions into scene graphs with Stanford CoreNLP). Neither can run offline here, and
a look-alike would produce numbers that cannot be compared with the papers.

Use :func:`compute` rather than the module directly: it checks the inputs first and raises
:class:`MetricInputError`, a :class:`~commit_train.errors.CommitError`, with a message that
says what is wrong.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import evaluate

from commit_train.errors import CommitError

METRIC_DIR = Path(__file__).resolve().parent


class MetricInputError(CommitError, ValueError):
    """Unknown metric name, or predictions/references that cannot be scored together."""


def known_metrics() -> list[str]:
    """Names of the metric modules shipped in :data:`METRIC_DIR` (folders ``name/name.py``)."""
    return sorted(
        path.name
        for path in METRIC_DIR.iterdir()
        if path.is_dir() and (path / f"{path.name}.py").is_file()
    )


def metric_path(name: str) -> Path:
    """Folder of metric ``name``; :class:`MetricInputError` listing the known ones if none."""
    known = known_metrics()
    if name not in known:
        raise MetricInputError(f"unknown metric {name!r}; known metrics: {', '.join(known)}")
    return METRIC_DIR / name


@functools.cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """``evaluate.load`` of the local module, once per process (loading copies and imports it).

    ``keep_in_memory=True`` keeps the batch in RAM instead of Arrow files under
    ``~/.cache/huggingface/metrics``, which concurrent evaluations would otherwise share.
    """
    return evaluate.load(str(metric_path(name)), keep_in_memory=True)


def _check_inputs(name: str, predictions, references, kwargs: dict[str, Any]) -> None:
    if predictions is None or references is None:
        raise MetricInputError(f"{name}: both predictions and references are required")
    if isinstance(predictions, str) or isinstance(references, str):
        raise MetricInputError(
            f"{name}: predictions and references must be lists (one entry per example), "
            "not a single string"
        )
    if len(predictions) != len(references):
        raise MetricInputError(
            f"{name}: got {len(predictions)} predictions but {len(references)} references; "
            "they must pair up one to one"
        )
    if len(predictions) == 0:
        raise MetricInputError(
            f"{name}: no examples to score (predictions and references are empty)"
        )
    choices = kwargs.get("choices")
    if choices is not None and len(choices) != len(predictions):
        raise MetricInputError(
            f"{name}: got {len(predictions)} predictions but {len(choices)} choice lists; "
            "they must pair up one to one"
        )


def compute(name: str, *, predictions, references, **kwargs) -> dict[str, Any]:
    """Score ``predictions`` against ``references`` with metric ``name``.

    Extra keyword arguments go to the module (``mode``, ``choices``, ``tokenizer``,
    ``return_per_example``; see each module's docstring). Input problems found here or by
    the module (a reference missing from its choices, a question with a single VQA answer)
    are raised as :class:`MetricInputError`.
    """
    metric = load_metric(name)
    _check_inputs(name, predictions, references, kwargs)
    try:
        return metric.compute(predictions=list(predictions), references=list(references), **kwargs)
    except ValueError as error:
        raise MetricInputError(f"{name}: {error}") from error
