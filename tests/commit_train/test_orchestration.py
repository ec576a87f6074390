"""MLflow runs under a workflow engine: one run per pipeline step across retries, the
exit handler's FAILED/KILLED marking, and the registration gate."""

from __future__ import annotations

import pytest

from commit_train.errors import CommitError
from commit_train.orchestration import (
    TAG_FAILURE,
    TAG_PIPELINE_RUN,
    TAG_PIPELINE_STEP,
    check_gate,
    close_pipeline_runs,
    step_run,
)


@pytest.fixture
def uri(tmp_path, monkeypatch) -> str:
    u = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", u)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    return u


def _client(uri):
    import mlflow

    return mlflow.MlflowClient(uri)


def test_step_run_is_found_again_on_retry(uri):
    first = step_run("pr-1", "train", "exp")
    assert step_run("pr-1", "train", "exp") == first  # the retry
    assert step_run("pr-2", "train", "exp") != first  # another pipeline run
    tags = _client(uri).get_run(first).data.tags
    assert tags[TAG_PIPELINE_RUN] == "pr-1" and tags[TAG_PIPELINE_STEP] == "train"


def test_step_run_honours_injected_run_and_experiment(uri, monkeypatch):
    client = _client(uri)
    exp = client.create_experiment("kfp-made")
    made = client.create_run(exp).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", made)
    assert step_run("pr-1", "train", "ignored") == made
    assert client.get_run(made).data.tags[TAG_PIPELINE_RUN] == "pr-1"
    monkeypatch.delenv("MLFLOW_RUN_ID")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", exp)
    assert client.get_run(step_run("pr-2", "train", "ignored")).info.experiment_id == exp
    assert client.get_experiment_by_name("ignored") is None


def test_step_run_in_deleted_experiment_is_an_error(uri):
    client = _client(uri)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(CommitError, match="experiment 'gone' is deleted"):
        step_run("pr-1", "train", "gone")


def test_failed_pipeline_marks_its_runs_failed(uri):
    client = _client(uri)
    mine = step_run("pr-1", "train", "exp")
    other = step_run("pr-2", "train", "exp")
    closed = close_pipeline_runs(
        "pr-1", "FAILED", "train: exit code 137 reaching http://admin:s3cr3t@minio:9000"
    )
    assert closed == [mine]
    run = client.get_run(mine)
    assert run.info.status == "FAILED"
    assert "exit code 137" in run.data.tags[TAG_FAILURE]
    assert "s3cr3t" not in run.data.tags[TAG_FAILURE]  # the reason is redacted
    assert client.get_run(other).info.status == "RUNNING"  # another pipeline's run


def test_cancelled_pipeline_marks_killed_and_success_leaves_runs(uri):
    client = _client(uri)
    run = step_run("pr-1", "train", "exp")
    assert close_pipeline_runs("pr-1", "SUCCEEDED") == []
    assert client.get_run(run).info.status == "RUNNING"
    assert close_pipeline_runs("pr-1", "CANCELED") == [run]
    assert client.get_run(run).info.status == "KILLED"


def test_gate(uri):
    client = _client(uri)
    run = step_run("pr-1", "train", "exp")
    client.log_metric(run, "eval/vision/accuracy", 0.6)
    assert check_gate(run, "eval/vision/accuracy", 0.5).passed
    assert not check_gate(run, "eval/vision/accuracy", 0.7).passed
    assert check_gate(run, "eval/vision/accuracy", 0.7, higher_is_better=False).passed
    assert "needs >= 0.7000" in check_gate(run, "eval/vision/accuracy", 0.7).describe()
    with pytest.raises(CommitError, match=r"'eval/vision/acc' is not in .*eval/vision/accuracy"):
        check_gate(run, "eval/vision/acc", 0.5)  # a typo is an error, not "too weak"
