"""A fake Kubeflow Pipelines v2beta1 API server on loopback, for the real ``kfp.Client``.

It answers the endpoints ``kfp.Client`` 2.17 calls, with the wire quirks of the real
server (KFP_K8S.md §2): snake_case proto field names, empty fields left out, int64 values
as JSON strings (``max_concurrency``), enum names as strings, the camelCase
``recurringRuns`` list key, grpc-gateway error bodies, the multipart ``uploadfile``
upload. Every request is recorded (method, path, query, headers, decoded body) so tests
assert what the client really sent. Run states are driven by the test
(:meth:`FakeKfp.script_states`), since nothing executes here.

Multipart bodies are parsed with ``email.parser`` (``cgi`` is gone in Python 3.13).
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

PREFIX = "/apis/v2beta1"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any = None  # JSON body, or {field: bytes} for multipart
    files: dict[str, bytes] = field(default_factory=dict)


class _Error(Exception):
    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _matches(obj: dict, flt: str | None) -> bool:
    """The subset of filter.proto the client sends: EQUALS on a string field."""
    if not flt:
        return True
    for p in json.loads(flt).get("predicates", []):
        op = p.get("operation")
        if op not in (1, "EQUALS"):
            raise _Error(400, 3, f"fake KFP: unsupported filter operation {op!r}")
        if obj.get(p["key"]) != p.get("stringValue"):
            return False
    return True


def _listing(key: str, items: list[dict], query: dict[str, str]) -> dict:
    """A list response: empty lists are omitted (protojson EmitUnpopulated=false)."""
    if query.get("sort_by", "").endswith(" desc"):
        items = list(reversed(items))
    size = int(query.get("page_size") or 0)
    page = items[:size] if size else items
    return {key: page, "total_size": len(items)} if page else {}


class FakeKfp:
    """Start with ``with FakeKfp() as kfp: ... kfp.url``; inspect ``kfp.requests``."""

    def __init__(self, token: str | None = None, multi_user: bool = False):
        self.token = token
        self.multi_user = multi_user
        self.requests: list[Recorded] = []
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.runs: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self._scripts: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ---------------------------------------------------------------- test controls

    def add_experiment(self, name: str) -> str:
        eid = str(uuid.uuid4())
        self.experiments[eid] = {
            "experiment_id": eid,
            "display_name": name,
            "created_at": _now(),
            "storage_state": "AVAILABLE",
        }
        return eid

    def script_states(self, run_id: str, states: list[str]) -> None:
        """Each ``GET /runs/{id}`` moves the run to the next state; the last one sticks."""
        self._scripts[run_id] = list(states)

    def set_state(self, run_id: str, state: str, error: str | None = None) -> None:
        run = self.runs[run_id]
        run["state"] = state
        run.setdefault("state_history", []).append({"update_time": _now(), "state": state})
        if state in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
            run["finished_at"] = _now()
        if error:
            run["error"] = {"code": 2, "message": error}

    def calls(self, method: str, path_suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == PREFIX + path_suffix]

    # --------------------------------------------------------------------- serving

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeKfp:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}  # HTTP names: any case
                rec = Recorded(method, parts.path, query, headers)
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("multipart/form-data"):
                    rec.files = _parse_multipart(ctype, raw)
                elif raw:
                    rec.body = json.loads(raw)
                with fake._lock:
                    fake.requests.append(rec)
                    try:
                        if fake.token and self.headers.get("Authorization") != (
                            f"Bearer {fake.token}"
                        ):
                            raise _Error(401, 16, "Unauthenticated: invalid or expired token")
                        status, payload = 200, fake._route(method, parts.path, query, rec)
                    except _Error as e:
                        status = e.status
                        payload = {
                            "error": e.message,
                            "code": e.code,
                            "message": e.message,
                            "details": [],
                        }
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_DELETE(self):
                self._serve("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # ---------------------------------------------------------------------- routes

    def _route(self, method: str, path: str, q: dict[str, str], rec: Recorded) -> dict:
        if not path.startswith(PREFIX + "/"):
            raise _Error(404, 5, f"Not Found: {path}")
        p = path[len(PREFIX) + 1 :].split("/")
        body = rec.body or {}
        match method, p:
            case "GET", ["healthz"]:
                return {"multi_user": self.multi_user, "pipeline_store": "database"}
            case "GET", ["experiments"]:
                items = [e for e in self.experiments.values() if _matches(e, q.get("filter"))]
                return _listing("experiments", items, q)
            case "POST", ["experiments"]:
                eid = self.add_experiment(body["display_name"])
                if body.get("description"):
                    self.experiments[eid]["description"] = body["description"]
                return self.experiments[eid]
            case "GET", ["experiments", eid]:
                return self._get(self.experiments, eid, "experiment")
            case "POST", ["pipelines", "upload"]:
                return self._upload(q, rec)
            case "POST", ["pipelines", "upload_version"]:
                return self._upload_version(q, rec)
            case "GET", ["pipelines"]:
                items = [x for x in self.pipelines.values() if _matches(x, q.get("filter"))]
                return _listing("pipelines", items, q)
            case "GET", ["pipelines", pid]:
                return self._get(self.pipelines, pid, "pipeline")
            case "GET", ["pipelines", pid, "versions"]:
                self._get(self.pipelines, pid, "pipeline")
                items = [v for v in self.versions[pid] if _matches(v, q.get("filter"))]
                return _listing("pipeline_versions", [_public(v) for v in items], q)
            case "POST", ["runs"]:
                return self._create_run(body)
            case "GET", ["runs"]:
                items = list(self.runs.values())
                if q.get("experiment_id"):
                    items = [r for r in items if r["experiment_id"] == q["experiment_id"]]
                return _listing("runs", items, q)
            case "GET", ["runs", rid]:
                run = self._get(self.runs, rid, "run")
                script = self._scripts.get(rid)
                if script:
                    self.set_state(rid, script.pop(0) if len(script) > 1 else script[0])
                return run
            case "POST", ["recurringruns"]:
                return self._create_recurring(body)
            case "GET", ["recurringruns"]:
                items = list(self.recurring_runs.values())
                if q.get("experiment_id"):
                    items = [r for r in items if r["experiment_id"] == q["experiment_id"]]
                # the one camelCase list key of the API (ListRecurringRunsResponse)
                return _listing("recurringRuns", items, q)
            case "GET", ["recurringruns", rid]:
                return self._get(self.recurring_runs, rid, "recurring run")
            case "DELETE", ["recurringruns", rid]:
                self._get(self.recurring_runs, rid, "recurring run")
                del self.recurring_runs[rid]
                return {}
        raise _Error(404, 5, f"fake KFP: no route for {method} {path}")

    @staticmethod
    def _get(table: dict, key: str, what: str) -> dict:
        if key not in table:
            raise _Error(404, 5, f"{what} {key} not found")
        return table[key]

    def _new_version(self, pid: str, name: str, package: bytes, description: str = "") -> dict:
        docs = [d for d in yaml.safe_load_all(package) if d]
        spec = {"pipeline_spec": docs[0], "platform_spec": docs[1]} if len(docs) > 1 else docs[0]
        v = {
            "pipeline_id": pid,
            "pipeline_version_id": str(uuid.uuid4()),
            "display_name": name,
            "name": name,
            "created_at": _now(),
            "pipeline_spec": spec,
            "_package": package,
        }
        if description:
            v["description"] = description
        self.versions.setdefault(pid, []).append(v)
        return v

    def _upload(self, q: dict[str, str], rec: Recorded) -> dict:
        if "uploadfile" not in rec.files:
            raise _Error(400, 3, "missing uploadfile")
        name = q.get("name") or "pipeline"
        if any(p["display_name"] == name for p in self.pipelines.values()):
            raise _Error(409, 6, f"pipeline {name} already exists")
        pid = str(uuid.uuid4())
        self.pipelines[pid] = {
            "pipeline_id": pid,
            "display_name": name,
            "name": name,
            "created_at": _now(),
        }
        if q.get("description"):
            self.pipelines[pid]["description"] = q["description"]
        # the first version inherits the pipeline's description (CreatePipelineAndVersion)
        self._new_version(pid, name, rec.files["uploadfile"], q.get("description", ""))
        return self.pipelines[pid]

    def _upload_version(self, q: dict[str, str], rec: Recorded) -> dict:
        pid = q.get("pipelineid", "")
        self._get(self.pipelines, pid, "pipeline")
        name = q.get("name", "")
        if any(v["display_name"] == name for v in self.versions[pid]):
            raise _Error(409, 6, f"version {name} already exists")
        return _public(
            self._new_version(pid, name, rec.files["uploadfile"], q.get("description", ""))
        )

    def _create_run(self, body: dict) -> dict:
        if body.get("experiment_id") not in self.experiments:
            raise _Error(404, 5, f"experiment {body.get('experiment_id')} not found")
        ref = body.get("pipeline_version_reference")
        if ref:
            self._get(self.pipelines, ref["pipeline_id"], "pipeline")
        rid = str(uuid.uuid4())
        run = dict(body)
        run.update(
            run_id=rid,
            created_at=_now(),
            scheduled_at=_now(),
            state="PENDING",
            storage_state="AVAILABLE",
        )
        self.runs[rid] = run
        return run

    def _create_recurring(self, body: dict) -> dict:
        if body.get("experiment_id") not in self.experiments:
            raise _Error(404, 5, f"experiment {body.get('experiment_id')} not found")
        rid = str(uuid.uuid4())
        rr = dict(body)
        rr.update(
            recurring_run_id=rid,
            created_at=_now(),
            updated_at=_now(),
            status="ENABLED" if body.get("mode") == "ENABLE" else "DISABLED",
        )
        if "max_concurrency" in rr:  # int64: a JSON string on the wire
            rr["max_concurrency"] = str(rr["max_concurrency"])
        self.recurring_runs[rid] = rr
        return rr


def _public(version: dict) -> dict:
    return {k: v for k, v in version.items() if not k.startswith("_")}


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    out: dict[str, bytes] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[str(name)] = part.get_payload(decode=True) or b""
    return out


# ------------------------------------------------------------------- pytest fixtures
# (imported by the test modules; kept here rather than in a conftest.py the pipeline
# tests of other modules share)

#: env vars that would point the KFP client or the kubernetes client somewhere real
CLUSTER_ENV = (
    "KF_PIPELINES_ENDPOINT",
    "KF_PIPELINES_UI_ENDPOINT",
    "KF_PIPELINES_TOKEN",
    "KF_PIPELINES_SA_TOKEN_PATH",
    "KUBERNETES_SERVICE_HOST",
    "KUBECONFIG",
    "MLFLOW_TRACKING_URI",
)


@pytest.fixture
def kfp_env(tmp_path, monkeypatch):
    """HOME in tmp (kfp.Client reads and writes ~/.config/kfp/context.json), no cluster env."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in CLUSTER_ENV:
        monkeypatch.delenv(name, raising=False)
    # the client computes the context path from HOME once, at import: follow the new HOME
    import kfp.client.client as kc

    monkeypatch.setattr(kc.Client, "_LOCAL_KFP_CONTEXT", str(home / ".config/kfp/context.json"))
    return home


@pytest.fixture
def fake_kfp(kfp_env):
    with FakeKfp() as fake:
        yield fake
