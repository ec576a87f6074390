"""Local paths and ``s3://bucket/key`` URIs behind one small API.

Data, checkpoints and models live on local disk on a laptop and on S3-compatible storage
(MinIO, AWS) in a cluster (ARCHITECTURE.md, "Runs and storage"); every caller goes through
these functions so the same code serves both. The S3 client is configured only from the
environment, the way a Kubernetes Secret delivers it:

* endpoint: ``AWS_ENDPOINT_URL``, else ``MLFLOW_S3_ENDPOINT_URL`` (the variable MLflow
  already needs), else AWS itself; path-style addressing when an endpoint is given,
  because MinIO and most in-cluster stores do not serve virtual-host buckets;
* credentials: boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
  ``AWS_PROFILE``, instance roles); never passed as arguments, never written anywhere;
* retries: botocore's ``standard`` mode (``COMMIT_S3_RETRY_MODE=adaptive`` to also
  rate-limit the client), ``COMMIT_S3_MAX_ATTEMPTS`` attempts (default 10) with jittered
  exponential backoff, so a store that restarts or answers 5xx for a few seconds costs
  time, not the run;
* multipart: files above ``COMMIT_S3_MULTIPART_THRESHOLD`` bytes (default 64 MiB) go up in
  parallel parts of ``COMMIT_S3_MULTIPART_CHUNKSIZE`` (S3 needs parts >= 5 MiB).

**Publish protocol.** S3 has no rename, so a directory cannot appear atomically. Instead a
published directory is complete exactly when its ``_COMPLETE`` marker object exists, and
readers require it (:func:`download_dir`, :func:`is_complete`). :func:`publish_dir`
deletes an existing marker first (the old version stops being visible), uploads every
file, removes stale objects, and writes the marker last. The marker lists every file with
its size and sha256; readers download exactly those files and verify them, so objects a
killed writer left behind are never read, and a second writer racing the reader is
detected (the marker is re-read after the download). Local directories get the same
marker, and are additionally replaced in one rename (:func:`commit_train.fsutil.atomic_dir`).

Errors a user can fix (no or wrong credentials, a missing bucket, an unreachable endpoint)
raise :class:`StorageError` saying what to set or fix. Messages name the endpoint (with
any ``user:password@`` removed), bucket and key, never a credential.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from commit_train.fsutil import atomic_dir
from commit_train.s3_client import (  # noqa: F401 (re-exported: callers use storage.*)
    S3_SCHEME,
    S3Settings,
    StorageError,
    StorageNotFound,
    _client_error_code,
    _errors,
    _MiB,
    client,
    endpoint_url,
    is_s3,
    split_s3,
)

log = logging.getLogger(__name__)

#: name of the object/file whose presence makes a published directory visible
MARKER = "_COMPLETE"
MARKER_VERSION = 1


# ---- URIs ---------------------------------------------------------------------------------
def join(uri: str | os.PathLike, *parts: str) -> str:
    """Join path parts onto a local path or an S3 URI (always ``/`` inside S3)."""
    if is_s3(uri):
        base = str(uri).rstrip("/")
        return "/".join([base, *(p.strip("/") for p in parts if p)])
    return str(Path(uri).joinpath(*parts))


def _prefix(key: str) -> str:
    return f"{key}/" if key else ""


# ---- single objects --------------------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * _MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def exists(uri: str | os.PathLike) -> bool:
    """Whether a file/object, or a directory/prefix holding at least one object, exists."""
    if not is_s3(uri):
        return Path(uri).exists()
    bucket, key = split_s3(uri)
    with _errors("check", uri):
        if not key:  # the bucket itself
            try:
                client().head_bucket(Bucket=bucket)
                return True
            except Exception as e:
                found = _client_error_code(e)
                if not found or found[1] != 404:
                    raise
                return False
        try:
            client().head_object(Bucket=bucket, Key=key)
            return True
        except Exception as e:
            found = _client_error_code(e)
            if not found or found[1] != 404:
                raise
        page = client().list_objects_v2(Bucket=bucket, Prefix=_prefix(key), MaxKeys=1)
        return bool(page.get("KeyCount"))


def read_text(uri: str | os.PathLike) -> str:
    if not is_s3(uri):
        try:
            return Path(uri).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise StorageNotFound(f"cannot read {uri}: it does not exist") from None
    bucket, key = split_s3(uri)
    with _errors("read", uri):
        return client().get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")


def write_text(uri: str | os.PathLike, text: str) -> None:
    """Write a small text object/file (local: temp file + rename, never half-written)."""
    if not is_s3(uri):
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return
    bucket, key = split_s3(uri)
    with _errors("write", uri):
        client().put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"))


def check_writable(uri: str | os.PathLike) -> None:
    """Raise :class:`StorageError` now if ``uri`` cannot be written and cleaned up: no or
    rejected credentials, a missing bucket, an unreachable endpoint, no permission.

    Why: a run writing to S3 otherwise learns this at its first checkpoint upload, after
    the model was loaded and steps were trained (and paid for). A small probe object is
    written under the prefix and deleted again, exercising exactly the calls a run needs
    (PutObject, DeleteObject); a local path is created and checked the same way.
    """
    name = f".commit-write-check-{os.getpid()}-{threading.get_ident()}"
    if not is_s3(uri):
        path = Path(uri)
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(b"")
            (path / name).unlink()
        except OSError as e:
            raise StorageError(f"cannot write to {uri}: {e.strerror or e}") from None
        return
    bucket, key = split_s3(uri)
    probe = f"{_prefix(key)}{name}"
    with _errors("write to", str(uri)):
        c = client()
        c.put_object(Bucket=bucket, Key=probe, Body=b"")
        c.delete_object(Bucket=bucket, Key=probe)


def upload_file(local: str | os.PathLike, uri: str | os.PathLike) -> None:
    """Copy a local file to ``uri`` (multipart above the threshold)."""
    if not is_s3(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, uri)
        return
    bucket, key = split_s3(uri)
    settings = S3Settings.from_env()
    with _errors("upload to", uri):
        client(settings).upload_file(str(local), bucket, key, Config=settings.transfer_config())


def download_file(uri: str | os.PathLike, local: str | os.PathLike) -> Path:
    """Copy ``uri`` to a local file (written under a temp name, then renamed)."""
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    if not is_s3(uri):
        if not Path(uri).is_file():
            raise StorageNotFound(f"cannot download {uri}: it does not exist")
        shutil.copyfile(uri, local)
        return local
    bucket, key = split_s3(uri)
    settings = S3Settings.from_env()
    with _errors("download", uri):
        client(settings).download_file(bucket, key, str(local), Config=settings.transfer_config())
    return local


def list_files(uri: str | os.PathLike) -> list[str]:
    """Every file under a directory/prefix, as sorted relative POSIX paths."""
    if not is_s3(uri):
        root = Path(uri)
        if not root.is_dir():
            return []
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    bucket, key = split_s3(uri)
    prefix = _prefix(key)
    with _errors("list", uri):
        pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", []))


def list_dirs(uri: str | os.PathLike) -> list[str]:
    """Names of the immediate sub-directories (common prefixes) of a directory/prefix."""
    if not is_s3(uri):
        root = Path(uri)
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    bucket, key = split_s3(uri)
    prefix = _prefix(key)
    with _errors("list", uri):
        pages = (
            client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        )
        return sorted(
            cp["Prefix"][len(prefix) :].rstrip("/")
            for page in pages
            for cp in page.get("CommonPrefixes", [])
        )


def _delete_keys(bucket: str, keys: list[str], uri: str) -> None:
    with _errors("delete under", uri):
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            client().delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})


def delete_tree(uri: str | os.PathLike) -> None:
    """Remove a directory/prefix; on S3 the marker goes first, so the directory stops being
    complete before any of its files disappear."""
    if not is_s3(uri):
        shutil.rmtree(uri, ignore_errors=True)
        return
    bucket, key = split_s3(uri)
    with _errors("delete", uri):
        client().delete_object(Bucket=bucket, Key=f"{_prefix(key)}{MARKER}")
    _delete_keys(bucket, [f"{_prefix(key)}{rel}" for rel in list_files(uri)], str(uri))


# ---- directories and the publish protocol ---------------------------------------------------
def _parallel(fn: Callable[[str], None], items: list[str]) -> None:
    workers = min(S3Settings.from_env().max_concurrency, max(1, len(items)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(fn, items):
            pass


def describe_dir(local_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "sha256"}}`` of every file except the marker."""
    root = Path(local_dir)
    return {
        rel: {"size": (root / rel).stat().st_size, "sha256": file_sha256(root / rel)}
        for rel in list_files(root)
        if rel != MARKER
    }


