"""``evaluate``: one benchmark per task -> metrics, a Markdown report, MLflow metrics."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Markdown, Metrics, Model, Output

from pipelines.platform import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def evaluate(
    model: Input[Model],
    benchmark: str,
    metrics: Output[Metrics],
    report: Output[Markdown],
    split: str = "test",
    limit: int = 0,
    batch_size: int = 16,
    max_new_tokens: int = 16,
    data_dir: str = "",
) -> NamedTuple("EvalOutputs", [("accuracy", float), ("n", int)]):
    """Score the model with :func:`evaluation.tracked.evaluate_tracked`: answers,
    ``eval/<benchmark>/<metric>`` logged into the training run (the model artifact's
    ``mlflow_run_id`` metadata; none: a new run), the report as a KFP Markdown artifact.

    The run id travels on the model, not as a parameter: kfp.local 2.17.3 resolves an
    upstream task's output parameter inside ``dsl.ParallelFor`` to the loop item."""
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from evaluation.tracked import evaluate_tracked

    mlflow_run_id = model.metadata.get("mlflow_run_id", "")
    out = Path(report.path).parent / "results"
    result = evaluate_tracked(
        model.path, benchmark, split=split, output_dir=out, batch_size=batch_size,
        max_new_tokens=max_new_tokens, limit=limit or None, data_dir=data_dir or None,
        run_id=mlflow_run_id or None, tracking=bool(mlflow_run_id), progress=False,
    )  # fmt: skip
    shutil.copyfile(out / "report.md", report.path)
    for name, value in result.metrics.items():
        metrics.log_metric(f"{result.benchmark}/{name}", value)
    metrics.metadata["results_dir"] = str(out)
    accuracy = result.metrics.get("accuracy", float("nan"))
    return namedtuple("EvalOutputs", ["accuracy", "n"])(accuracy, result.n)
