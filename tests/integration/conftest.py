"""Real servers for the integration tests: a moto S3 server and an MLflow tracking server.

Mocking ``MlflowClient`` would hide exactly what these tests are about (HTTP retries,
the artifact proxy writing to S3, a server that goes away), so the fixtures start the
real programs on free loopback ports, the way a deployment runs them:

* ``moto_server`` stands in for S3 (ENVIRONMENT.md, "MLflow 3.17"); a bucket is created.
* ``mlflow server --backend-store-uri sqlite:///... --artifacts-destination s3://bucket``
  proxies artifacts to that bucket, so clients never need S3 credentials themselves.

Both are session-scoped (the MLflow server takes ~5 s to come up) and each is stopped by
the fixture that started it, by its own process group. :meth:`MlflowServer.stop` and
:meth:`MlflowServer.start` let a test take the tracking server away mid-run and bring it
back on the same port with the same database (fault 6a).
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from commit_train.local_servers import (
    free_port,
    kill_group,
    start_mlflow_server,
    start_moto_server,
)

REPO = Path(__file__).parents[2]
BUCKET = "commit-artifacts"
#: fake credentials moto accepts; the tests check they never leak into MLflow or logs
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    proc: subprocess.Popen

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
            region_name=FAKE_AWS["AWS_DEFAULT_REGION"],
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in the bucket (paginated)."""
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@dataclass
class MlflowServer:
    """A real ``mlflow server`` that a test can stop and start again on the same port."""

    port: int
    db: Path
    s3: S3Server
    log: Path
    proc: subprocess.Popen | None = None
    starts: int = field(default=0)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        with self.log.open("a") as fh:
            fh.write(f"\n=== start {self.starts} ===\n")
        self.proc = start_mlflow_server(
            port=self.port,
            backend_db=self.db,
            artifacts_destination=f"s3://{self.s3.bucket}/mlartifacts",
            log=self.log,
            env_extra={"MLFLOW_S3_ENDPOINT_URL": self.s3.endpoint, **FAKE_AWS},
            timeout_s=timeout_s,
        )
        self.starts += 1

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
            self.proc = None

    def is_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    port = free_port()
    proc = start_moto_server(port, tmp_path_factory.mktemp("moto") / "moto.log")
    server = S3Server(endpoint=f"http://127.0.0.1:{port}", bucket=BUCKET, proc=proc)
    try:
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        kill_group(proc)


@pytest.fixture(scope="session")
def mlflow_server(s3_server, tmp_path_factory) -> MlflowServer:
    d = tmp_path_factory.mktemp("mlflow_server")
    server = MlflowServer(port=free_port(), db=d / "mlflow.db", s3=s3_server, log=d / "server.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_env(mlflow_server, monkeypatch) -> dict[str, str]:
    """Environment for a client of the server: the URI only, no S3 credentials needed."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    return {"MLFLOW_TRACKING_URI": mlflow_server.uri}


def commit_cli(
    *args: str, env_extra: dict[str, str] | None = None, timeout: float = 300, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """Run ``python -m commit_train ...`` as a user would, one intra-op thread."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    for k in ("MLFLOW_TRACKING_URI", *FAKE_AWS):
        env.pop(k, None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "commit_train", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )


def popen_cli(*args: str, env_extra: dict[str, str], log: Path, cwd: Path = REPO):
    """Like :func:`commit_cli` but in the background (the caller waits and reads ``log``)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    for k in ("MLFLOW_TRACKING_URI", *FAKE_AWS):
        env.pop(k, None)
    env.update(env_extra)
    fh = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "commit_train", *args],
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
    )
    fh.close()
    return proc
