"""``train``: recipe + overrides + method + staged dataset -> a tuned model, resumable."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from pipelines.platform import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def train(
    recipe: str,
    overrides: list,
    method: str,
    dataset: Input[Dataset],
    checkpoint_root: str,
    pipeline_run_id: str,
    task_name: str,
    model: Output[Model],
    metrics: Output[Metrics],
) -> NamedTuple("TrainOutputs", [("mlflow_run_id", str)]):
    """Tune with :func:`commit_train.pipeline_steps.train_step`: checkpoints go to
    ``<checkpoint_root>/<pipeline run>/<task>``, so a retried task resumes from the newest
    one instead of starting over; the MLflow run is found again by its pipeline tags."""
    from collections import namedtuple

    from commit_train.pipeline_steps import train_step

    out = train_step(
        recipe, overrides, method, dataset.path, checkpoint_root, pipeline_run_id, task_name,
        model_dir=model.path,
    )  # fmt: skip
    model.metadata.update(out.model_metadata)
    for name, value in out.metrics.items():
        metrics.log_metric(name, value)
    return namedtuple("TrainOutputs", ["mlflow_run_id"])(out.run_id)
