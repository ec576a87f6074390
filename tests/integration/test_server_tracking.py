"""Training against a real MLflow server whose artifacts land in (moto) S3.

What a user of the tracking server sees is what is checked: every METHOD.md §7 metric a
``commit`` run logs, at the right steps, read back over HTTP; the model directory, the
plot and the recipe as objects in the bucket; ``system/*`` metrics when asked for; and a
server that goes away in the middle of a run (fault 6a) costing nothing but a delay.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import tiny_recipe_dict
from tests.integration.conftest import commit_cli, popen_cli

#: logged at every optimizer step by a ``commit`` run with balance.probe_every=1
PER_STEP = (
    "loss/train",
    "loss/ce",
    "loss/aux",
    "lr/encoder",
    "lr/llm",
    "grad_norm/encoder",
    "grad_norm/llm",
    "throughput/samples_per_s",
    "throughput/tokens_per_s",
    "time/probe_fraction",
    "balance/kl_encoder",
    "balance/kl_llm",
    "balance/kl_joint",
    "balance/probes_skipped",
    "balance/lr_ratio",
)
#: logged at probes whose κ was defined (not skipped)
PER_PROBE = ("balance/kappa", "balance/share_encoder")


def _recipe(tiny_parts, tmp: Path, experiment: str, **train) -> Path:
    recipe = tiny_recipe_dict(tiny_parts, tmp / "run", **train)
    recipe["tracking"] = {"experiment": experiment, "flush_every_s": 0.5}  # URI from the env
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _only_run(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_commit_run_logs_every_metric_and_artifacts_to_server_and_s3(
    tiny_parts, tmp_path, mlflow_server, s3_server
):
    recipe = _recipe(tiny_parts, tmp_path, "server-tracking")
    res = commit_cli(
        "train",
        str(recipe),
        "method=commit",
        "balance.probe_every=1",
        "balance.update_every=3",
        "tracking.system_metrics=true",
        env_extra={
            "MLFLOW_TRACKING_URI": mlflow_server.uri,
            "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1",
        },
    )
    assert res.returncode == 0, res.stderr[-3000:]
    client = MlflowClient(mlflow_server.uri)
    run = _only_run(client, "server-tracking")
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"

    steps = list(range(1, 7))
    for name in PER_STEP:
        got = [m.step for m in client.get_metric_history(run_id, name)]
        assert got == steps, (name, got)
    skipped = int(run.data.metrics["balance/probes_skipped"])
    for name in PER_PROBE:
        got = [m.step for m in client.get_metric_history(run_id, name)]
        assert len(got) == 6 - skipped and set(got) <= set(steps) and got, (name, got)
    kappa_avg = [m.step for m in client.get_metric_history(run_id, "balance/kappa_avg")]
    assert kappa_avg and set(kappa_avg) <= set(steps)
    assert [m.step for m in client.get_metric_history(run_id, "loss/val")] == [3, 6]

    # system metrics: MLflow's collector names under system/, at least the closing sample
    system = sorted(k for k in run.data.metrics if k.startswith("system/"))
    assert "system/cpu_utilization_percentage" in system, system
    assert "system/system_memory_usage_megabytes" in system, system

    # tags for comparing runs
    tags = run.data.tags
    assert tags["method"] == "commit" and tags["benchmark"] == "data"
    assert len(tags["recipe_hash"]) == 64 and len(tags["data_manifest_hash"]) == 64
    assert len(tags.get("git_commit", "x" * 40)) == 40

    # artifacts: listed by the server, and really in the bucket under the run's prefix
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"model", "training.png", "recipe.yaml"} <= top
    model_files = {Path(a.path).name for a in client.list_artifacts(run_id, "model")}
    assert {"model.safetensors", "commit_recipe.yaml"} <= model_files
    keys = s3_server.keys(f"mlartifacts/{run.info.experiment_id}/{run_id}/artifacts/")
    names = {k.split("/artifacts/", 1)[1] for k in keys}
    assert {"training.png", "recipe.yaml", "model/model.safetensors"} <= names, names
    assert "model/commit_recipe.yaml" in names
    png = next(k for k in keys if k.endswith("/artifacts/training.png"))
    body = s3_server.client().get_object(Bucket=s3_server.bucket, Key=png)
    assert body["Body"].read(8) == b"\x89PNG\r\n\x1a\n"


def _wait_for_steps(client: MlflowClient, experiment: str, n: int, proc, timeout_s=120) -> str:
    """Run id of the experiment's run once ``loss/train`` reached ``n`` steps on the server."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "training ended before the outage could start"
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and len(client.get_metric_history(runs[0].info.run_id, "loss/train")) >= n:
            return runs[0].info.run_id
        time.sleep(0.2)
    raise AssertionError("training did not reach the server in time")


@pytest.mark.slow
def test_server_outage_mid_run_loses_no_metric(tiny_parts, tmp_path, mlflow_server):
    """Fault 6a: the server is stopped for a while mid-run, then restarted on its port."""
    steps = 1000  # 10-30 s of tiny-model training: the outage falls inside the loop
    recipe = _recipe(tiny_parts, tmp_path, "server-outage", steps=steps, eval_every=0, save_every=0)
    log = tmp_path / "train.log"
    proc = popen_cli(
        "train", str(recipe), env_extra={"MLFLOW_TRACKING_URI": mlflow_server.uri}, log=log
    )
    client = MlflowClient(mlflow_server.uri)
    try:
        run_id = _wait_for_steps(client, "server-outage", 2, proc)
        # the window opens before stop(): stopping the server (its workers) can take
        # seconds, and a quiet machine trains ~100 tiny steps a second meanwhile
        down_at, down_at_ms = time.monotonic(), time.time() * 1000
        mlflow_server.stop()
        time.sleep(4)
        assert proc.poll() is None, "training ended during the outage: make the run longer"
        mlflow_server.start()
        outage_s, up_at_ms = time.monotonic() - down_at, time.time() * 1000
        assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    # the outage was really seen by the client (MLflow's HTTP retries, then the tracker's)
    assert "Connection refused" in text or "MLflow flush failed" in text
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    per_step = ("loss/train", "loss/ce", "lr/encoder", "lr/llm", "grad_norm/encoder")
    for name in per_step:
        got = [m.step for m in client.get_metric_history(run_id, name)]
        assert got == list(range(1, steps + 1)), (name, len(got), outage_s)
    # the steps trained while the server was down are there with their own timestamps
    hist = client.get_metric_history(run_id, "loss/train")
    during = [m for m in hist if down_at_ms <= m.timestamp <= up_at_ms]
    assert during, "no step was logged while the server was down: make the run longer"
    assert {"model", "training.png", "recipe.yaml"} <= {
        a.path for a in client.list_artifacts(run_id)
    }
