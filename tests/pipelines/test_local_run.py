"""The whole DAG with ``kfp.local.SubprocessRunner`` on tiny data: what
``commit pipeline run --local`` does, checked on what the tasks left behind.

Each task is a process of this venv, MLflow a sqlite file in the test's folder. One
passing run (registered, champion) and one whose gate fails (register skipped); both
assert on the task outputs, the MLflow run and the registry, not only the status.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_recipe_dict

pytestmark = pytest.mark.slow


@pytest.fixture
def local_run(tiny_parts, tmp_path):
    """Run the pipeline locally on the tiny model; returns ``(result, tracking uri)``."""
    from pipelines.local import run_local

    recipe = tiny_recipe_dict(tiny_parts, tmp_path / "unused", steps=4, eval_every=2,
                              save_every=2)  # fmt: skip
    recipe["tracking"] = {"experiment": "local-dag"}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def run(**kwargs):
        args = {
            "recipe": path,
            "benchmarks": [str(tiny_parts["val"])],
            "model_name": "commit-local-dag",
            "gate_metric": "eval/val/accuracy",
            "data_source": str(tiny_parts["train"]),
            "pipeline_root": tmp_path / "root",
            "tracking_uri": uri,
        }
        result = run_local(**{**args, **kwargs})
        return result, uri

    return run


def test_local_dag_registers_a_champion(local_run):
    import mlflow

    from pipelines.local import summary

    result, uri = local_run(gate_threshold=0.0)
    assert result.status == "SUCCEEDED", result.error
    run_dir = result.run_dir
    for task in ("stage-data", "train", "check-gate", "register"):
        assert (run_dir / task / "executor_output.json").is_file(), task
    staged = json.loads(next(run_dir.glob("stage-data/**/manifest.json")).read_text())
    assert staged["counts"]["train"] > 0
    assert any(p.suffix == ".safetensors" for p in (run_dir / "train").rglob("*"))
    assert result.train_metrics["steps"] == 4
    assert result.train_metrics["resumed_from_step"] == 0  # a first attempt starts fresh

    (bench,) = result.benchmarks
    assert bench.benchmark == "val"
    assert 0.0 <= bench.metrics["accuracy"] <= 1.0
    assert bench.report is not None and bench.report.is_file()

    client = mlflow.MlflowClient(uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["eval/val/accuracy"] == pytest.approx(bench.metrics["accuracy"])
    assert "loss/train" in run.data.metrics and "kappa" not in run.data.params
    assert result.gate_passed is True
    assert (result.version, result.alias) == ("1", "champion")
    assert (
        client.get_model_version_by_alias("commit-local-dag", "champion").run_id == run.info.run_id
    )
    assert result.closed_runs == 0  # the exit handler ran and closed nothing

    text = summary(result)
    assert "pipeline SUCCEEDED" in text and "trained 4 steps" in text
    assert "registered: commit-local-dag version 1, alias champion" in text
    assert str(bench.report) in text


def test_failing_gate_skips_register(local_run):
    import mlflow

    result, uri = local_run(gate_threshold=1.1)  # no accuracy reaches 1.1
    assert result.status == "SUCCEEDED", result.error
    assert result.gate_passed is False
    assert result.gate_value is not None and result.gate_value < 1.1
    assert not list(result.run_dir.glob("**/register/executor_output.json"))
    assert result.version is None and result.alias is None
    client = mlflow.MlflowClient(uri)
    assert client.search_registered_models("name = 'commit-local-dag'") == []
    assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"


def test_bad_input_fails_before_any_task(local_run, tmp_path):
    from commit_train.errors import CommitError

    with pytest.raises(CommitError, match="gate metric 'eval/other/accuracy'"):
        local_run(gate_metric="eval/other/accuracy")
    # nothing ran: kfp.local made no run folder
    assert not list((tmp_path / "root").glob("*commit*"))


def test_missing_recipe_file_named(tmp_path):
    from commit_train.errors import CommitError
    from pipelines.local import run_local

    missing = tmp_path / "nope.yaml"
    with pytest.raises(CommitError, match=str(missing)):
        run_local(recipe=missing, pipeline_root=tmp_path)


def test_plan_runs_one_model_per_modality():
    from pipelines.local import BUILTIN_RECIPES, plan_runs

    plan = plan_runs(["vision", "builtin:audio"], None)
    assert plan == [(None, ["vision"]), (None, ["audio"])]
    assert plan_runs(["vision", "audio"], "r.yaml") == [(Path("r.yaml"), ["vision", "audio"])]
    assert set(BUILTIN_RECIPES) == {"vision", "audio"}


def test_main_job_uses_native_bf16_for_more_steps(monkeypatch):
    import torch

    from pipelines import local

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(local, "native_bf16", lambda: True)
    assert local.main_job_overrides("vision") == [
        "train.steps=300", "train.eval_every=100", "train.save_every=100", "train.precision=bf16",
    ]  # fmt: skip
    monkeypatch.setattr(local, "native_bf16", lambda: False)  # emulated bf16 is slower: fp32
    assert local.main_job_overrides("vision") == [
        "train.steps=150", "train.eval_every=50", "train.save_every=50",
    ]  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the recipe's auto: bf16
    assert local.main_job_overrides("vision")[0] == "train.steps=300"
    assert not any("precision" in o for o in local.main_job_overrides("vision"))
