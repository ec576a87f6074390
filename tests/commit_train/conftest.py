"""Fixtures for the storage, staging and S3-checkpoint tests (tests/commit_train/s3_helpers.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from tests.commit_train.s3_helpers import FAKE_AWS, FaultProxy, MotoServer


@dataclass
class S3Env:
    """A fresh bucket on the session's moto server, with the environment pointing at it."""

    server: MotoServer
    bucket: str

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def keys(self, prefix: str = "") -> list[str]:
        return self.server.keys(self.bucket, prefix)


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(moto, monkeypatch, tmp_path) -> S3Env:
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    monkeypatch.setenv("COMMIT_CACHE", str(tmp_path / "cache"))
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    moto.client().create_bucket(Bucket=bucket)
    return S3Env(moto, bucket)


@pytest.fixture
def proxy(s3, monkeypatch) -> FaultProxy:
    """A fault-injecting proxy in front of moto; the environment's endpoint is the proxy."""
    p = FaultProxy(s3.server.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", p.endpoint)
    try:
        yield p
    finally:
        p.close()
