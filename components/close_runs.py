"""``close_runs``: the pipeline's exit handler; a failed pipeline's MLflow runs end FAILED."""

from kfp import dsl

from pipelines.platform import component_image


@dsl.component(base_image=component_image(), install_kfp_package=False)
def close_runs(pipeline_run_id: str, status: dsl.PipelineTaskFinalStatus) -> int:
    """Mark the MLflow runs tagged with this pipeline run FAILED unless the pipeline
    succeeded (:func:`commit_train.orchestration.close_pipeline_runs`); returns how many."""
    from commit_train.orchestration import close_pipeline_runs

    error = status.error_message or ""
    closed = close_pipeline_runs(pipeline_run_id, status.state, error)
    print(f"pipeline {status.state}: {len(closed)} MLflow run(s) marked failed {closed}")
    return len(closed)
