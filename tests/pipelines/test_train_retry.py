"""A retried train task resumes from its own checkpoint instead of starting over.

The first attempt is the train component's library call in a child process, killed with
SIGKILL (what a preempted pod gets) once its first checkpoint is complete; the retry is
the same call with the same pipeline run id and task name, as KFP makes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import tiny_recipe_dict

pytestmark = pytest.mark.slow

ATTEMPT = """
import sys
from commit_train.pipeline_steps import train_step
recipe, data, ckpt, out = sys.argv[1:5]
train_step(open(recipe).read(), [], "", data, ckpt, "run-42", "train", out)
"""


def _wait_for_checkpoint(proc: subprocess.Popen, task_dir, deadline_s: float = 120.0):
    from commit_train.checkpoint import latest_checkpoint

    t_end = time.monotonic() + deadline_s
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            pytest.fail(f"first attempt ended (rc {proc.returncode}) before it could be killed")
        if task_dir.is_dir() and latest_checkpoint(task_dir) is not None:
            return latest_checkpoint(task_dir)
        time.sleep(0.05)
    pytest.fail(f"no checkpoint under {task_dir} after {deadline_s:.0f}s")


def test_killed_train_task_resumes_on_retry(tiny_parts, tmp_path, monkeypatch):
    import mlflow

    from commit_train.orchestration import TAG_PIPELINE_RUN
    from commit_train.pipeline_steps import resume_step, train_step

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    recipe = tiny_recipe_dict(tiny_parts, tmp_path / "unused", steps=40, save_every=2,
                              eval_every=40, warmup_steps=2)  # fmt: skip
    recipe["tracking"] = {"experiment": "retry"}
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    data_dir = str(tiny_parts["train"].parent)  # train.jsonl + val.jsonl: a staged dataset
    ckpt_root = tmp_path / "checkpoints"
    task_dir = ckpt_root / "run-42" / "train"

    proc = subprocess.Popen(
        [sys.executable, "-c", ATTEMPT, str(recipe_path), data_dir, str(ckpt_root),
         str(tmp_path / "model-1")],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        first = _wait_for_checkpoint(proc, task_dir)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    killed_at = int(first.name.split("-")[1])
    assert killed_at < 40

    # The retry: a shorter run would be a new recipe, so the same recipe, same ids.
    out = train_step(recipe_path.read_text(), [], "", data_dir, str(ckpt_root), "run-42",
                     "train", tmp_path / "model-2")  # fmt: skip
    assert out.resumed_from_step >= killed_at > 0
    assert out.metrics["steps"] == 40
    assert any(p.suffix == ".safetensors" for p in out.model_dir.rglob("*"))
    # keyed by pipeline run and task: another run's train task starts fresh
    assert resume_step(str(ckpt_root / "run-43" / "train")) == 0

    # One MLflow run for the pipeline run and task: the retry found the first attempt's.
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("retry")
    runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_PIPELINE_RUN}` = 'run-42'")
    assert [r.info.run_id for r in runs] == [out.run_id]
    steps = [m.step for m in client.get_metric_history(out.run_id, "loss/train")]
    assert max(steps) == 40
