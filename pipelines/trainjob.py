"""Multi-node training as a Kubeflow Trainer v2.3 ``TrainJob``, launched from a KFP task.

One pod is enough for the built-in recipes; paper-scale runs (7B models on several
GPUs per node, several nodes) hand the training to Kubeflow Trainer, an existing
distributed engine: its ``torch`` runtime starts N node pods, injects ``PET_NNODES``,
``PET_NODE_RANK``, ``PET_MASTER_ADDR``... and ``torchrun`` reads them, so our command is
just ``torchrun -m commit_train train ...``. The KFP task only creates the TrainJob,
waits for its ``Complete``/``Failed`` condition and cleans up.

What this module guarantees, because a KFP task is retried and canceled:

* **One TrainJob per run and task.** The name is derived from the KFP run id and task
  name, so a retried task finds the TrainJob of its previous attempt (409 on create) and
  re-attaches instead of starting a second copy on the same GPUs. A previous attempt
  that *failed* is deleted and recreated: the new one resumes from the S3 checkpoint.
* **No orphans.** Canceling the run (SIGTERM to the launcher pod), a start deadline (pods
  Pending, e.g. no GPU node or a missing image) and the overall timeout delete the
  TrainJob, so its pods release the GPUs.
* **A failure says why.** The ``Failed`` condition's reason and message plus, per failed
  pod, the container's termination reason, exit code and the tail of its log.
* **The spec is validated offline** with the ``kubeflow-trainer-api`` models: a
  ``to_dict()`` round trip must give the spec back unchanged, because the models drop
  unknown fields silently (e.g. ``podSpecOverrides`` of Trainer v2.0).

Uses the plain ``kubernetes`` client on the CRD (``CustomObjectsApi``); the verbs it
needs are :data:`PIPELINE_RUNNER_RULES` (the pipeline runner's Role in ``k8s/``).
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines import platform
from pipelines.trainjob_spec import (  # noqa: F401 (the spec side, re-exported)
    CONTAINER,
    GROUP,
    KIND,
    PATCH_MANAGER,
    PLURAL,
    REPLICATED_JOB,
    RUN_LABEL,
    RUNTIME_KIND,
    TASK_LABEL,
    VERSION,
    TrainJobError,
    TrainJobSpec,
    _merge_env,
    build_trainjob,
    secret_env,
    trainjob_name,
    validate_trainjob,
)

log = logging.getLogger(__name__)

#: label JobSet puts on every pod of the TrainJob's JobSet (named like the TrainJob)
POD_JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

#: RBAC the pipeline runner's service account needs for this module, exactly: the
#: verbs of the calls below (k8s/ ships them as a Role; tests compare against this).
PIPELINE_RUNNER_RULES: tuple[dict[str, list[str]], ...] = (
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
)


class TrainJobCancelled(BaseException):
    """Raised from the SIGTERM handler: the KFP run was canceled (not an ``Exception``, so
    no ``except Exception`` in between swallows it before the TrainJob is deleted)."""


# ---------------------------------------------------------------------------- launcher


def current_namespace(default: str = platform.KFP_NAMESPACE) -> str:
    """The pod's own namespace (the TrainJob goes next to the KFP task), else ``default``."""
    try:
        return Path(SA_NAMESPACE_FILE).read_text().strip() or default
    except OSError:
        return default


def kube_clients(api_client=None):
    """``(CustomObjectsApi, CoreV1Api)``: in-cluster config in a pod, else kubeconfig."""
    from kubernetes import client, config

    if api_client is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api_client = client.ApiClient()
    return client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)


def _condition(obj: dict, kind: str) -> dict | None:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type") == kind and str(c.get("status")) == "True":
            return c
    return None


def _started(obj: dict, pods: list) -> bool:
    """Any pod scheduled and past its image pull (Running/Succeeded/Failed), or jobs ready."""
    for js in obj.get("status", {}).get("jobsStatus", []) or []:
        if js.get("ready", 0) or js.get("succeeded", 0) or js.get("failed", 0):
            return True
    return any(p.status and p.status.phase in ("Running", "Succeeded", "Failed") for p in pods)


