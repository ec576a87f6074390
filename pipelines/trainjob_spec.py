"""The Kubeflow Trainer v2.3 ``TrainJob`` object for one multi-node training, and its
offline validation (see :mod:`pipelines.trainjob` for the launcher and the why).

Trainer's patch API changed in every minor release (``podSpecOverrides`` v2.0,
``podTemplateOverrides`` v2.1, ``runtimePatches`` v2.2+), and the ``kubeflow-trainer-api``
models drop unknown fields silently, so :func:`validate_trainjob` compares a ``to_dict()``
round trip with what we built and names every field that did not survive.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from commit_train.errors import CommitError
from pipelines import platform

GROUP, VERSION = platform.TRAINER_API_VERSION.split("/")
PLURAL = "trainjobs"
KIND = "TrainJob"
#: the runtime our TrainJobs reference: a ClusterTrainingRuntime with the torch ML policy
#: whose replicated job and container are both named ``node`` (the layout of Trainer's
#: own ``torch-distributed`` runtime, which k8s/ copies under our name)
RUNTIME_KIND = "ClusterTrainingRuntime"
REPLICATED_JOB = "node"
CONTAINER = "node"
#: ``runtimePatches[].manager``: who owns the patch (Trainer keys patches by manager)
PATCH_MANAGER = "commit-mlops.io/kfp-launcher"
#: labels on the TrainJob: which KFP run and task it belongs to (re-attach checks them)
RUN_LABEL = "commit-mlops.io/kfp-run-id"
TASK_LABEL = "commit-mlops.io/kfp-task"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class TrainJobError(CommitError):
    """The TrainJob could not be created, failed, never started or timed out."""

    exit_code = 1


def trainjob_name(run_id: str, task: str) -> str:
    """A DNS-1035 name (Trainer's rule for TrainJob names), deterministic per run + task.

    Short (< 40 chars), because JobSet derives Job, pod and Service names from it.
    """
    if not run_id or not task:
        raise TrainJobError("a TrainJob name needs the KFP run id and the task name")
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:12].strip("-") or "task"
    digest = hashlib.sha256(f"{run_id}/{task}".encode()).hexdigest()[:10]
    head = re.sub(r"[^a-z0-9]", "", run_id.lower())[:8]
    name = f"commit-{slug}-{head}-{digest}"
    assert _DNS1035.match(name) and len(name) <= 45, name
    return name


@dataclass
class TrainJobSpec:
    """What one distributed training needs; :func:`build_trainjob` makes the object."""

    name: str
    namespace: str
    image: str
    #: ``commit train`` arguments after the recipe path (overrides, --output-dir, --resume)
    train_args: list[str]
    recipe_text: str
    num_nodes: int = 2
    #: processes per node; None = Trainer's "auto" (one per GPU, 1 on CPU)
    procs_per_node: int | None = None
    resources_per_node: dict[str, Any] = field(default_factory=dict)
    env: list[dict[str, Any]] = field(default_factory=list)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] | None = None
    volumes: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    active_deadline_seconds: int | None = None
    runtime: str = platform.TRAINING_RUNTIME


def secret_env() -> list[dict[str, Any]]:
    """S3 and MLflow credentials as ``secretKeyRef`` env: the values stay in the Secrets."""
    env: list[dict[str, Any]] = []
    for secret, keys, optional in (
        (platform.S3_SECRET, platform.S3_SECRET_KEYS, False),
        (platform.MLFLOW_SECRET, platform.MLFLOW_SECRET_KEYS, True),
    ):
        for key in keys:
            ref: dict[str, Any] = {"name": secret, "key": key}
            if optional:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    for key in platform.CONFIG_KEYS:
        env.append(
            {
                "name": key,
                "valueFrom": {"configMapKeyRef": {"name": platform.CONFIG_MAP, "key": key}},
            }
        )
    return env


def build_trainjob(spec: TrainJobSpec) -> dict[str, Any]:
    """The TrainJob object for ``spec`` (Trainer v2.3: ``runtimePatches``, not overrides)."""
    if spec.num_nodes < 1:
        raise TrainJobError(f"TrainJob {spec.name}: num_nodes must be >= 1 (got {spec.num_nodes})")
    if spec.procs_per_node is not None and spec.procs_per_node < 1:
        raise TrainJobError(f"TrainJob {spec.name}: procs_per_node must be >= 1")
    if not _DNS1035.match(spec.name):
        raise TrainJobError(f"TrainJob name {spec.name!r} is not a DNS-1035 label")
    recipe_path = "/tmp/commit-recipe.yaml"
    # The recipe travels as env text (a pipeline parameter holds it, no file in the pod);
    # torchrun reads the rendezvous from the PET_* env the torch runtime injects.
    script = (
        f'printf "%s" "$COMMIT_RECIPE" > {recipe_path} && '
        f'exec torchrun -m commit_train train {recipe_path} "$@"'
    )
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": ["sh", "-c", script, "commit-train"],
        "args": list(spec.train_args),
        "numNodes": spec.num_nodes,
        "env": [{"name": "COMMIT_RECIPE", "value": spec.recipe_text}, *spec.env],
    }
    if spec.procs_per_node is not None:
        trainer["numProcPerNode"] = spec.procs_per_node
    if spec.resources_per_node:
        trainer["resourcesPerNode"] = spec.resources_per_node
    pod_spec: dict[str, Any] = {
        "securityContext": {
            "runAsUser": platform.RUN_AS_USER,
            "runAsGroup": platform.RUN_AS_GROUP,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
                **({"volumeMounts": spec.volume_mounts} if spec.volume_mounts else {}),
            }
        ],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = list(spec.tolerations)
    if spec.affinity:
        pod_spec["affinity"] = spec.affinity
    if spec.volumes:
        pod_spec["volumes"] = list(spec.volumes)
    body: dict[str, Any] = {
        "apiVersion": platform.TRAINER_API_VERSION,
        "kind": KIND,
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": dict(spec.labels)},
        "spec": {
            "runtimeRef": {"apiGroup": GROUP, "kind": RUNTIME_KIND, "name": spec.runtime},
            "trainer": trainer,
            "runtimePatches": [
                {
                    "manager": PATCH_MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {
                                        "name": REPLICATED_JOB,
                                        "template": {"spec": {"template": {"spec": pod_spec}}},
                                    }
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }
    if spec.active_deadline_seconds:
        body["spec"]["activeDeadlineSeconds"] = int(spec.active_deadline_seconds)
    validate_trainjob(body)
    return body


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where ``a`` (what we built) and ``b`` (the model's round trip) differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{path}.{k}".lstrip(".") + " (dropped: unknown to Trainer v2.3)")
            elif k not in a:
                out.append(f"{path}.{k}".lstrip(".") + " (added)")
            else:
                out += _diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _diff(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [path.lstrip(".") or "(root)"]


def validate_trainjob(body: dict[str, Any]) -> None:
    """Check ``body`` against the Trainer v2.3 API models; raise naming the bad fields."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob
    from pydantic import ValidationError

    name = body.get("metadata", {}).get("name", "?")
    try:
        back = TrainerV1alpha1TrainJob.from_dict(body).to_dict()
    except ValidationError as e:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise TrainJobError(f"TrainJob {name} does not fit Trainer v2.3: {fields}") from None
    problems = _diff(body, back)
    if problems:
        raise TrainJobError(f"TrainJob {name} does not fit Trainer v2.3: {', '.join(problems)}")


def _merge_env(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Env lists merged by name, later groups winning (the task's own env last)."""
    out: dict[str, dict[str, Any]] = {}
    for group in groups:
        for e in group or []:
            out[e["name"]] = e
    return list(out.values())
