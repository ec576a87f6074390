"""``commit k8s doctor``: check a cluster for the commit-mlops stack and name what is wrong.

Each check reads the objects that k8s/ creates (names in pipelines/platform.py) and says, on
failure, which object and what to do. The checks run in order under one deadline; a check
that would start after it is reported as not run, so the command never hangs. HTTP checks
(MLflow /health, the KFP API's healthz, the artifact store behind MLflow) go through the API
server's service proxy by default, so they work from a laptop with only a kubeconfig;
``--mlflow-url``/``--kfp-url`` check a port-forward or an ingress with plain HTTP instead.

Exit code: 0 when nothing failed (warnings allowed), 1 when a check failed.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Literal

from commit_train.errors import CommitError
from pipelines import platform

Status = Literal["ok", "warn", "fail"]
GPU_RESOURCE = "nvidia.com/gpu"
TRAINER_GROUP, TRAINER_VERSION = platform.TRAINER_API_VERSION.split("/")
TRAINER_CRD = f"clustertrainingruntimes.{TRAINER_GROUP}"
#: waiting reasons that mean "this container will not start without a fix"
IMAGE_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
CRASH_REASONS = {"CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError"}


class DoctorError(CommitError):
    """The cluster cannot be reached at all (kubeconfig, context, API server)."""


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, the verdict, and what to do about it."""

    name: str
    status: Status
    detail: str

    def line(self) -> str:
        tag = {"ok": " OK ", "warn": "WARN", "fail": "FAIL"}[self.status]
        return f"[{tag}] {self.name}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class DoctorOptions:
    """Where to look; defaults are the names k8s/ deploys."""

    kfp_namespace: str = platform.KFP_NAMESPACE
    stack_namespace: str = platform.STACK_NAMESPACE
    kfp_url: str | None = None
    mlflow_url: str | None = None
    require_gpu: bool = False
    timeout: float = 60.0
    request_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.request_timeout <= 0:
            raise CommitError("--timeout must be a positive number of seconds")


class _Http:
    """GET through the API server's service proxy, or plainly when a URL is given."""

    def __init__(self, api_client, deadline: Callable[[], float]) -> None:
        self._api = api_client
        self._left = deadline

    def service(self, namespace: str, service: tuple[str, int], path: str) -> tuple[int, str]:
        from kubernetes.client.exceptions import ApiException

        name, port = service
        url = f"/api/v1/namespaces/{namespace}/services/{name}:{port}/proxy/{path.lstrip('/')}"
        try:
            resp = self._api.call_api(
                url,
                "GET",
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=self._left(),
            )[0]
            return resp.status, resp.data.decode("utf-8", "replace")
        except ApiException as e:
            body = e.body.decode("utf-8", "replace") if isinstance(e.body, bytes) else e.body
            return e.status, str(body or e.reason)

    def url(self, base: str, path: str) -> tuple[int, str]:
        target = base.rstrip("/") + "/" + path.lstrip("/")
        try:
            with urllib.request.urlopen(target, timeout=self._left()) as resp:  # noqa: S310
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")


