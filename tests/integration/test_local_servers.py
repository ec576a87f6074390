"""commit_train.local_servers: what the benchmarks and fixtures rely on to start and stop
a real ``mlflow server`` without leaving its worker processes behind."""

from __future__ import annotations

import socket
import urllib.request

import psutil
import pytest

from commit_train.local_servers import kill_group, mlflow_server, start_mlflow_server


def test_mlflow_server_context_stops_every_worker(tmp_path):
    with mlflow_server(tmp_path) as (uri, pid):
        with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
            assert r.status == 200
        family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        assert len(family) > 1  # gunicorn/uvicorn workers: the reason for a process group
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"left running: {[p.pid for p in alive]}"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{uri}/health", timeout=2)


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path):
    with socket.socket() as taken:  # the port is in use: the server exits at start-up
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            proc = start_mlflow_server(
                port=port,
                backend_db=tmp_path / "mlflow.db",
                artifacts_destination=str(tmp_path / "a"),
                log=tmp_path / "server.log",
                timeout_s=60,
            )
        except RuntimeError as err:
            assert "server exited" in str(err)
            assert str(port) in str(err)  # the error carries the server's own log
        else:
            kill_group(proc)
            pytest.fail("start_mlflow_server returned on a port that was taken")