@dataclass
class TrainJobLauncher:
    """Create (or re-attach to) a TrainJob, wait for it, and delete it when abandoned."""

    custom: Any  # kubernetes.client.CustomObjectsApi
    core: Any  # kubernetes.client.CoreV1Api
    namespace: str
    poll_s: float = 10.0
    log_tail_lines: int = 40
    clock: Callable[[], float] = time.monotonic

    # -- calls (each one a verb in PIPELINE_RUNNER_RULES)

    def _get(self, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise self._api_error(f"reading TrainJob {name}", e) from None

    def delete(self, name: str) -> bool:
        """Delete the TrainJob (its JobSet and pods follow); False if it was already gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, propagation_policy="Foreground"
            )
            log.info("deleted TrainJob %s/%s", self.namespace, name)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise self._api_error(f"deleting TrainJob {name}", e) from None

    def _pods(self, name: str) -> list:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.list_namespaced_pod(
                self.namespace, label_selector=f"{POD_JOBSET_LABEL}={name}"
            ).items
        except ApiException as e:
            log.warning("cannot list the pods of TrainJob %s: HTTP %s", name, e.status)
            return []

    def _log_tail(self, pod: str) -> str:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.read_namespaced_pod_log(
                pod, self.namespace, container=CONTAINER, tail_lines=self.log_tail_lines
            )
        except ApiException as e:
            return f"(log unavailable: HTTP {e.status})"

    def _api_error(self, what: str, e) -> TrainJobError:
        import json

        try:
            msg = json.loads(e.body).get("message", e.reason)
        except (TypeError, ValueError):
            msg = e.reason
        hint = (
            " (the pipeline runner lacks RBAC on trainjobs; see docs/CLUSTER.md)"
            if e.status == 403
            else ""
        )
        return TrainJobError(f"{what} in namespace {self.namespace}: HTTP {e.status}: {msg}{hint}")

    # -- lifecycle

    def create_or_attach(self, body: dict) -> dict:
        """Create the TrainJob; on 409 re-attach to the existing one of the same run/task."""
        from kubernetes.client.exceptions import ApiException

        name = body["metadata"]["name"]
        try:
            obj = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            )
            log.info("created TrainJob %s/%s (%s nodes)", self.namespace, name,
                     body["spec"]["trainer"]["numNodes"])  # fmt: skip
            return obj
        except ApiException as e:
            if e.status != 409:
                raise self._api_error(f"creating TrainJob {name}", e) from None
        existing = self._get(name)
        if existing is None:  # deleted between our create and get: try once more
            return self.create_or_attach(body)
        want = body["metadata"].get("labels", {}).get(RUN_LABEL)
        have = existing.get("metadata", {}).get("labels", {}).get(RUN_LABEL)
        if want != have:
            raise TrainJobError(
                f"TrainJob {self.namespace}/{name} exists but belongs to KFP run {have!r}, "
                f"not {want!r}; delete it by hand if it is stale"
            )
        if _condition(existing, "Failed"):
            # A retry after a failed attempt: start over; the trainer resumes from S3.
            log.warning("TrainJob %s failed in a previous attempt: recreating it", name)
            self.delete(name)
            self._wait_gone(name)
            return self.create_or_attach(body)
        log.info("re-attached to TrainJob %s/%s of a previous attempt", self.namespace, name)
        return existing

    def _wait_gone(self, name: str, timeout_s: float = 300) -> None:
        deadline = self.clock() + timeout_s
        while self._get(name) is not None:
            if self.clock() > deadline:
                raise TrainJobError(f"TrainJob {self.namespace}/{name} was not deleted in time")
            time.sleep(self.poll_s)

    def failure_report(self, name: str, obj: dict) -> str:
        """The Failed condition plus, per failed pod, its exit reason and log tail."""
        cond = _condition(obj, "Failed") or {}
        lines = [
            f"TrainJob {self.namespace}/{name} failed: "
            f"{cond.get('reason', 'Failed')}: {cond.get('message', '(no message)')}"
        ]
        for pod in self._pods(name):
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                term = cs.state.terminated if cs.state else None
                if term is not None and term.exit_code:
                    lines.append(
                        f"pod {pod.metadata.name}: container {cs.name} exited {term.exit_code} "
                        f"({term.reason or 'Error'}){': ' + term.message if term.message else ''}"
                    )
                    tail = self._log_tail(pod.metadata.name).rstrip()
                    lines += ["  | " + ln for ln in tail.splitlines()[-self.log_tail_lines :]]
        return "\n".join(lines)

    def _pending_reason(self, pods: list) -> str:
        reasons = []
        for pod in pods:
            for cs in (pod.status.container_statuses or []) if pod.status else []:
                w = cs.state.waiting if cs.state else None
                if w is not None and w.reason:
                    reasons.append(f"{pod.metadata.name}: {w.reason} {w.message or ''}".strip())
            for c in (pod.status.conditions or []) if pod.status else []:
                if c.type == "PodScheduled" and c.status == "False":
                    reasons.append(f"{pod.metadata.name}: {c.reason}: {c.message or ''}".strip())
        return "; ".join(reasons) or "no pods were created (is the Trainer controller running?)"

    def wait(self, name: str, *, start_timeout_s: float, timeout_s: float) -> dict:
        """Poll until ``Complete`` (return it) or ``Failed`` (raise with the report).

        A job not started within ``start_timeout_s`` or not finished within ``timeout_s``
        is deleted (it would hold GPUs, or wait for them forever) and reported.
        """
        t0 = self.clock()
        started = False
        last = None
        while True:
            obj = self._get(name)
            if obj is None:
                raise TrainJobError(
                    f"TrainJob {self.namespace}/{name} disappeared (deleted by someone else?)"
                )
            if _condition(obj, "Complete"):
                log.info("TrainJob %s complete", name)
                return obj
            if _condition(obj, "Failed"):
                raise TrainJobError(self.failure_report(name, obj))
            conds = [c.get("type") for c in obj.get("status", {}).get("conditions", []) or []]
            if conds != last:
                log.info("TrainJob %s: conditions %s", name, conds or "none yet")
                last = conds
            elapsed = self.clock() - t0
            if not started:
                pods = self._pods(name)
                started = _started(obj, pods)
                if not started and elapsed > start_timeout_s:
                    why = self._pending_reason(pods)
                    self.delete(name)
                    raise TrainJobError(
                        f"TrainJob {self.namespace}/{name} did not start within "
                        f"{start_timeout_s:.0f} s ({why}); deleted it"
                    )
            if elapsed > timeout_s:
                self.delete(name)
                raise TrainJobError(
                    f"TrainJob {self.namespace}/{name} still running after {timeout_s:.0f} s; "
                    f"deleted it (checkpoints on S3 are kept: a retry resumes)"
                )
            time.sleep(self.poll_s)

    def run(self, body: dict, *, start_timeout_s: float, timeout_s: float) -> dict:
        """create_or_attach + wait; on cancel (SIGTERM) or timeout the TrainJob is deleted.

        A Failed TrainJob is kept for ``kubectl describe``; the next attempt replaces it.
        """
        name = body["metadata"]["name"]
        self.create_or_attach(body)
        try:
            return self.wait(name, start_timeout_s=start_timeout_s, timeout_s=timeout_s)
        except (TrainJobCancelled, KeyboardInterrupt):
            log.warning("KFP task canceled: deleting TrainJob %s", name)
            self.delete(name)
            raise


def install_sigterm_handler() -> None:
    """Turn SIGTERM (KFP/Argo stopping the launcher pod on cancel) into TrainJobCancelled."""
    import signal

    def _handler(signum, frame):
        raise TrainJobCancelled()

    signal.signal(signal.SIGTERM, _handler)


def train_command_args(
    overrides: list[str], method: str, dataset_uri: str, output_uri: str
) -> list[str]:
    """``commit train`` arguments after the recipe: the same keys the one-pod step sets."""
    from commit_train.pipeline_steps import staged_data_overrides

    extra = [*overrides, "tracking.uri="]
    if method:
        extra.append(f"method={method}")
    extra += staged_data_overrides(dataset_uri)
    return [*extra, "--output-dir", output_uri, "--resume"]


def describe(body: dict) -> str:
    """One line for logs: name, nodes, image, command (no env: it may name secrets)."""
    t = body["spec"]["trainer"]
    return (
        f"TrainJob {body['metadata']['name']}: {t['numNodes']} nodes x "
        f"{t.get('numProcPerNode', 'auto')} procs, image {t['image']}, "
        f"args {shlex.join(t['args'])}"
    )


def launch(
    *,
    recipe: str,
    overrides: list[str],
    method: str,
    dataset_uri: str,
    dataset_path: str | None,
    checkpoint_root: str,
    run_id: str,
    task: str,
    num_nodes: int,
    procs_per_node: int | None = None,
    task_config: dict[str, Any] | None = None,
    image: str | None = None,
    start_timeout_s: float = 1800,
    timeout_s: float = 7 * 24 * 3600,
    launcher: TrainJobLauncher | None = None,
) -> str:
    """Run one multi-node training for a KFP task; return the run's S3 output URI.

    ``task_config`` is the task's ``dsl.TaskConfig`` as a dict (resources per node,
    node selector, tolerations, affinity, env, volumes): what the pipeline set on the
    launcher task becomes the spec of every training node.
    """
    from commit_train import storage
    from commit_train.pipeline_steps import pipeline_config

    output_uri = storage.join(checkpoint_root.rstrip("/"), run_id, task)
    if not storage.is_s3(output_uri):
        raise TrainJobError(
            f"checkpoint_root {checkpoint_root!r} must be an s3:// URI for a multi-node run: "
            f"every node writes and resumes checkpoints there"
        )
    pipeline_config(recipe, overrides, method, source="pipeline parameter 'recipe'")
    if not storage.is_s3(dataset_uri):
        # KFP's artifact store may not be reachable with our credentials: copy the
        # staged dataset next to the run, where every node can read it.
        if not dataset_path:
            raise TrainJobError(f"dataset {dataset_uri!r} is not on S3 and has no local copy")
        dataset_uri = storage.join(output_uri, "data")
        if not storage.is_complete(dataset_uri):
            storage.publish_dir(dataset_path, dataset_uri)
    if launcher is None:
        custom, core = kube_clients()
        launcher = TrainJobLauncher(custom, core, current_namespace())
    tc = task_config or {}
    spec = TrainJobSpec(
        name=trainjob_name(run_id, task),
        namespace=launcher.namespace,
        image=image or platform.component_image(),
        train_args=train_command_args(overrides, method, dataset_uri, output_uri),
        recipe_text=recipe,
        num_nodes=num_nodes,
        procs_per_node=procs_per_node,
        resources_per_node=tc.get("resources") or {},
        env=_merge_env(secret_env(), tc.get("env") or []),
        node_selector=tc.get("node_selector") or {},
        tolerations=tc.get("tolerations") or [],
        affinity=tc.get("affinity"),
        volumes=tc.get("volumes") or [],
        volume_mounts=tc.get("volume_mounts") or [],
        labels={RUN_LABEL: run_id[:63], TASK_LABEL: re.sub(r"[^a-z0-9-]", "-", task.lower())[:63]},
    )
    body = build_trainjob(spec)
    log.info("%s", describe(body))
    launcher.run(body, start_timeout_s=start_timeout_s, timeout_s=timeout_s)
    return output_uri
