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

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
BUCKET = "commit-artifacts"
#: fake credentials moto accepts; the tests check they never leak into MLflow or logs
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it dies or hangs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up after {timeout_s}s:\n{log.read_text()[-3000:]}")


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a server we started (it leads its own process group: workers go with it)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


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
        env = dict(os.environ, MLFLOW_S3_ENDPOINT_URL=self.s3.endpoint, **FAKE_AWS)
        env.pop("MLFLOW_TRACKING_URI", None)
        cmd = [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.db}",
            "--artifacts-destination",
            f"s3://{self.s3.bucket}/mlartifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with self.log.open("a") as fh:
            fh.write(f"\n=== start {self.starts} ===\n")
            fh.flush()
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1
        _wait_http(f"{self.uri}/health", self.proc, timeout_s, self.log)

    def stop(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)
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
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = S3Server(endpoint=f"http://127.0.0.1:{port}", bucket=BUCKET, proc=proc)
    try:
        _wait_http(f"{server.endpoint}/moto-api/", proc, 30, log)
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        _kill_group(proc)


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
