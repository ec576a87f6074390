"""Talking to a Kubeflow Pipelines API: host, auth, a wait loop that ends, cron checks.

``kfp.Client`` does the REST calls; this module adds what it lacks for a command line:

* **One clear error per bad set-up, before any call.** The client's constructor retries
  ``healthz`` 5 times, 5 s apart, and an unreachable host surfaces as a raw urllib3
  traceback. :func:`connect` first asks ``/apis/v2beta1/healthz`` once itself, so "no
  host", "host unreachable" and "token rejected" each get one sentence naming the host.
* **Auth from the environment only, never a parameter** (a token on a command line ends
  up in shell history and ``ps``): ``$KF_PIPELINES_TOKEN``, else the service-account token
  a pod has mounted (the KFP-audience projected token first, then the default one). The
  token file is re-read on every request, so a long ``wait`` survives kubelet rotation.
* **A wait loop that stops on every terminal state.** ``Client.wait_for_run_completion``
  treats CANCELED as "still running" and polls until its timeout (KFP_K8S.md §0.9).
* **6-field cron validated locally.** KFP's scheduler (robfig/cron) wants a leading
  seconds field; a 5-field crontab line would be rejected by the server, or worse, read
  with every field shifted by one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commit_train.errors import CommitError

log = logging.getLogger(__name__)

#: env var with the KFP API URL (the SDK's own name, so existing set-ups keep working)
HOST_ENV = "KF_PIPELINES_ENDPOINT"
#: env var with the UI URL used in printed links (default: the API host)
UI_HOST_ENV = "KF_PIPELINES_UI_ENDPOINT"
#: env var with a bearer token (e.g. `kubectl create token` or an OIDC access token)
TOKEN_ENV = "KF_PIPELINES_TOKEN"
#: env var pointing at a token file; default: the KFP-audience projected token of a pod
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
KFP_SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
#: the plain service-account token every pod gets (single-user KFP behind kube-rbac-proxy)
DEFAULT_SA_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
#: API address inside the cluster (platform-agnostic install, namespace kubeflow)
IN_CLUSTER_HOST = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"

#: run states after which nothing changes any more (V2beta1RuntimeState)
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"})


class KfpError(CommitError):
    """The KFP host, its auth or a KFP object the user named is wrong."""


class RunNotSucceeded(CommitError):
    """A run ended FAILED or CANCELED: the command exits 1, as a failed job would."""

    exit_code = 1


# ---------------------------------------------------------------------------- host + auth


def resolve_host(host: str | None) -> str:
    """``--host``, else $KF_PIPELINES_ENDPOINT, else the in-cluster service (in a pod)."""
    host = host or os.environ.get(HOST_ENV)
    if not host and os.environ.get("KUBERNETES_SERVICE_HOST"):
        host = IN_CLUSTER_HOST
    if not host:
        raise KfpError(
            f"no KFP host: pass --host URL (e.g. http://localhost:8080 after `kubectl "
            f"port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`) or set ${HOST_ENV}"
        )
    if not re.match(r"^https?://[^/\s]+", host):
        raise KfpError(f"KFP host {host!r} must be an http:// or https:// URL")
    return host.rstrip("/")


@dataclass(frozen=True)
class TokenSource:
    """Where the bearer token comes from; ``read()`` is called on every request."""

    kind: str  # "env" | "file" | "none"
    where: str  # env var name or file path, for messages (never the token itself)

    def read(self) -> str | None:
        if self.kind == "env":
            return os.environ.get(self.where) or None
        if self.kind == "file":
            try:
                return Path(self.where).read_text(encoding="utf-8").strip() or None
            except OSError as e:
                raise KfpError(f"cannot read the KFP token file {self.where}: {e}") from None
        return None

    def describe(self) -> str:
        return {"env": f"${self.where}", "file": f"token file {self.where}"}.get(
            self.kind, "no token"
        )


def token_source() -> TokenSource:
    """$KF_PIPELINES_TOKEN, else a mounted service-account token, else none (port-forward)."""
    if os.environ.get(TOKEN_ENV):
        return TokenSource("env", TOKEN_ENV)
    explicit = os.environ.get(SA_TOKEN_PATH_ENV)
    if explicit:  # named explicitly: a missing file is an error, not a silent fallback
        return TokenSource("file", explicit)
    for path in (KFP_SA_TOKEN_PATH, DEFAULT_SA_TOKEN_PATH):
        if Path(path).is_file():
            return TokenSource("file", path)
    return TokenSource("none", "")


def _api_error_message(body: bytes) -> str:
    """The ``message`` of a grpc-gateway error body, else the raw text (shortened)."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
        return str(data.get("message") or data.get("error") or text)[:500]
    except (ValueError, AttributeError):
        return text.strip()[:500]


