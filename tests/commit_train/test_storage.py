"""commit_train/storage.py against a real moto S3 server: round trips, multipart, the
publish protocol, retries through an outage (fault 6b), the errors a user can fix (with no
credential in them); and S3 checkpoints: publish, resume, and a kill during an upload
(fault 6c)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from commit_train import storage
from commit_train.checkpoint_remote import RemoteRun
from commit_train.config import load_config
from commit_train.trainer import train
from tests.commit_train.s3_helpers import FAKE_AWS, free_port
from tests.conftest import tiny_recipe_dict

REPO = Path(__file__).parents[2]
MiB = 1024 * 1024
SECRETS = (FAKE_AWS["AWS_ACCESS_KEY_ID"], FAKE_AWS["AWS_SECRET_ACCESS_KEY"])


def _tree(root: Path) -> Path:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(os.urandom(1000))
    (root / "sub" / "deep" / "c.json").write_text('{"c": 1}')
    return root


# ---- basic operations --------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["local", "s3"])
def test_round_trips(s3, tmp_path, where):
    base = s3.uri("rt") if where == "s3" else str(tmp_path / "store")
    src = _tree(tmp_path / "src")
    storage.write_text(storage.join(base, "note.txt"), "héllo\n")
    assert storage.read_text(storage.join(base, "note.txt")) == "héllo\n"
    storage.upload_file(src / "sub" / "b.bin", storage.join(base, "one", "b.bin"))
    storage.download_file(storage.join(base, "one", "b.bin"), tmp_path / "got.bin")
    assert (tmp_path / "got.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()

    assert storage.upload_dir(src, storage.join(base, "tree")) == [
        "a.txt",
        "sub/b.bin",
        "sub/deep/c.json",
    ]
    assert storage.list_files(storage.join(base, "tree")) == [
        "a.txt",
        "sub/b.bin",
        "sub/deep/c.json",
    ]
    assert storage.list_dirs(base) == ["one", "tree"]
    assert storage.exists(storage.join(base, "tree"))  # a prefix counts
    assert storage.exists(storage.join(base, "tree", "a.txt"))
    assert not storage.exists(storage.join(base, "nothing"))
    out = storage.download_dir(storage.join(base, "tree"), tmp_path / "dl", require_complete=False)
    assert storage.describe_dir(out) == storage.describe_dir(src)
    with pytest.raises(storage.StorageNotFound):
        storage.read_text(storage.join(base, "missing.txt"))
    storage.delete_tree(storage.join(base, "tree"))
    assert storage.list_files(storage.join(base, "tree")) == []


def test_multipart_upload(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("COMMIT_S3_MULTIPART_THRESHOLD", str(5 * MiB))
    monkeypatch.setenv("COMMIT_S3_MULTIPART_CHUNKSIZE", str(5 * MiB))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * MiB))
    storage.upload_file(big, s3.uri("big.bin"))
    etag = s3.server.client().head_object(Bucket=s3.bucket, Key="big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
    storage.download_file(s3.uri("big.bin"), tmp_path / "back.bin")
    assert storage.file_sha256(tmp_path / "back.bin") == storage.file_sha256(big)


# ---- the publish protocol ----------------------------------------------------------------------
def test_publish_is_all_or_nothing_and_idempotent(s3, tmp_path):
    src = _tree(tmp_path / "v1")
    uri = s3.uri("pub")
    storage.publish_dir(src, uri)
    assert storage.is_complete(uri)
    marker_time = s3.server.client().head_object(Bucket=s3.bucket, Key="pub/_COMPLETE")
    storage.publish_dir(src, uri)  # same content: nothing is rewritten
    again = s3.server.client().head_object(Bucket=s3.bucket, Key="pub/_COMPLETE")
    assert again["LastModified"] == marker_time["LastModified"]

    # A new version: stale objects go, the marker describes exactly the new files.
    (src / "a.txt").unlink()
    (src / "new.txt").write_text("new")
    storage.publish_dir(src, uri)
    assert s3.keys("pub/") == [
        "pub/_COMPLETE",
        "pub/new.txt",
        "pub/sub/b.bin",
        "pub/sub/deep/c.json",
    ]
    got = storage.download_dir(uri, tmp_path / "got")
    assert sorted(p.name for p in got.rglob("*") if p.is_file()) == [
        "_COMPLETE",
        "b.bin",
        "c.json",
        "new.txt",
    ]

    # A writer killed before its marker: the files are there, readers refuse them.
    storage.upload_dir(src, s3.uri("half"))
    assert not storage.is_complete(s3.uri("half"))
    with pytest.raises(storage.StorageNotFound, match="no _COMPLETE marker"):
        storage.download_dir(s3.uri("half"), tmp_path / "half")
    assert not (tmp_path / "half").exists()

    # An object changed after publishing is detected, and nothing is left locally.
    s3.server.client().put_object(Bucket=s3.bucket, Key="pub/new.txt", Body=b"tampered")
    with pytest.raises(storage.StorageError, match="does not match the sha256"):
        storage.download_dir(uri, tmp_path / "tampered")
    assert not (tmp_path / "tampered").exists()


# ---- fault 6b: retries through an outage -------------------------------------------------------
def test_upload_survives_an_outage(s3, proxy, tmp_path, monkeypatch):
    """The store drops every open connection and answers 503 for 1.2 s in the middle of a
    multipart upload; botocore's retries with backoff carry the upload through."""
    monkeypatch.setenv("COMMIT_S3_MULTIPART_THRESHOLD", str(5 * MiB))
    monkeypatch.setenv("COMMIT_S3_MULTIPART_CHUNKSIZE", str(5 * MiB))
    monkeypatch.setenv("COMMIT_S3_MAX_CONCURRENCY", "1")
    monkeypatch.setenv("COMMIT_S3_MAX_ATTEMPTS", "15")
    proxy.request_delay = 0.1  # slow enough that the outage lands mid-upload
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(16 * MiB))  # 4 parts
    errors: list[BaseException] = []

    def upload():
        try:
            storage.upload_file(big, s3.uri("outage.bin"))
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    t0 = time.monotonic()
    worker = threading.Thread(target=upload)
    worker.start()
    while proxy.requests < 3 and worker.is_alive():
        time.sleep(0.01)
    assert worker.is_alive(), "upload finished before the outage could start"
    proxy.fail_for(1.2)
    worker.join(timeout=120)
    assert not errors, errors
    assert proxy.failures > 0, "the outage was never seen by the client"
    assert time.monotonic() - t0 > 1.2
    storage.download_file(s3.uri("outage.bin"), tmp_path / "back.bin")
    assert storage.file_sha256(tmp_path / "back.bin") == storage.file_sha256(big)

    # A small write that starts during an outage also goes through once it ends.
    proxy.request_delay = 0.0
    proxy.fail_for(1.0)
    storage.write_text(s3.uri("after.txt"), "ok")
    assert storage.read_text(s3.uri("after.txt")) == "ok"


