"""Opt-in end-to-end run on a real kind/minikube cluster (never in CI: no cluster there).

Runs only when COMMIT_K8S_E2E=1 and the current kubeconfig context is a kind-* or minikube
cluster (it installs things):

    COMMIT_K8S_E2E=1 .venv/bin/pytest -q tests/k8s/test_e2e_cluster.py

It brings the stack up with k8s/kind/up.sh (or minikube/up.sh), checks `commit k8s doctor`,
submits the compiled pipeline on the built-in benchmark through a port-forward to the KFP API,
waits for it, and checks the MLflow run, the registered model and its champion alias through
a port-forward to MLflow.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from commit_train.orchestration import TAG_PIPELINE_RUN
from pipelines import platform

ROOT = Path(__file__).resolve().parents[2]
MODEL = "commit-vision"


def _context() -> str | None:
    try:
        out = subprocess.run(
            ["kubectl", "config", "current-context"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


CONTEXT = _context() if os.environ.get("COMMIT_K8S_E2E") == "1" else None
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (
            CONTEXT
            and (
                CONTEXT.startswith("kind-")
                or CONTEXT == "minikube"
                or os.environ.get("MINIKUBE_PROFILE", "commit-mlops") == CONTEXT
            )
        ),
        reason="opt-in: set COMMIT_K8S_E2E=1 with a kind-*/minikube kubeconfig context",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_forward(ns: str, svc: str, remote: int):
    port = _free_port()
    proc = subprocess.Popen(
        ["kubectl", "port-forward", "-n", ns, f"svc/{svc}", f"{port}:{remote}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"port-forward to {ns}/{svc} did not open within 30 s")


def test_stack_up_pipeline_run_registers_a_champion():
    up = ROOT / "k8s" / ("kind" if CONTEXT.startswith("kind-") else "minikube") / "up.sh"
    env = dict(os.environ)
    if CONTEXT.startswith("kind-"):
        env["CLUSTER_NAME"] = CONTEXT.removeprefix("kind-")
    subprocess.run(["bash", str(up)], check=True, timeout=3000, env=env)
    subprocess.run([str(ROOT / ".venv/bin/commit"), "k8s", "doctor"], check=True, timeout=180)

    import kfp
    import mlflow

    kfp_proc, kfp_url = _port_forward(platform.KFP_NAMESPACE, "ml-pipeline", 8888)
    mlflow_proc, mlflow_url = _port_forward(platform.STACK_NAMESPACE, "mlflow", 5000)
    try:
        client = kfp.Client(host=kfp_url)
        run = client.create_run_from_pipeline_package(
            str(ROOT / "pipelines/compiled/commit_pipeline.yaml"),
            arguments={},
            experiment_name="commit-e2e",
            enable_caching=False,
        )
        deadline = time.monotonic() + 3600
        state = None
        while time.monotonic() < deadline:
            state = client.get_run(run.run_id).state
            if state in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
                break
            time.sleep(15)
        assert state == "SUCCEEDED", f"run {run.run_id} ended {state}"

        mlflow.set_tracking_uri(mlflow_url)
        mc = mlflow.MlflowClient()
        runs = mlflow.search_runs(
            search_all_experiments=True,
            output_format="list",
            filter_string=f"tags.`{TAG_PIPELINE_RUN}` = '{run.run_id}'",
        )
        assert runs, f"no MLflow run tagged with KFP run {run.run_id}"
        champion = mc.get_model_version_by_alias(MODEL, "champion")
        assert champion.version
    finally:
        kfp_proc.kill()
        mlflow_proc.kill()