def preflight(host: str, source: TokenSource, timeout_s: float = 10.0) -> dict[str, Any]:
    """One ``GET /apis/v2beta1/healthz``; raises :class:`KfpError` naming host and cause."""
    url = f"{host}/apis/v2beta1/healthz"
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    token = source.read()
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:
        detail = _api_error_message(e.read())
        if e.code in (401, 403):
            hint = (
                f"the token from {source.describe()} was rejected: it may have expired "
                f"(create a fresh one, e.g. `kubectl create token ...`) or lack access"
                if token
                else f"it needs a token: set ${TOKEN_ENV}"
            )
            raise KfpError(f"KFP at {host} answered HTTP {e.code} ({detail}): {hint}") from None
        raise KfpError(f"KFP at {host} answered HTTP {e.code} on healthz: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise KfpError(
            f"cannot reach KFP at {host} ({reason}); check --host/${HOST_ENV} and that "
            f"the port-forward or ingress is up"
        ) from None
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise KfpError(
            f"{url} did not answer JSON: is {host} the KFP API (ml-pipeline) or its UI?"
        ) from None


def connect(host: str | None, namespace: str | None = None):
    """A ready ``kfp.Client`` for ``host`` (checked first with :func:`preflight`)."""
    import kfp
    from kfp.client.token_credentials_base import TokenCredentialsBase

    host = resolve_host(host)
    source = token_source()
    preflight(host, source)

    class _Credentials(TokenCredentialsBase):
        def refresh_api_key_hook(self, config) -> None:
            config.api_key["authorization"] = source.read() or ""

    kwargs: dict[str, Any] = {"host": host, "ui_host": os.environ.get(UI_HOST_ENV) or host}
    if source.kind != "none":
        kwargs["credentials"] = _Credentials()
    if namespace:
        kwargs["namespace"] = namespace
    client = kfp.Client(**kwargs)
    log.debug("connected to KFP at %s (auth: %s)", host, source.describe())
    return client


def ui_url(host: str, path: str) -> str:
    """A link into the KFP UI ($KF_PIPELINES_UI_ENDPOINT, else the API host) for ``path``."""
    return (os.environ.get(UI_HOST_ENV) or host).rstrip("/") + path


def api_call(what: str, host: str, fn: Callable[[], Any]) -> Any:
    """Run one client call; turn ``ApiException`` into a :class:`KfpError` naming ``what``."""
    import kfp_server_api

    try:
        return fn()
    except kfp_server_api.ApiException as e:
        detail = _api_error_message(e.body or b"") if e.body else (e.reason or "")
        raise KfpError(f"KFP at {host}: {what} failed with HTTP {e.status}: {detail}") from None


# --------------------------------------------------------------------------------- cron

_FIELDS = (  # name, min, max, names
    ("seconds", 0, 59, None),
    ("minutes", 0, 59, None),
    ("hours", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, ("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC")),
    ("day of week", 0, 6, ("SUN MON TUE WED THU FRI SAT")),
)
_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def _cron_value(text: str, lo: int, hi: int, names: str | None, field: str, expr: str) -> int:
    if names and text.upper() in names.split():
        return names.split().index(text.upper()) + lo
    if not text.isdigit():
        raise KfpError(f"cron {expr!r}: {field} value {text!r} is not a number")
    v = int(text)
    if not lo <= v <= hi:
        raise KfpError(f"cron {expr!r}: {field} value {v} is outside {lo}-{hi}")
    return v