# ---- errors a user can fix, without credentials in them -----------------------------------------
def _no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_missing_bucket(s3, tmp_path):
    (tmp_path / "f").write_text("x")
    for call in (
        lambda: storage.upload_file(tmp_path / "f", "s3://no-such-bucket-x/k"),
        lambda: storage.read_text("s3://no-such-bucket-x/k"),
        lambda: storage.download_file("s3://no-such-bucket-x/k", tmp_path / "g"),
        lambda: storage.publish_dir(tmp_path, "s3://no-such-bucket-x/d"),
    ):
        with pytest.raises(storage.StorageError, match="bucket 'no-such-bucket-x' does not exist"):
            call()


def test_unreachable_endpoint(s3, monkeypatch):
    endpoint = f"http://user:pw-in-url@127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("COMMIT_S3_MAX_ATTEMPTS", "2")
    with pytest.raises(storage.StorageError) as info:
        storage.write_text(s3.uri("k"), "x")
    msg = str(info.value)
    assert "did not answer" in msg and "AWS_ENDPOINT_URL" in msg
    assert f"http://127.0.0.1:{endpoint.rsplit(':', 1)[1]}" in msg
    assert "pw-in-url" not in msg


def test_missing_credentials(s3, monkeypatch, tmp_path):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(storage.StorageError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        storage.read_text(s3.uri("k"))


def test_rejected_credentials_never_shown(s3, proxy, caplog):
    proxy.canned = (403, "Forbidden", "InvalidAccessKeyId")
    caplog.set_level(logging.DEBUG, logger="commit_train")
    for call in (
        lambda: storage.read_text(s3.uri("k")),
        lambda: storage.write_text(s3.uri("k"), "x"),
    ):
        with pytest.raises(storage.StorageError) as info:
            call()
        assert "rejected the S3 credentials (InvalidAccessKeyId)" in str(info.value)
        _no_secrets(str(info.value) + repr(info.value) + repr(info.value.__cause__))
    proxy.canned = (403, "Forbidden", "AccessDenied")
    with pytest.raises(storage.StorageError, match="access denied"):
        storage.read_text(s3.uri("k"))
    _no_secrets(caplog.text)


# ---- preflight of an s3:// run directory (issue 16.3) ----------------------------------------
def _no_runs(uri: str) -> bool:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tests")
    return exp is None or not client.search_runs([exp.experiment_id])


def _no_aws_credentials(monkeypatch, tmp_path) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_check_writable_leaves_nothing_behind(s3, tmp_path):
    storage.check_writable(s3.uri("runs", "ok"))
    assert s3.keys("runs/") == []
    storage.check_writable(str(tmp_path / "local" / "run"))
    assert list((tmp_path / "local" / "run").iterdir()) == []
    with pytest.raises(storage.StorageError, match="bucket 'no-such-bucket-x' does not exist"):
        storage.check_writable("s3://no-such-bucket-x/run")


@pytest.mark.parametrize("problem", ["no_credentials", "no_bucket"])
def test_s3_output_is_checked_before_any_training(s3, tiny_parts, tmp_path, monkeypatch, problem):
    """Without credentials (or with a missing bucket) training used to run every step and
    fail at the first checkpoint upload, leaving a staging dir and a FAILED MLflow run."""
    raw = tiny_recipe_dict(tiny_parts, tmp_path / "unused", steps=2, save_every=1)
    cfg = load_config_dict(raw, tmp_path)
    uri = s3.uri("runs", "pre") if problem == "no_credentials" else "s3://no-such-bucket-x/r"
    if problem == "no_credentials":
        _no_aws_credentials(monkeypatch, tmp_path)
        expected = "no complete S3 credentials"
    else:
        expected = "bucket 'no-such-bucket-x' does not exist"
    loads = []
    monkeypatch.setattr("commit_train.trainer.load_model", lambda *a, **k: loads.append(a))
    with pytest.raises(storage.StorageError, match=expected):
        train(cfg, output_dir=uri)
    assert loads == []  # failed before the model (and the data) were loaded
    assert not RemoteRun(uri).local_dir.exists()
    assert _no_runs(cfg.tracking.uri)


def test_failed_s3_run_removes_its_staging_dir(s3, tiny_parts, tmp_path, monkeypatch):
    raw = tiny_recipe_dict(tiny_parts, tmp_path / "unused", steps=2, save_every=1, eval_every=0)
    raw["tracking"]["enabled"] = False
    cfg = load_config_dict(raw, tmp_path)
    uri = s3.uri("runs", "fails")

    def fail(self, local_dir):
        assert (local_dir / "checkpoints").is_dir()  # the staging dir was in use
        raise storage.StorageError("injected: the store went away")

    monkeypatch.setattr(RemoteRun, "push_outputs", fail)
    with pytest.raises(storage.StorageError, match="injected"):
        train(cfg, output_dir=uri)
    assert not RemoteRun(uri).local_dir.exists()
    assert RemoteRun(uri).latest() is not None  # what was published stays for --resume


# ---- S3 checkpoints ----------------------------------------------------------------------------
def _steps(s3, run: str) -> dict[str, bool]:
    """step dir -> complete, as a reader of the bucket sees it."""
    prefix = f"{run}/checkpoints/"
    keys = s3.keys(prefix)
    dirs = sorted({k[len(prefix) :].split("/")[0] for k in keys})
    return {d: f"{run}/checkpoints/{d}/_COMPLETE" in keys for d in dirs}


@pytest.mark.slow
def test_checkpoints_on_s3_and_resume(s3, tiny_parts, tmp_path, caplog):
    raw = tiny_recipe_dict(tiny_parts, tmp_path / "unused", steps=6, save_every=2, eval_every=0)
    raw["train"]["keep_checkpoints"] = 2
    raw["tracking"]["enabled"] = False  # MLflow set-up costs seconds and is not tested here
    cfg = load_config_dict(raw, tmp_path)
    uri = s3.uri("runs", "a")
    first = train(cfg, output_dir=uri)
    assert _steps(s3, "runs/a") == {"step-0000004": True, "step-0000006": True}  # pruned to 2
    assert storage.is_complete(storage.join(uri, "model"))
    assert {"runs/a/recipe.yaml", "runs/a/training.png"} <= set(s3.keys("runs/a/"))
    assert first.output_dir == RemoteRun(uri).local_dir

    # Longer run resumed from S3 alone: the local staging copy is gone.
    storage.delete_tree(str(first.output_dir))
    caplog.set_level(logging.INFO, logger="commit_train")
    longer = load_config_dict({**raw, "train": {**raw["train"], "steps": 8}}, tmp_path)
    second = train(longer, output_dir=uri, resume=True)
    assert "resumed from" in caplog.text and "at step 6" in caplog.text
    assert second.steps == 8
    assert _steps(s3, "runs/a") == {"step-0000006": True, "step-0000008": True}


def load_config_dict(raw: dict, tmp_path: Path):
    path = tmp_path / f"recipe-{len(list(tmp_path.glob('recipe-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, [])


@pytest.mark.slow
def test_kill_during_checkpoint_upload_resumes_from_previous(
    s3, proxy, tiny_parts, tmp_path, caplog
):
    """Fault 6c: SIGKILL a real training process while it uploads its last checkpoint (the
    proxy slows each request once the first checkpoint is complete, so the second
    upload takes seconds). The half-uploaded step has no
    marker, so --resume takes the previous complete checkpoint and finishes the run."""
    raw = tiny_recipe_dict(tiny_parts, tmp_path / "unused", steps=6, save_every=3, eval_every=0)
    raw["tracking"]["enabled"] = False
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    uri = s3.uri("runs", "killed")
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    env["COMMIT_S3_MAX_CONCURRENCY"] = "1"  # one object at a time: a wide window to kill in
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "commit_train", "train", str(recipe), "--output-dir", uri]
    log = tmp_path / "killed.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=fh)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            keys = s3.keys("runs/killed/checkpoints/")  # straight from moto, not the proxy
            if "runs/killed/checkpoints/step-0000003/_COMPLETE" in keys:
                proxy.request_delay = 0.3  # from now on each request takes 0.3 s
            if any(k.startswith("runs/killed/checkpoints/step-0000006/") for k in keys):
                break
            time.sleep(0.02)
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert "checkpoint published: " + storage.join(uri, "checkpoints", "step-0000003") in text
    assert "checkpoint published: " + storage.join(uri, "checkpoints", "step-0000006") not in text
    _no_secrets(text)
    seen = _steps(s3, "runs/killed")
    assert seen["step-0000003"] is True
    assert seen["step-0000006"] is False  # objects there, but never visible as a checkpoint
    assert RemoteRun(uri).latest() == storage.join(uri, "checkpoints", "step-0000003")
    assert not s3.keys("runs/killed/model/")

    # Resume in this process (a second interpreter start would only add time).
    proxy.request_delay = 0.0
    caplog.set_level(logging.INFO, logger="commit_train")
    result = train(load_config(recipe, []), output_dir=uri, resume=True)
    assert "at step 3" in caplog.text and result.steps == 6
    assert _steps(s3, "runs/killed") == {"step-0000003": True, "step-0000006": True}
    assert storage.is_complete(storage.join(uri, "model"))
