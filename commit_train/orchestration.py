"""MLflow runs when a workflow engine (Kubeflow Pipelines) drives the steps.

A pipeline step can be retried (a new pod, the same inputs), killed, or run next to
others; the training run in MLflow must still be one run per pipeline run, and it must
not stay RUNNING forever when a later step fails. The pipeline components call these
functions (the library itself knows nothing about kfp):

* :func:`step_run`: the run a step logs into. ``MLFLOW_RUN_ID`` from the environment
  when the orchestrator made one (KFP 2.17's MLflow integration injects it); else the
  run tagged with this pipeline run and step, so a retried step finds the run its first
  attempt created; else a new run, in ``MLFLOW_EXPERIMENT_ID`` if set, else the recipe's
  experiment. The run is tagged :data:`TAG_PIPELINE_RUN` / :data:`TAG_PIPELINE_STEP`.
* :func:`close_pipeline_runs`: the exit handler's call. It finds every run tagged with
  the pipeline run and, unless the pipeline succeeded, marks it FAILED (KILLED when it
  was cancelled) with the reason as a tag.
* :func:`check_gate`: does the run's gate metric reach the minimum for registration?
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from commit_train.errors import CommitError
from commit_train.redaction import redact_text

log = logging.getLogger(__name__)

#: tag naming the KFP run (``dsl.PIPELINE_JOB_ID_PLACEHOLDER``) a run belongs to
TAG_PIPELINE_RUN = "kfp.run_id"
#: tag naming the pipeline task that created the run
TAG_PIPELINE_STEP = "kfp.task"
#: tag set by :func:`close_pipeline_runs` on a failed pipeline's runs
TAG_FAILURE = "kfp.failure"


def _client(tracking_uri: str | None) -> tuple[Any, str]:
    from commit_train.registry import connect

    return connect(tracking_uri)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _experiment_id(client: Any, name: str) -> str:
    env = os.environ.get("MLFLOW_EXPERIMENT_ID", "").strip()
    if env:
        return env
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage != "active":
            raise CommitError(f"MLflow experiment {name!r} is deleted; restore it or rename it")
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # created by a parallel step in between
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def step_run(
    pipeline_run_id: str,
    step: str,
    experiment: str,
    run_name: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """The MLflow run id step ``step`` of pipeline run ``pipeline_run_id`` logs into
    (see the module docstring); creates the run when no earlier attempt did."""
    from commit_train.registry import tracking_error

    client, shown = _client(tracking_uri)
    tags = {TAG_PIPELINE_RUN: pipeline_run_id, TAG_PIPELINE_STEP: step}
    try:
        injected = os.environ.get("MLFLOW_RUN_ID", "").strip()
        if injected:
            for k, v in tags.items():
                client.set_tag(injected, k, v)
            return injected
        exp_id = _experiment_id(client, experiment)
        found = client.search_runs(
            [exp_id],
            filter_string=f"tags.`{TAG_PIPELINE_RUN}` = '{_quote(pipeline_run_id)}' and "
            f"tags.`{TAG_PIPELINE_STEP}` = '{_quote(step)}'",
            max_results=1,
        )
        if found:
            log.info("pipeline %s step %s: reusing MLflow run %s", pipeline_run_id, step, found[0])
            return found[0].info.run_id
        run = client.create_run(exp_id, run_name=run_name, tags=tags)
        return run.info.run_id
    except CommitError:
        raise
    except Exception as e:
        raise tracking_error(e, shown, f"opening the MLflow run of step {step}") from None


def close_pipeline_runs(
    pipeline_run_id: str, state: str, error: str = "", tracking_uri: str | None = None
) -> list[str]:
    """Mark the runs of a pipeline run that did not succeed FAILED (``CANCELED`` ->
    KILLED); returns their ids. A succeeded pipeline's runs are left as they are."""
    from mlflow.entities import ViewType

    if state.upper() == "SUCCEEDED":
        return []
    client, _ = _client(tracking_uri)
    status = "KILLED" if state.upper().startswith("CANCEL") else "FAILED"
    exp_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not exp_ids:
        return []
    runs = client.search_runs(
        exp_ids, filter_string=f"tags.`{TAG_PIPELINE_RUN}` = '{_quote(pipeline_run_id)}'"
    )
    reason = redact_text(f"pipeline {state}: {error}".strip().rstrip(":"))[:4000]
    closed = []
    for run in runs:
        client.set_tag(run.info.run_id, TAG_FAILURE, reason)
        client.set_terminated(run.info.run_id, status=status)
        closed.append(run.info.run_id)
        log.info("MLflow run %s marked %s (%s)", run.info.run_id, status, reason)
    return closed


@dataclass
class Gate:
    passed: bool
    metric: str
    value: float
    threshold: float
    higher_is_better: bool

    def describe(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        verdict = "passed" if self.passed else "failed"
        return f"gate {verdict}: {self.metric} = {self.value:.4f} (needs {op} {self.threshold:.4f})"


def check_gate(
    run_id: str,
    metric: str,
    threshold: float,
    higher_is_better: bool = True,
    tracking_uri: str | None = None,
) -> Gate:
    """Compare run ``run_id``'s ``metric`` with ``threshold``. A metric the run never
    logged is an error (a typo in the gate must not read as "model too weak")."""
    client, shown = _client(tracking_uri)
    run = client.get_run(run_id)
    if metric not in run.data.metrics:
        evals = sorted(k for k in run.data.metrics if k.startswith("eval/"))
        raise CommitError(
            f"gate metric {metric!r} is not in MLflow run {run_id} at {shown}; its eval/ "
            f"metrics: {', '.join(evals) or '(none)'}"
        )
    value = float(run.data.metrics[metric])
    passed = value >= threshold if higher_is_better else value <= threshold
    return Gate(passed, metric, value, float(threshold), higher_is_better)