def validate_cron(expr: str) -> str:
    """Check a 6-field robfig cron (seconds first, UTC) and return it normalised.

    Accepts ``*``, ``?`` (day fields), ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists
    ``a,b``, month/day names, and the ``@daily``-style descriptors; ``@every`` is left
    to the periodic schedule (interval), which KFP models separately.
    """
    expr = " ".join(expr.split())
    if expr in _DESCRIPTORS:
        return expr
    fields = expr.split(" ") if expr else []
    if len(fields) == 5:
        raise KfpError(
            f"cron {expr!r} has 5 fields; KFP's scheduler wants 6, seconds first "
            f"(UTC): did you mean '0 {expr}'?"
        )
    if len(fields) != 6:
        raise KfpError(
            f"cron {expr!r} has {len(fields)} fields; KFP wants 6: "
            f"'seconds minutes hours day-of-month month day-of-week', e.g. '0 0 3 * * *'"
        )
    for text, (field, lo, hi, names) in zip(fields, _FIELDS, strict=True):
        for part in text.split(","):
            rng, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                raise KfpError(f"cron {expr!r}: {field} step {step!r} must be a positive number")
            if rng in ("*", "?"):
                if rng == "?" and field not in ("day of month", "day of week"):
                    raise KfpError(f"cron {expr!r}: '?' is only allowed in the day fields")
                continue
            a, dash, b = rng.partition("-")
            va = _cron_value(a, lo, hi, names, field, expr)
            if dash and _cron_value(b, lo, hi, names, field, expr) < va:
                raise KfpError(f"cron {expr!r}: {field} range {rng!r} runs backwards")
    return expr


# --------------------------------------------------------------------------------- wait


def state_of(run) -> str:
    return str(run.state or "RUNTIME_STATE_UNSPECIFIED")


def wait_for_run(
    client,
    run_id: str,
    *,
    host: str,
    timeout_s: float = 24 * 3600,
    poll_s: float = 10.0,
    on_change: Callable[[str, Any], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
):
    """Poll ``run_id`` until a terminal state; return the run.

    Transient errors (5xx, connection resets) are retried for a few polls, since a long
    wait should survive an API-server restart; a 404 or 401 stops at once.
    """
    import kfp_server_api
    import urllib3

    deadline = clock() + timeout_s
    last_state = None
    transient = 0
    while True:
        try:
            run = client.get_run(run_id)
            transient = 0
        except kfp_server_api.ApiException as e:
            if e.status == 404:
                raise KfpError(f"KFP at {host} has no run {run_id!r}") from None
            if e.status in (401, 403) or transient >= 5:
                detail = _api_error_message(e.body or b"") if e.body else e.reason
                raise KfpError(
                    f"KFP at {host}: reading run {run_id} failed with HTTP {e.status}: {detail}"
                ) from None
            transient += 1
            log.warning("KFP at %s: HTTP %s reading run %s, retrying", host, e.status, run_id)
            time.sleep(poll_s)
            continue
        except urllib3.exceptions.HTTPError as e:
            if transient >= 5:
                raise KfpError(f"lost KFP at {host} while waiting for run {run_id}: {e}") from None
            transient += 1
            time.sleep(poll_s)
            continue
        state = state_of(run)
        if state != last_state:
            if on_change:
                on_change(state, run)
            last_state = state
        if state in TERMINAL_STATES:
            return run
        if clock() >= deadline:
            raise KfpError(
                f"run {run_id} on {host} is still {state} after {timeout_s:.0f} s "
                f"(--timeout); it keeps running on the cluster"
            )
        time.sleep(poll_s)


def duration(run, now: dt.datetime | None = None) -> dt.timedelta | None:
    """Wall time of a run: finished - created, or so far for a running one."""
    start = run.created_at
    if start is None:
        return None
    end = run.finished_at if state_of(run) in TERMINAL_STATES else None
    if end is None or end.year < 1971:  # unset timestamps come back as the epoch
        end = now or dt.datetime.now(dt.UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.UTC)
    return end - start


def format_duration(d: dt.timedelta | None) -> str:
    if d is None:
        return "-"
    s = max(0, int(d.total_seconds()))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"
