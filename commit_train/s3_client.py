"""The S3 client of :mod:`commit_train.storage`, configured from the environment, and the
translation of boto/botocore failures into :class:`StorageError` messages a user can act on
(what to set or fix; the endpoint, bucket and key, never a credential).

Split from :mod:`commit_train.storage` so that module holds the file operations and the
publish protocol; everything here is re-exported there, so callers use ``storage.*`` only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from commit_train.errors import CommitError

S3_SCHEME = "s3://"
_MiB = 1024 * 1024


class StorageError(CommitError):
    """A storage location cannot be used: says what to set or fix (never a credential)."""


class StorageNotFound(StorageError):
    """The object, file or published directory does not exist (or is not complete)."""


# ---- URIs ------------------------------------------------------------------------------------
def is_s3(uri: str | os.PathLike) -> bool:
    return isinstance(uri, str) and uri.startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """``("bucket", "key/without/leading/slash")``; raises on a URI without a bucket."""
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} is not a valid S3 URI: expected s3://bucket/key")
    return bucket, key.strip("/")


# ---- the client ------------------------------------------------------------------------------
def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None


def _safe_endpoint(url: str | None) -> str:
    """The endpoint as shown in messages: user info (``user:secret@``) removed."""
    if not url:
        return "the default AWS S3 endpoint"
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc))


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StorageError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise StorageError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class S3Settings:
    """Client and transfer settings, all from the environment (see the module docstring)."""

    endpoint: str | None
    retry_mode: str = "standard"
    max_attempts: int = 10
    connect_timeout: int = 10
    read_timeout: int = 60
    multipart_threshold: int = 64 * _MiB
    multipart_chunksize: int = 16 * _MiB
    max_concurrency: int = 8

    @classmethod
    def from_env(cls) -> S3Settings:
        mode = os.environ.get("COMMIT_S3_RETRY_MODE", "standard")
        if mode not in ("standard", "adaptive", "legacy"):
            raise StorageError(
                f"COMMIT_S3_RETRY_MODE={mode!r}: expected standard, adaptive or legacy"
            )
        return cls(
            endpoint=endpoint_url(),
            retry_mode=mode,
            max_attempts=_env_int("COMMIT_S3_MAX_ATTEMPTS", 10, 1),
            connect_timeout=_env_int("COMMIT_S3_CONNECT_TIMEOUT", 10, 1),
            read_timeout=_env_int("COMMIT_S3_READ_TIMEOUT", 60, 1),
            multipart_threshold=_env_int("COMMIT_S3_MULTIPART_THRESHOLD", 64 * _MiB, 5 * _MiB),
            multipart_chunksize=_env_int("COMMIT_S3_MULTIPART_CHUNKSIZE", 16 * _MiB, 5 * _MiB),
            max_concurrency=_env_int("COMMIT_S3_MAX_CONCURRENCY", 8, 1),
        )

    def transfer_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
        )


_CLIENTS: dict[tuple, Any] = {}
_CLIENTS_LOCK = threading.Lock()
_CRED_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


def client(settings: S3Settings | None = None):
    """A boto3 S3 client for the current environment (cached: creating one costs ~50 ms).

    The cache key holds a digest of the credential variables, not their values, so a
    changed environment (a rotated Secret, a test) gets a fresh client.
    """
    import boto3
    from botocore.config import Config

    settings = settings or S3Settings.from_env()
    creds = hashlib.sha256(
        "\0".join(os.environ.get(v, "") for v in _CRED_VARS).encode()
    ).hexdigest()
    key = (settings, creds)
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            cfg = Config(
                retries={"mode": settings.retry_mode, "max_attempts": settings.max_attempts},
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                max_pool_connections=max(10, settings.max_concurrency * 2),
                s3={"addressing_style": "path" if settings.endpoint else "auto"},
            )
            session = boto3.session.Session()
            try:
                _CLIENTS[key] = session.client("s3", endpoint_url=settings.endpoint, config=cfg)
            except ValueError:
                raise StorageError(
                    f"invalid S3 endpoint {_safe_endpoint(settings.endpoint)!r}: set "
                    "AWS_ENDPOINT_URL (or MLFLOW_S3_ENDPOINT_URL) to http(s)://host[:port]"
                ) from None
        return _CLIENTS[key]


# ---- errors ----------------------------------------------------------------------------------
_CRED_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidSecurity",
    "AuthorizationHeaderMalformed",
}
_SET_CREDS = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (in Kubernetes, from the storage "
    "Secret), or AWS_PROFILE"
)


def _client_error_code(exc: BaseException) -> tuple[str, int] | None:
    from botocore.exceptions import ClientError

    err: BaseException | None = exc
    while err is not None:  # boto3 wraps ClientError in S3UploadFailedError without a cause
        if isinstance(err, ClientError):
            meta = err.response.get("ResponseMetadata", {})
            return str(err.response.get("Error", {}).get("Code", "")), int(
                meta.get("HTTPStatusCode") or 0
            )
        err = err.__cause__ or err.__context__
    return None


def _bucket_exists(bucket: str) -> bool | None:
    """True/False when S3 says so, None when it cannot tell (then the first error stands)."""
    try:
        client().head_bucket(Bucket=bucket)
        return True
    except Exception as e:  # noqa: BLE001 - any failure here means "cannot tell"
        found = _client_error_code(e)
        return False if found and found[1] == 404 else None


def _translate(exc: BaseException, action: str, uri: str) -> StorageError:
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    endpoint = _safe_endpoint(endpoint_url())
    err: BaseException | None = exc
    while err is not None:
        if isinstance(err, NoCredentialsError | PartialCredentialsError):
            return StorageError(
                f"cannot {action} {uri}: no complete S3 credentials found; {_SET_CREDS}."
            )
        if isinstance(
            err,
            EndpointConnectionError
            | ConnectTimeoutError
            | ConnectionClosedError
            | ReadTimeoutError,
        ):
            attempts = S3Settings.from_env().max_attempts
            return StorageError(
                f"cannot {action} {uri}: the S3 endpoint {endpoint} did not answer "
                f"({type(err).__name__}, {attempts} attempt(s)). Check AWS_ENDPOINT_URL / "
                "MLFLOW_S3_ENDPOINT_URL and that the storage server is running and reachable."
            )
        # s3transfer keeps the final failure of its own retries as ``last_exception``
        err = getattr(err, "last_exception", None) or err.__cause__ or err.__context__
    found = _client_error_code(exc)
    if found is None:
        return StorageError(f"cannot {action} {uri}: {type(exc).__name__}")
    code, status = found
    bucket = split_s3(uri)[0] if is_s3(uri) else ""
    # A HEAD's 404 has no body to say whether the key or the bucket is missing: ask.
    headless = code in ("404", "NotFound")
    if code == "NoSuchBucket" or (headless and bucket and _bucket_exists(bucket) is False):
        return StorageError(
            f"cannot {action} {uri}: bucket {bucket!r} does not exist at {endpoint}. Create it "
            "(`aws s3 mb s3://<bucket>`, or the MinIO console) or fix the URI / endpoint."
        )
    if code in _CRED_CODES:
        return StorageError(
            f"cannot {action} {uri}: {endpoint} rejected the S3 credentials ({code}). Check "
            f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (values not shown); {_SET_CREDS}."
        )
    if code in ("AccessDenied", "403", "Forbidden") or status == 403:
        return StorageError(
            f"cannot {action} {uri}: access denied by {endpoint}; the credentials lack "
            "permission for this bucket/key (check the bucket policy or the user's policy)."
        )
    if code in ("NoSuchKey", "404", "NotFound") or status == 404:
        return StorageNotFound(f"cannot {action} {uri}: it does not exist")
    return StorageError(f"cannot {action} {uri}: S3 answered {code or 'an error'} (HTTP {status})")


@contextlib.contextmanager
def _errors(action: str, uri: str) -> Iterator[None]:
    """Turn boto/botocore failures into :class:`StorageError` (the cause is dropped: its
    text can be long and it adds nothing the message does not say)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        mod = type(e).__module__
        if mod.startswith(("botocore", "boto3", "s3transfer")):
            raise _translate(e, action, uri) from None
        raise