class Doctor:
    """Runs the checks against one cluster (an ``kubernetes.client.ApiClient``)."""

    def __init__(self, api_client, options: DoctorOptions) -> None:
        from kubernetes import client

        self.opts = options
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.ext = client.ApiextensionsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._deadline_at = time.monotonic() + options.timeout
        self.http = _Http(api_client, self._call_timeout)
        self.results: list[Check] = []

    # -- plumbing -------------------------------------------------------------------------
    def _call_timeout(self) -> float:
        left = self._deadline_at - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return min(self.opts.request_timeout, left)

    def _kw(self) -> dict:
        return {"_request_timeout": self._call_timeout()}

    def _add(self, name: str, status: Status, detail: str) -> None:
        self.results.append(Check(name, status, detail))

    def run(self) -> list[Check]:
        """All checks in order; the first failing to reach the API server stops the rest."""
        steps: list[tuple[str, Callable[[], None]]] = [
            ("cluster", self.check_cluster),
            ("secrets", self.check_secrets),
            ("config", self.check_config_map),
            ("volumes", self.check_pvcs),
            ("pods", self.check_pods),
            ("workloads", self.check_workloads),
            ("mlflow", self.check_mlflow),
            ("bucket", self.check_bucket),
            ("kfp-api", self.check_kfp),
            ("gpu-nodes", self.check_gpus),
            ("trainer", self.check_trainer),
        ]
        for name, fn in steps:
            if time.monotonic() >= self._deadline_at:
                self._add(name, "fail", f"not run: the {self.opts.timeout:g}s deadline passed")
                continue
            try:
                fn()
            except TimeoutError:
                self._add(name, "fail", f"not finished within the {self.opts.timeout:g}s deadline")
            except _Unreachable as e:
                self._add(name, "fail", str(e))
                break
        return self.results

    def _get(self, fn: Callable, *args):
        """Call a client read; None on 404; _Unreachable on connection errors."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **self._kw())
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status in (401, 403):
                raise _Unreachable(
                    f"the API server refused {fn.__name__}{args} ({e.status} {e.reason}): "
                    "the kubeconfig's user needs read access to these objects"
                ) from e
            raise _Unreachable(f"{fn.__name__}{args} failed: {e.status} {e.reason}") from e
        except HTTPError as e:
            if "timed out" in str(e).lower():
                raise TimeoutError from e
            raise _Unreachable(
                f"cannot reach the Kubernetes API server ({type(e).__name__}): check the "
                "kubeconfig/context and that the cluster is running"
            ) from e

    # -- checks ---------------------------------------------------------------------------
    def check_cluster(self) -> None:
        missing = [
            ns
            for ns in (self.opts.kfp_namespace, self.opts.stack_namespace)
            if self._get(self.core.read_namespace, ns) is None
        ]
        if missing:
            what = ", ".join(missing)
            self._add(
                "cluster",
                "fail",
                f"namespace {what} missing: install KFP (k8s/kind/up.sh does) and apply an "
                "overlay (kubectl apply -k k8s/overlays/kind)",
            )
        else:
            self._add(
                "cluster",
                "ok",
                f"API server reachable; namespaces {self.opts.kfp_namespace} and "
                f"{self.opts.stack_namespace} present",
            )

    def _expected_secrets(self) -> list[tuple[str, str, tuple[str, ...], bool]]:
        k, s = self.opts.kfp_namespace, self.opts.stack_namespace
        return [
            (k, platform.S3_SECRET, platform.S3_SECRET_KEYS, True),
            (s, platform.S3_SECRET, platform.S3_SECRET_KEYS, True),
            (s, platform.POSTGRES_SECRET, platform.POSTGRES_SECRET_KEYS, True),
            (k, platform.MLFLOW_SECRET, platform.MLFLOW_SECRET_KEYS, False),
        ]

    def check_secrets(self) -> None:
        fix = "run k8s/secrets/create-secrets.sh (templates in k8s/secrets/)"
        for ns, name, keys, required in self._expected_secrets():
            label = f"secret {ns}/{name}"
            secret = self._get(self.core.read_namespaced_secret, name, ns)
            if secret is None:
                if required:
                    self._add(label, "fail", f"missing: {fix}")
                else:
                    self._add(label, "ok", "absent (optional: MLflow without authentication)")
                continue
            data = secret.data or {}
            absent = [key for key in keys if key not in data]
            empty = [key for key in keys if key in data and not base64.b64decode(data[key])]
            if absent or empty:
                parts = []
                if absent:
                    parts.append("missing keys " + ", ".join(absent))
                if empty:
                    parts.append("empty keys " + ", ".join(empty))
                self._add(label, "fail", f"{'; '.join(parts)} (expected {', '.join(keys)}): {fix}")
            else:
                self._add(label, "ok", "keys " + ", ".join(keys))

    def check_config_map(self) -> None:
        ns, name = self.opts.kfp_namespace, platform.CONFIG_MAP
        label = f"configmap {ns}/{name}"
        cm = self._get(self.core.read_namespaced_config_map, name, ns)
        if cm is None:
            self._add(
                label, "fail", "missing: apply an overlay (kubectl apply -k k8s/overlays/kind)"
            )
            return
        data = cm.data or {}
        absent = [key for key in platform.CONFIG_KEYS if not data.get(key)]
        if absent:
            self._add(label, "fail", "missing or empty keys " + ", ".join(absent))
        else:
            self._add(label, "ok", f"MLFLOW_TRACKING_URI={data['MLFLOW_TRACKING_URI']}")

    def check_pvcs(self) -> None:
        ns = self.opts.stack_namespace
        pvcs = self._get(self.core.list_namespaced_persistent_volume_claim, ns)
        items = pvcs.items if pvcs is not None else []
        names = {p.metadata.name for p in items}
        if platform.POSTGRES_PVC not in names:
            self._add(
                f"pvc {ns}/{platform.POSTGRES_PVC}",
                "fail",
                "missing: the Postgres StatefulSet has not been applied (or not scheduled yet)",
            )
        for pvc in items:
            phase = pvc.status.phase if pvc.status else None
            label = f"pvc {ns}/{pvc.metadata.name}"
            if phase == "Bound":
                self._add(label, "ok", "Bound")
                continue
            sc = pvc.spec.storage_class_name if pvc.spec else None
            self._add(
                label,
                "fail",
                f"{phase or 'no phase'} (storageClassName={sc or 'cluster default'}): no volume "
                f"was provisioned; check `kubectl get storageclass` has a default and "
                f"`kubectl describe pvc -n {ns} {pvc.metadata.name}` for the reason",
            )

    def check_pods(self) -> None:
        ns = self.opts.stack_namespace
        pods = self._get(self.core.list_namespaced_pod, ns)
        bad = 0
        for pod in pods.items if pods is not None else []:
            statuses = list(pod.status.init_container_statuses or []) + list(
                pod.status.container_statuses or []
            )
            for cs in statuses:
                waiting = cs.state.waiting if cs.state else None
                if waiting is None:
                    continue
                where = f"pod {ns}/{pod.metadata.name} container {cs.name}"
                if waiting.reason in IMAGE_REASONS:
                    bad += 1
                    self._add(
                        where,
                        "fail",
                        f"{waiting.reason} for image {cs.image}: build and load it "
                        "(k8s/kind/up.sh) or fix the tag/registry in the overlay's images",
                    )
                elif waiting.reason in CRASH_REASONS:
                    bad += 1
                    self._add(
                        where,
                        "fail",
                        f"{waiting.reason}: {waiting.message or ''} "
                        f"(kubectl logs -n {ns} {pod.metadata.name} -c {cs.name})".strip(),
                    )
        if not bad:
            self._add("pods", "ok", f"no pod in {ns} is stuck on its image or crash-looping")

    def check_workloads(self) -> None:
        ns = self.opts.stack_namespace
        for kind, fn, name in (
            ("deployment", self.apps.read_namespaced_deployment, platform.MLFLOW_DEPLOYMENT),
            ("statefulset", self.apps.read_namespaced_stateful_set, platform.POSTGRES_STATEFULSET),
        ):
            label = f"{kind} {ns}/{name}"
            obj = self._get(fn, name, ns)
            if obj is None:
                self._add(
                    label, "fail", "missing: apply an overlay (kubectl apply -k k8s/overlays/kind)"
                )
                continue
            want = obj.spec.replicas if obj.spec and obj.spec.replicas is not None else 1
            ready = (obj.status.ready_replicas if obj.status else None) or 0
            if ready >= max(want, 1):
                self._add(label, "ok", f"{ready}/{want} ready")
            else:
                self._add(
                    label,
                    "fail",
                    f"{ready}/{want} ready: kubectl describe {kind} -n {ns} {name} "
                    "(and the pod lines above)",
                )

    def _mlflow_get(self, path: str) -> tuple[int, str]:
        if self.opts.mlflow_url:
            return self.http.url(self.opts.mlflow_url, path)
        return self.http.service(self.opts.stack_namespace, platform.MLFLOW_SERVICE, path)

    def _http(self, label: str, fn: Callable[[], tuple[int, str]]) -> tuple[int, str] | None:
        try:
            return fn()
        except TimeoutError:
            raise
        except (OSError, urllib.error.URLError) as e:
            self._add(label, "fail", f"unreachable: {e}")
        except Exception as e:  # urllib3 errors from the proxied call
            if "timed out" in str(e).lower():
                raise TimeoutError from e
            self._add(label, "fail", f"unreachable: {type(e).__name__}: {e}")
        return None

    def check_mlflow(self) -> None:
        where = self.opts.mlflow_url or f"service {self.opts.stack_namespace}/mlflow:5000"
        label = "mlflow /health"
        got = self._http(label, lambda: self._mlflow_get("health"))
        if got is None:
            return
        status, body = got
        if status == 200 and body.strip() == "OK":
            self._add(label, "ok", f"{where} answers OK")
        else:
            self._add(
                label,
                "fail",
                f"{where} answered {status} {body.strip()[:120]!r}: see the deployment line above "
                f"and kubectl logs -n {self.opts.stack_namespace} deploy/mlflow",
            )

    def check_bucket(self) -> None:
        ns = self.opts.stack_namespace
        label = f"job {ns}/{platform.BUCKET_JOB}"
        job = self._get(self.batch.read_namespaced_job, platform.BUCKET_JOB, ns)
        if job is None:
            self._add(label, "fail", "missing: the bucket was never created; apply an overlay")
        elif (job.status.succeeded or 0) >= 1:
            self._add(label, "ok", f"bucket {platform.BUCKET} created")
        else:
            failed = job.status.failed or 0
            self._add(
                label,
                "fail",
                f"not succeeded ({failed} failed attempts): kubectl logs -n {ns} "
                f"job/{platform.BUCKET_JOB}; check AWS_ENDPOINT_URL in ConfigMap "
                f"{platform.CONFIG_MAP} and Secret {platform.S3_SECRET}",
            )
        # The store as MLflow sees it: listing the artifact root proxies to S3.
        label = "mlflow artifact store"
        got = self._http(label, lambda: self._mlflow_get("api/2.0/mlflow-artifacts/artifacts"))
        if got is None:
            return
        status, body = got
        if status == 200:
            self._add(label, "ok", "MLflow lists its S3 artifact root")
        else:
            self._add(
                label,
                "fail",
                f"listing artifacts failed ({status} {_short(body)}): the S3 endpoint is "
                "unreachable from MLflow or the bucket is missing",
            )

    def check_kfp(self) -> None:
        label = "kfp api"
        where = self.opts.kfp_url or (
            f"service {self.opts.kfp_namespace}/{platform.KFP_API_SERVICE[0]}:"
            f"{platform.KFP_API_SERVICE[1]}"
        )
        path = "apis/v2beta1/healthz"
        got = self._http(
            label,
            lambda: (
                self.http.url(self.opts.kfp_url, path)
                if self.opts.kfp_url
                else self.http.service(self.opts.kfp_namespace, platform.KFP_API_SERVICE, path)
            ),
        )
        if got is None:
            return
        status, body = got
        if status == 200:
            self._add(label, "ok", f"{where} healthz answers")
        else:
            self._add(
                label,
                "fail",
                f"{where} answered {status} {_short(body)}: is KFP 2.17 installed and ready? "
                f"(kubectl get pods -n {self.opts.kfp_namespace})",
            )

    def check_gpus(self) -> None:
        nodes = self._get(self.core.list_node)
        items = nodes.items if nodes is not None else []
        gpus = {}
        for node in items:
            count = ((node.status.allocatable or {}) if node.status else {}).get(GPU_RESOURCE)
            if count and int(count) > 0:
                gpus[node.metadata.name] = int(count)
        if gpus:
            listed = ", ".join(f"{n} ({c})" for n, c in sorted(gpus.items()))
            self._add("gpu nodes", "ok", f"{sum(gpus.values())} {GPU_RESOURCE} on {listed}")
            return
        detail = (
            f"no node of {len(items)} offers {GPU_RESOURCE}: GPU training tasks stay Pending; "
            "install the NVIDIA device plugin on the GPU pool, or run CPU-only recipes"
        )
        self._add("gpu nodes", "fail" if self.opts.require_gpu else "warn", detail)

    def check_trainer(self) -> None:
        label = f"trainer runtime {platform.TRAINING_RUNTIME}"
        if self._get(self.ext.read_custom_resource_definition, TRAINER_CRD) is None:
            self._add(
                label,
                "fail",
                f"CRD {TRAINER_CRD} missing: install Kubeflow Trainer v2.3.0 (k8s/kind/up.sh "
                "shows the pinned command)",
            )
            return
        runtime = self._get(
            self.custom.get_cluster_custom_object,
            TRAINER_GROUP,
            TRAINER_VERSION,
            "clustertrainingruntimes",
            platform.TRAINING_RUNTIME,
        )
        if runtime is None:
            self._add(
                label,
                "fail",
                "missing: apply an overlay with components/trainer-runtime (kind, production)",
            )
        else:
            self._add(label, "ok", "installed")


class _Unreachable(Exception):
    """The API server cannot be used at all: stop the remaining checks."""


def _short(body: str) -> str:
    text = body.strip()
    try:
        parsed = json.loads(text)
        text = parsed.get("message") or parsed.get("error_code") or text
    except (ValueError, AttributeError):
        pass
    return repr(str(text)[:160])


def load_api_client(kubeconfig: str | None, context: str | None, timeout: float):
    """An ApiClient from a kubeconfig (or in-cluster credentials), with no request retries."""
    import os

    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
            cfg = client.Configuration.get_default_copy()
        else:
            cfg = client.Configuration()
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=cfg
            )
    except (ConfigException, FileNotFoundError, OSError) as e:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise DoctorError(
            f"cannot load kubeconfig {where} (context {context or 'current'}): {e}"
        ) from e
    cfg.retries = False  # one attempt per request: the deadline is ours, not urllib3's
    return client.ApiClient(cfg)


def run(args: argparse.Namespace) -> int:
    opts = DoctorOptions(
        kfp_namespace=args.namespace,
        stack_namespace=args.stack_namespace,
        kfp_url=args.kfp_url,
        mlflow_url=args.mlflow_url,
        require_gpu=args.require_gpu,
        timeout=args.timeout,
        request_timeout=min(args.timeout, 10.0),
    )
    api = load_api_client(args.kubeconfig, args.context, opts.timeout)
    try:
        results = Doctor(api, opts).run()
    finally:
        api.close()
    for check in results:
        print(check.line())
    failed = [c for c in results if c.status == "fail"]
    warned = [c for c in results if c.status == "warn"]
    summary = f"{len(results) - len(failed) - len(warned)} ok, {len(warned)} warnings, {len(failed)} failed"
    print(summary, file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "doctor",
        help="check the cluster: KFP API, MLflow, bucket, secrets, PVCs, GPU nodes, Trainer",
        description="Check a cluster for the commit-mlops stack and name what is wrong. "
        "Exit 1 if any check fails.",
    )
    p.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    p.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    p.add_argument(
        "--namespace", default=platform.KFP_NAMESPACE, help="KFP namespace (pipeline pods)"
    )
    p.add_argument(
        "--stack-namespace", default=platform.STACK_NAMESPACE, help="MLflow/Postgres namespace"
    )
    p.add_argument(
        "--kfp-url", default=None, help="KFP API URL (default: through the service proxy)"
    )
    p.add_argument(
        "--mlflow-url", default=None, help="MLflow URL (default: through the service proxy)"
    )
    p.add_argument(
        "--require-gpu", action="store_true", help="fail (not warn) when no node offers GPUs"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="deadline for all checks, seconds")
    p.set_defaults(func=run)
