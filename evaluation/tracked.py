"""Evaluation with its MLflow bookkeeping: the one call `commit evaluate` and the pipeline's
evaluate step both make.

:func:`evaluation.runner.evaluate_model` scores a model; around it, a caller has to pick
the system prompt the model was trained with, open an MLflow run (a new one, or the
training run's, so a model's scores sit next to its training curves) and close it with
the right status. Doing that in one place keeps the CLI and the KFP component from
drifting apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from commit_train.config import TrackingConfig
from commit_train.errors import CommitError
from commit_train.registry import is_registry_uri, trained_system_prompt
from commit_train.tracking import RunTracker
from evaluation.runner import EvalResult, evaluate_model, prepare_benchmark


def evaluate_tracked(
    model: str | Path,
    benchmark: str,
    *,
    split: str = "test",
    output_dir: str | Path | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 16,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    run_id: str | None = None,
    experiment: str = "evaluation",
    tracking: bool = True,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``model`` on ``benchmark`` and log ``eval/<benchmark>/<metric>`` to MLflow.

    With ``run_id`` the metrics and the report go into that run (e.g. the training run);
    its params get benchmark-scoped names (``eval.<benchmark>.split``) and its tags are
    left alone, so several benchmarks can be logged into one run, even in parallel.
    Without it a new run is created in ``experiment``. ``tracking=False`` logs nothing.
    """
    if batch_size < 1 or max_new_tokens < 1 or (limit is not None and limit < 1):
        raise CommitError(
            f"batch size ({batch_size}), max new tokens ({max_new_tokens}) and limit "
            f"({limit}) must be positive"
        )
    # every record checked before the MLflow run opens: bad input leaves no empty FAILED run
    data = prepare_benchmark(benchmark, split, data_dir=data_dir, limit=limit)
    system_prompt = None
    if not is_registry_uri(model):  # evaluate with the prompt the model was trained with
        system_prompt = trained_system_prompt(Path(model))
    if run_id:
        scope = benchmark.replace("/", "_")
        params: dict[str, Any] = {f"eval.{scope}.model": str(model), f"eval.{scope}.split": split}
        tags: dict[str, Any] = {}
    else:
        params = {"eval.model": str(model), "eval.benchmark": benchmark, "eval.split": split}
        tags = {"stage": "evaluate", "benchmark": benchmark}
    tracker = RunTracker(
        TrackingConfig(uri=tracking_uri, experiment=experiment, log_model=False),
        params=params,
        tags=tags,
        run_id=run_id or None,
        enabled=tracking,
    )
    with tracker:
        return evaluate_model(
            model,
            benchmark,
            split=split,
            output_dir=output_dir,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            limit=limit,
            data_dir=data_dir,
            system_prompt=system_prompt,
            tracking=tracker if tracking else None,
            progress=progress,
            data=data,
        )