def marker_text(files: dict[str, dict[str, Any]]) -> str:
    return json.dumps({"version": MARKER_VERSION, "files": files}, indent=1, sort_keys=True)


def write_marker(local_dir: str | os.PathLike) -> dict[str, Any]:
    """Write the marker into a local directory that is about to be renamed into place."""
    files = describe_dir(local_dir)
    (Path(local_dir) / MARKER).write_text(marker_text(files), encoding="utf-8")
    return {"version": MARKER_VERSION, "files": files}


def read_marker(uri: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of a published directory, or None when it is absent (not complete)."""
    try:
        text = read_text(join(uri, MARKER))
    except StorageNotFound:
        return None
    try:
        marker = json.loads(text)
        if not isinstance(marker.get("files"), dict):
            raise ValueError("no file list")
    except (ValueError, AttributeError) as e:
        raise StorageError(f"{join(uri, MARKER)} is not a valid completion marker: {e}") from None
    return marker


def is_complete(uri: str | os.PathLike) -> bool:
    return read_marker(uri) is not None


def upload_dir(local_dir: str | os.PathLike, uri: str | os.PathLike) -> list[str]:
    """Upload every file of ``local_dir`` under ``uri`` (no marker; see :func:`publish_dir`)."""
    rels = list_files(local_dir)
    root = Path(local_dir)
    _parallel(lambda rel: upload_file(root / rel, join(uri, rel)), rels)
    return rels


def publish_dir(local_dir: str | os.PathLike, uri: str | os.PathLike) -> dict[str, Any]:
    """Make ``uri`` an exact, complete copy of ``local_dir`` (the protocol in the module
    docstring). Publishing identical content again changes nothing. Returns the marker."""
    if not Path(local_dir).is_dir():
        raise StorageNotFound(f"cannot publish {local_dir}: it is not a directory")
    files = describe_dir(local_dir)
    marker = {"version": MARKER_VERSION, "files": files}
    if not is_s3(uri):
        with atomic_dir(uri) as tmp:
            shutil.copytree(local_dir, tmp, dirs_exist_ok=True)
            (tmp / MARKER).write_text(marker_text(files), encoding="utf-8")
        return marker
    bucket, key = split_s3(uri)
    existing = read_marker(uri)
    if existing is not None and existing["files"] == files:
        log.info("%s is already published with the same content", uri)
        return marker
    if existing is not None:
        with _errors("unpublish", str(uri)):
            client().delete_object(Bucket=bucket, Key=f"{_prefix(key)}{MARKER}")
    root = Path(local_dir)
    _parallel(lambda rel: upload_file(root / rel, join(uri, rel)), sorted(files))
    stale = [rel for rel in list_files(uri) if rel not in files and rel != MARKER]
    _delete_keys(bucket, [f"{_prefix(key)}{rel}" for rel in stale], str(uri))
    write_text(join(uri, MARKER), marker_text(files))
    log.info("published %d file(s) to %s", len(files), uri)
    return marker


def download_dir(
    uri: str | os.PathLike, local_dir: str | os.PathLike, require_complete: bool = True
) -> Path:
    """Replace ``local_dir`` with a copy of ``uri`` (all of it or, on failure, nothing).

    With ``require_complete`` (the default) only a published directory is accepted, only
    the files its marker lists are fetched, and each is checked against its sha256.
    """
    marker = read_marker(uri) if require_complete else None
    if require_complete and marker is None:
        raise StorageNotFound(
            f"{uri} is not a complete published directory (no {MARKER} marker): it is "
            "missing, or its writer was stopped before it finished"
        )
    rels = sorted(marker["files"]) if marker else list_files(uri)
    with atomic_dir(local_dir) as tmp:
        _parallel(lambda rel: download_file(join(uri, rel), tmp / rel), rels)
        if marker is None:
            return Path(local_dir)
        for rel, info in marker["files"].items():
            if file_sha256(tmp / rel) != info["sha256"]:
                raise StorageError(
                    f"{join(uri, rel)} does not match the sha256 in its {MARKER} marker: the "
                    "directory is being rewritten or was modified after publishing; retry"
                )
        if read_marker(uri) != marker:
            raise StorageError(f"{uri} was republished while it was downloaded; retry")
        (tmp / MARKER).write_text(marker_text(marker["files"]), encoding="utf-8")
    return Path(local_dir)
