"""MLflow run tracking that never slows down or crashes the training loop.

Why this module exists instead of calling ``mlflow.log_metric`` from the loop:

* Per-step synchronous logging costs 10-50 ms a call against a server (ENVIRONMENT.md,
  "MLflow 3.17"); with ~20 metric names per step (METHOD.md §7) that would dominate a
  small run. :meth:`RunTracker.log_metrics` only appends to a buffer; a daemon thread
  sends it with ``MlflowClient.log_batch`` (up to 1000 metrics per call).
* A tracking server that blips must not kill a multi-hour run. Failed flushes keep the
  data and retry with capped exponential backoff; the loop never sees the exception.
  Retrying is safe because each metric carries the timestamp of the original call and
  MLflow's stores skip exact duplicates.
* Recipes and environments can carry secrets (S3 keys, ``user:pass@`` in URIs).
  :func:`redact_params` (in :mod:`commit_train.redaction`) masks them before anything
  reaches MLflow or the log.
* Under DDP only rank 0 may log; other ranks get a tracker whose methods do nothing, so
  the training code needs no ``if rank == 0`` around each call.

The tracker uses an explicit :class:`~mlflow.tracking.MlflowClient` bound to the resolved
URI and never the fluent ``mlflow.start_run`` stack, so the background thread does not
depend on thread-local active-run state. Code that wants fluent APIs (for example
``mlflow.pytorch.log_model``) can use :attr:`RunTracker.tracking_uri` and
:attr:`RunTracker.run_id`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import posixpath
import re
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from commit_train.config import TrackingConfig
from commit_train.errors import CommitError
from commit_train.redaction import (  # noqa: F401 - re-exported for callers
    MASK,
    is_secret_key,
    redact_params,
    redact_text,
)

log = logging.getLogger(__name__)

ALLOWED_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "databricks")

try:  # MLflow's own limits, so a future MLflow that changes them is followed.
    from mlflow.utils.validation import (
        MAX_ENTITY_KEY_LENGTH,
        MAX_METRICS_PER_BATCH,
        MAX_PARAMS_TAGS_PER_BATCH,
        MAX_TAG_VAL_LENGTH,
    )
except ImportError:  # pragma: no cover - the 3.x values
    MAX_ENTITY_KEY_LENGTH = 250
    MAX_METRICS_PER_BATCH = 1000
    MAX_PARAMS_TAGS_PER_BATCH = 100
    MAX_TAG_VAL_LENGTH = 8000

_METRIC_NAME_RE = re.compile(r"^[/\w.\- :]*$")


def resolve_tracking_uri(cfg_uri: str | None) -> str:
    """Pick the tracking URI: config, else ``$MLFLOW_TRACKING_URI``, else local sqlite.

    The default is the same store MLflow 3.x uses when nothing is set, but with an
    absolute path so a component that changes directory keeps writing to one database.
    Obvious typos (``sqllite://``, a bare path, ``http:/host``) are rejected here, at
    startup, rather than when the first flush fails an hour into a run.
    """
    uri = (cfg_uri or "").strip() or os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        return f"sqlite:///{Path.cwd().resolve()}/mlflow.db"
    shown = redact_text(uri)
    if uri.lower() == "databricks":  # profile-less Databricks shorthand
        return uri
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if not re.fullmatch(r"[a-z][a-z0-9+.\-]*", scheme):
        raise CommitError(
            f"tracking URI {shown!r} is not of the form scheme://...; use e.g. "
            "sqlite:////abs/path/mlflow.db, http://host:5000 or file:///abs/mlruns"
        )
    base = scheme.split("+", 1)[0]  # postgresql+psycopg2, mysql+pymysql
    if base not in ALLOWED_SCHEMES:
        raise CommitError(
            f"tracking URI {shown!r} has unknown scheme {scheme!r}; expected one of "
            f"{', '.join(ALLOWED_SCHEMES)} (check the spelling)"
        )
    if base == "sqlite" and (not uri.startswith("sqlite:///") or uri == "sqlite:///"):
        raise CommitError(
            f"tracking URI {shown!r} is not a sqlite file URI; use sqlite:///relative.db "
            "or sqlite:////absolute/path.db"
        )
    if base in ("http", "https") and not urlsplit(uri).hostname:
        raise CommitError(f"tracking URI {shown!r} has no host")
    return uri


@contextlib.contextmanager
def _sqlite_init_lock(uri: str):
    """Serialise MLflow's first touch of a shared sqlite store across processes.

    Two runs started at once on a fresh ``sqlite:///`` file both run MLflow's schema
    migration and one dies with "duplicate column name". A file lock beside the database,
    held only while the run is created, makes the second wait for the first.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _retry(what: str, fn: Any, attempts: int, delay_s: float) -> Any:
    """Call ``fn`` up to ``attempts`` times with doubling delays; re-raise the last error."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:
            if i == attempts - 1:
                raise
            log.warning(
                "MLflow %s failed (%s: %s); retry %d/%d in %.1fs",
                what,
                type(e).__name__,
                redact_text(str(e))[:300],
                i + 1,
                attempts - 1,
                delay_s,
            )
            time.sleep(delay_s)
            delay_s *= 2
    return None  # pragma: no cover - loop always returns or raises


class RunTracker:
    """One MLflow run: params at start, buffered metrics, artifacts, status at close.

    Use as a context manager; leaving the block with an exception ends the run FAILED
    (KILLED for Ctrl-C), otherwise FINISHED. With ``run_id`` the existing run is resumed
    (``--resume``): its status goes back to RUNNING and new metrics append to it.

    When ``is_main_process`` is False every method returns at once and nothing is kept.
    When tracking is disabled (``enabled=False`` or ``tracking_cfg.enabled`` False) MLflow
    is never touched but :attr:`history` is still filled, so the end-of-run plot works
    without a tracking backend.
    """

    def __init__(
        self,
        tracking_cfg: TrackingConfig,
        params: dict[str, Any],
        tags: dict[str, Any] | None = None,
        run_id: str | None = None,
        enabled: bool = True,
        is_main_process: bool = True,
        *,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 60.0,
        close_timeout_s: float = 60.0,
        max_buffer: int = 2_000_000,
    ) -> None:
        self.is_main_process = is_main_process
        self.active = bool(enabled and tracking_cfg.enabled and is_main_process)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.tracking_uri: str | None = None
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.skipped: dict[str, int] = defaultdict(int)  # non-finite / non-numeric / bad name
        self.dropped = 0  # metrics discarded because the buffer hit max_buffer
        self._cfg = tracking_cfg
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._close_timeout_s = close_timeout_s
        self._max_buffer = max_buffer
        self._buffer: list[Any] = []
        self._cond = threading.Condition()
        self._io_lock = threading.Lock()  # one log_batch in flight at a time
        self._stop = False
        self._closed = False
        self._failures = 0
        self._thread: threading.Thread | None = None
        self._sampler: Any = None  # SystemMetricsSampler when tracking.system_metrics
        self._run_start_ms = int(time.time() * 1000)
        if not self.active:
            return

        from mlflow.tracking import MlflowClient

        self.tracking_uri = resolve_tracking_uri(tracking_cfg.uri)
        try:
            with _sqlite_init_lock(self.tracking_uri):
                self._client = MlflowClient(tracking_uri=self.tracking_uri)
                self._start_run(params, dict(tags or {}), run_id)
        except BaseException as e:
            if self.run_id is not None and run_id is None:  # don't leave a zombie RUNNING run
                try:
                    self._client.set_terminated(self.run_id, status="FAILED")
                except Exception as e2:
                    log.debug("could not mark half-started run FAILED: %s", e2)
            if not isinstance(e, Exception) or isinstance(e, CommitError):
                raise
            raise CommitError(
                f"could not {'resume' if run_id else 'start'} an MLflow run at "
                f"{redact_text(self.tracking_uri)} ({type(e).__name__}: {redact_text(str(e))}); "
                "check tracking.uri / MLFLOW_TRACKING_URI or set tracking.enabled=false"
            ) from None
        self._thread = threading.Thread(
            target=self._flush_loop, name=f"mlflow-flush-{self.run_id[:8]}", daemon=True
        )
        self._thread.start()
        if tracking_cfg.system_metrics:
            from commit_train.sysmetrics import SystemMetricsSampler

            self._sampler = SystemMetricsSampler(
                self.log_metrics, self.run_id, self.tracking_uri, self._run_start_ms
            )

    # ----------------------------------------------------------------- run lifecycle
    def _start_run(self, params: dict[str, Any], tags: dict[str, Any], run_id: str | None):
        from mlflow.entities import Param, RunTag

        client = self._client
        if run_id is not None:
            run = _retry("get_run", lambda: client.get_run(run_id), 3, self._retry_initial_s)
            if run.info.lifecycle_stage != "active":
                raise CommitError(f"MLflow run {run_id} is deleted; restore it or start fresh")
            self.run_id = run_id
            self.experiment_id = run.info.experiment_id
            self._run_start_ms = run.info.start_time or self._run_start_ms
            existing = dict(run.data.params)
            client.update_run(run_id, status="RUNNING")
        else:
            self.experiment_id = self._experiment_id(self._cfg.experiment)
            all_tags = {k: str(v) for k, v in tags.items()}
            try:  # user, source and git commit, like mlflow.start_run adds
                from mlflow.tracking.context.registry import resolve_tags

                all_tags = resolve_tags(all_tags)
            except Exception as e:  # context detection is best effort
                log.debug("MLflow context tags unavailable: %s", e)
            safe_tags = redact_params(all_tags, MAX_TAG_VAL_LENGTH)
            run = client.create_run(self.experiment_id, run_name=self._cfg.run_name, tags=safe_tags)
            self.run_id = run.info.run_id
            self._run_start_ms = run.info.start_time or self._run_start_ms
            existing = {}
            tags = {}

        safe = redact_params(params)
        masked = sorted(k for k, v in safe.items() if v == MASK and params.get(k) != MASK)
        bad = [k for k in safe if not _valid_name(k)]
        for k in bad:
            log.warning("MLflow param %r skipped: invalid name", k)
            safe.pop(k)
        changed = sorted(k for k, v in safe.items() if k in existing and existing[k] != v)
        if changed:
            # MLflow params are immutable; a resumed run with new settings keeps the old
            # values and records the new ones as tags so the change stays visible.
            log.warning("resumed run %s: params changed, recorded as tags: %s", run_id, changed)
            tags.update({f"resume.param.{k}": safe[k] for k in changed})
        todo = [Param(k, v) for k, v in safe.items() if k not in existing]
        self._log_entities("params", todo)
        if tags:
            safe_tags = redact_params(tags, MAX_TAG_VAL_LENGTH)
            self._log_entities("tags", [RunTag(k, v) for k, v in safe_tags.items()])
        log.info(
            "MLflow run %s (%s) at %s: %d params logged, %d masked",
            self.run_id,
            "existing run, continued" if run_id else "new",
            redact_text(self.tracking_uri or ""),
            len(todo),
            len(masked),
        )
        log.debug("MLflow params: %s", safe)

    def _log_entities(self, kind: str, items: list[Any]) -> None:
        """``log_batch`` params or tags in chunks of MLflow's 100-per-call limit, retrying."""
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = {kind: items[i : i + MAX_PARAMS_TAGS_PER_BATCH]}
            _retry(
                f"log {kind}",
                lambda c=chunk: self._client.log_batch(self.run_id, **c),
                3,
                self._retry_initial_s,
            )

    def _experiment_id(self, name: str) -> str:
        """Get or create the experiment; tolerate another process creating it first."""
        exp = self._client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage != "active":
                raise CommitError(
                    f"MLflow experiment {name!r} is deleted; restore it or set tracking.experiment"
                )
            return exp.experiment_id
        try:
            return self._client.create_experiment(name)
        except Exception:
            exp = self._client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # ----------------------------------------------------------------------- metrics
    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        """Queue ``metrics`` at ``step``; returns without waiting on the backend.

        Values go through ``float()`` (so 0-dim tensors work). NaN/inf, non-numeric values
        and names MLflow would reject are skipped and counted in :attr:`skipped` (warned
        once per name): one bad value must not make every later batch fail.
        """
        if not self.is_main_process or self._closed:
            return
        ts = int(time.time() * 1000)
        step = int(step)
        accepted = []
        for name, raw in metrics.items():
            try:
                value = float(raw)
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value) or not _valid_name(name):
                if self.skipped[name] == 0:
                    log.warning(
                        "metric %r at step %d skipped (%s); further skips are only counted",
                        name,
                        step,
                        "invalid name" if not _valid_name(name) else f"value {raw!r}",
                    )
                self.skipped[name] += 1
                continue
            self.history[name].append((step, value))
            accepted.append((name, value))
        if not self.active or not accepted:
            return
        from mlflow.entities import Metric

        with self._cond:
            self._buffer.extend(Metric(k, v, ts, step) for k, v in accepted)
            overflow = len(self._buffer) - self._max_buffer
            if overflow > 0:  # backend down for very long: bound memory, keep newest
                del self._buffer[:overflow]
                self.dropped += overflow
                log.warning("MLflow unreachable: dropped %d oldest buffered metrics", overflow)
            if len(self._buffer) >= MAX_METRICS_PER_BATCH and not self._failures:
                self._cond.notify()

    @property
    def pending(self) -> int:
        """Metrics queued but not yet confirmed by the backend."""
        with self._cond:
            return len(self._buffer)

    def _send_some(self) -> bool:
        """Send the buffer in batches; on failure put the unsent part back in front.

        Returns True when everything taken was sent. Runs under ``_io_lock`` so the
        background thread and a synchronous :meth:`flush` never interleave batches.
        """
        with self._cond:
            batch, self._buffer = self._buffer, []
        sent = 0
        try:
            while sent < len(batch):
                chunk = batch[sent : sent + MAX_METRICS_PER_BATCH]
                self._client.log_batch(self.run_id, metrics=chunk)
                sent += len(chunk)
            if self._failures:
                log.info("MLflow logging recovered after %d failed flushes", self._failures)
            self._failures = 0
            return True
        except Exception as e:
            self._failures += 1
            with self._cond:
                self._buffer[:0] = batch[sent:]
            log.warning(
                "MLflow flush failed (%s: %s); %d metrics kept for retry (attempt %d)",
                type(e).__name__,
                redact_text(str(e))[:300],
                len(batch) - sent,
                self._failures,
            )
            return False

    def _backoff(self) -> float:
        return min(self._retry_max_s, self._retry_initial_s * 2 ** max(0, self._failures - 1))

    def _flush_loop(self) -> None:
        """Background thread: flush every ``flush_every_s`` or when a full batch is queued."""
        while True:
            with self._cond:
                # While failing, wait out the backoff even if a full batch is queued, so
                # a dead server is not hammered once per training step.
                if self._stop:
                    return
                if self._failures:
                    self._cond.wait(self._backoff())
                elif not self._stop and len(self._buffer) < MAX_METRICS_PER_BATCH:
                    self._cond.wait(self._cfg.flush_every_s)
                if self._stop:
                    return
                if not self._buffer:
                    continue
            with self._io_lock:
                self._send_some()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Send everything queued now, retrying until ``timeout_s``; True if all sent.

        For points where the server must be up to date (before a checkpoint is
        registered, before close). Never raises.
        """
        if not self.active:
            return True
        deadline = time.monotonic() + timeout_s
        delay = min(self._retry_initial_s, 1.0)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._io_lock.acquire(timeout=remaining):
                break
            try:
                if not self.pending or self._send_some():
                    return True
            finally:
                self._io_lock.release()
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, self._retry_max_s)
        log.warning(
            "MLflow flush timed out after %.0fs: %d metrics unsent", timeout_s, self.pending
        )
        return False

    # --------------------------------------------------------------------- artifacts
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> bool:
        """Upload one file now (retrying); False and a warning if it still fails.

        A missing local file is a caller bug and raises FileNotFoundError at once.
        """
        return self._artifact(path, artifact_path, is_dir=False)

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> bool:
        """Upload a directory's contents now (retrying); False and a warning on failure."""
        return self._artifact(local_dir, artifact_path, is_dir=True)

    def _artifact(self, path: str | Path, artifact_path: str | None, is_dir: bool) -> bool:
        if not self.active or self._closed:
            return False
        path = Path(path)
        if not (path.is_dir() if is_dir else path.is_file()):
            raise FileNotFoundError(f"artifact {'dir' if is_dir else 'file'} {path} not found")
        fn = self._client.log_artifacts if is_dir else self._client.log_artifact
        try:
            _retry(
                f"upload of {path.name}",
                lambda: fn(self.run_id, str(path), artifact_path),
                4,
                self._retry_initial_s,
            )
            return True
        except Exception as e:
            log.warning(
                "MLflow artifact %s not uploaded (%s: %s)",
                path,
                type(e).__name__,
                redact_text(str(e))[:300],
            )
            return False

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set run tags now (redacted like params); failures are warned, not raised."""
        if not self.active or self._closed or not tags:
            return
        from mlflow.entities import RunTag

        safe = redact_params(tags, MAX_TAG_VAL_LENGTH)
        try:
            self._log_entities("tags", [RunTag(k, v) for k, v in safe.items() if _valid_name(k)])
        except Exception as e:
            log.warning("MLflow tags not set (%s: %s)", type(e).__name__, redact_text(str(e)))

    # ------------------------------------------------------------------------- close
    def close(self, status: str = "FINISHED") -> int:
        """Flush everything (bounded by ``close_timeout_s``), then end the run.

        Returns the number of metrics that could not be delivered (0 normally); they stay
        in :attr:`history`. Idempotent; never raises, because it runs in ``finally``
        paths where a tracking error would hide the real training error.
        """
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ValueError(f"status must be FINISHED, FAILED or KILLED, not {status!r}")
        if not self.active or self._closed:
            self._closed = True
            return 0
        deadline = time.monotonic() + self._close_timeout_s
        if self._sampler is not None:  # its last sample goes out with the final flush
            self._sampler.stop()
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.flush(timeout_s=max(0.0, deadline - time.monotonic()))
        self._closed = True
        unsent = self.pending
        if unsent:
            log.warning("MLflow run %s closed with %d metrics undelivered", self.run_id, unsent)
        total_skipped = sum(self.skipped.values())
        if total_skipped:
            log.warning(
                "skipped %d non-finite/invalid metric values: %s", total_skipped, dict(self.skipped)
            )
        try:
            _retry(
                "end run",
                lambda: _redacted_stdout(self._client.set_terminated, self.run_id, status=status),
                3,
                min(self._retry_initial_s, 1.0),
            )
        except Exception as e:
            log.warning(
                "MLflow run %s not marked %s (%s: %s)",
                self.run_id,
                status,
                type(e).__name__,
                redact_text(str(e))[:300],
            )
        return unsent

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("KILLED")
        else:
            self.close("FAILED")


class _RedactingStream:
    """Wraps a text stream so every write has URI credentials masked."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        return self._inner.write(redact_text(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _redacted_stdout(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with stdout masked: ``set_terminated`` prints "View run ... at: <URI>",
    and that URI carries ``user:password@`` when the tracking URI does."""
    with contextlib.redirect_stdout(_RedactingStream(sys.stdout)):
        return fn(*args, **kwargs)


def _valid_name(name: str) -> bool:
    """MLflow's rule for param/metric names (checked client-side so a batch never bounces)."""
    if not isinstance(name, str) or not name or len(name) > MAX_ENTITY_KEY_LENGTH:
        return False
    if not _METRIC_NAME_RE.match(name):
        return False
    norm = posixpath.normpath(name)
    return not (norm != name or norm == "." or norm.startswith("..") or norm.startswith("/"))
