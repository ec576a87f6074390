"""The whole pipeline once through ``kfp.local.DockerRunner``: every task in the image.

Tiny model and data made on the host under the pipeline root (DockerRunner mounts only the
pipeline root, at the same absolute path), MLflow as a real server on 127.0.0.1 that the
containers reach over the host network. The checks are on what the tasks left behind (each
task's executor_output.json, the artifact files, the MLflow run and registered version),
not on the run status alone: DockerRunner can report a crashed container as success
(kubeflow/pipelines#13332).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from commit_train.local_servers import mlflow_server
from pipelines.platform import RUN_AS_GROUP, RUN_AS_USER
from tests.conftest import make_shape_dataset, make_tiny_llm, make_tiny_vit, tiny_recipe_dict

TASKS = ("stage-data", "train", "check-gate", "register")


def _readable(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)


def test_pipeline_in_docker_runner(image, shared_dir, tmp_path):
    import mlflow

    from pipelines.local import run_local

    root = shared_dir  # the pipeline root, writable by the image's uid
    inputs = root / "inputs"
    parts = {
        "llm": make_tiny_llm(inputs / "llm"),
        "vit": make_tiny_vit(inputs / "vit"),
        "train": make_shape_dataset(inputs / "data", 24, "train", seed=0),
        "val": make_shape_dataset(inputs / "data", 8, "val", seed=1),
    }
    _readable(inputs)
    recipe = tiny_recipe_dict(parts, root / "unused-run-dir", steps=4, eval_every=2, save_every=2)
    recipe.pop("tracking")
    recipe["tracking"] = {"experiment": "docker-ci"}
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    bench = str(parts["val"])
    # The host's pre-flight check creates the checkpoint root (as this process's user); the
    # train task writes into it as uid 10001.
    checkpoints = root / "checkpoints"
    checkpoints.mkdir()
    os.chown(checkpoints, RUN_AS_USER, RUN_AS_GROUP)

    (tmp_path / "mlflow").mkdir()
    with mlflow_server(tmp_path / "mlflow") as (uri, _pid):
        result = run_local(
            recipe=recipe_path,
            benchmarks=[bench],
            model_name="commit-docker-ci",
            gate_metric="eval/val/accuracy",
            gate_threshold=0.0,
            data_source=str(parts["train"]),
            pipeline_root=root,
            checkpoint_root=str(checkpoints),
            tracking_uri=uri,
            runner="docker",
            docker_image=image,
        )
        assert result.status == "SUCCEEDED", result.error
        run_dir = result.run_dir
        assert run_dir is not None and root in run_dir.parents

        # Every task wrote its executor output (a crashed container writes none).
        for task in TASKS:
            assert (run_dir / task / "executor_output.json").is_file(), task
        (ev,) = run_dir.glob("for-loop-*/evaluate")
        assert (ev / "executor_output.json").is_file()

        # The artifacts are real files made in the containers, owned by the image's user.
        staged = json.loads(next(run_dir.glob("stage-data/**/manifest.json")).read_text())
        assert staged["counts"]["train"] > 0
        model_files = {p.name for p in (run_dir / "train").rglob("*") if p.is_file()}
        assert any(n.endswith(".safetensors") for n in model_files), model_files
        (bench_result,) = result.benchmarks
        assert 0.0 <= bench_result.metrics["accuracy"] <= 1.0
        assert bench_result.report is not None and bench_result.report.is_file()

        # The MLflow run the train task made, with the evaluation logged into it.
        client = mlflow.MlflowClient(uri)
        run = client.get_run(result.mlflow_run_id)
        assert run.info.status == "FINISHED"
        assert "eval/val/accuracy" in run.data.metrics
        assert "loss/train" in run.data.metrics
        assert result.gate_passed is True
        version = client.get_model_version("commit-docker-ci", result.version)
        assert version.run_id == result.mlflow_run_id
