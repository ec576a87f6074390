"""Real local servers as subprocesses: an ``mlflow server`` and a ``moto_server`` S3 endpoint.

The integration tests, the MLflow-overhead benchmark and local runs against a tracking
server all need the same thing: start the real program on a free loopback port, wait until
it answers, and stop it (with its worker processes) afterwards. Mocks would hide what these
users care about (HTTP retries, the artifact proxy, a server that goes away), so this module
only starts and stops the programs the way a deployment runs them.

Each server leads its own process group (``start_new_session``): MLflow 3.x's server forks
gunicorn/uvicorn workers and job consumers, and :func:`kill_group` stops them all.
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
from collections.abc import Iterator, Mapping
from pathlib import Path

#: the console scripts of the environment this interpreter runs in (``mlflow``, ``moto_server``)
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
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


def kill_group(proc: subprocess.Popen) -> None:
    """Stop a server started here (it leads its own process group: workers go with it)."""
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


def _spawn(cmd: list[str], env: Mapping[str, str] | None, log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own session, appending its output to ``log``."""
    with log.open("a") as fh:
        return subprocess.Popen(
            cmd,
            env=None if env is None else dict(env),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_mlflow_server(
    *,
    port: int,
    backend_db: Path,
    artifacts_destination: str,
    log: Path,
    env_extra: Mapping[str, str] | None = None,
    timeout_s: float = 90.0,
) -> subprocess.Popen:
    """Start ``mlflow server`` (sqlite store, proxied artifacts) and wait for ``/health``.

    ``artifacts_destination`` is a local directory or an ``s3://bucket/prefix`` (with
    ``MLFLOW_S3_ENDPOINT_URL`` and credentials in ``env_extra``: the server proxies
    artifacts, so its clients never need S3 credentials). ``MLFLOW_TRACKING_URI`` is dropped
    from the server's environment: the server must not log to another server.
    """
    env = dict(os.environ, **(env_extra or {}))
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{backend_db}",
        "--artifacts-destination",
        artifacts_destination,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = _spawn(cmd, env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout_s, log)
    except BaseException:
        kill_group(proc)
        raise
    return proc


@contextlib.contextmanager
def mlflow_server(workdir: Path, timeout_s: float = 90.0) -> Iterator[tuple[str, int]]:
    """A throwaway ``mlflow server`` with its store and artifacts under ``workdir``.

    Yields ``(tracking URI, server pid)``; the server and its workers stop on exit.
    """
    port = free_port()
    proc = start_mlflow_server(
        port=port,
        backend_db=workdir / "mlflow.db",
        artifacts_destination=str(workdir / "artifacts"),
        log=workdir / "server.log",
        timeout_s=timeout_s,
    )
    try:
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        kill_group(proc)


def start_moto_server(
    port: int,
    log: Path,
    env_extra: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> subprocess.Popen:
    """Start ``moto_server`` (an in-memory S3 endpoint) on ``port`` and wait until it answers.

    ``env_extra`` configures moto itself, e.g. ``INITIAL_NO_AUTH_ACTION_COUNT=0`` to make it
    check access keys the way a real S3 does.
    """
    env = dict(os.environ, **env_extra) if env_extra else None
    proc = _spawn([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", proc, timeout_s, log)
    except BaseException:
        kill_group(proc)
        raise
    return proc
