# ruff: noqa: F811  (pytest fixtures imported by name, then requested as arguments)
"""Multi-node training: the TrainJob spec (Trainer v2.3 models) and the launcher's
create / wait / fail / re-attach / cancel against kmock's KubernetesEmulator.

The test plays the Trainer controller: a thread creates the pods a JobSet would and
flips ``status.conditions``; the launcher only sees the API, as on a cluster.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from pipelines import platform, trainjob
from pipelines.trainjob import TrainJobError, TrainJobLauncher, TrainJobSpec
from tests.commit_train.conftest import moto, s3  # noqa: F401 (S3 on a moto server)
from tests.pipelines.kube_emulator import k8s  # noqa: F401

NS = "kubeflow"
RUN_ID = "3f2a9c1e-0b7d-4e55-9a61-2c8d7e1f4b20"
TASK_CONFIG = {  # what dsl.TaskConfig carries for a task with 8 GPUs on a tainted pool
    "resources": {
        "limits": {"nvidia.com/gpu": "8", "cpu": "32", "memory": "256Gi"},
        "requests": {"cpu": "16", "memory": "200Gi"},
    },
    "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "env": [{"name": "NCCL_DEBUG", "value": "WARN"}],
}


def _spec(**kw) -> TrainJobSpec:
    base = dict(
        name=trainjob.trainjob_name(RUN_ID, "train-distributed"),
        namespace=NS,
        image="registry.example/commit-mlops:0.1.0",
        train_args=["train.steps=10", "--output-dir", "s3://b/ckpt/r/t", "--resume"],
        recipe_text="method: commit\n",
        num_nodes=2,
        procs_per_node=8,
        resources_per_node=TASK_CONFIG["resources"],
        env=trainjob._merge_env(trainjob.secret_env(), TASK_CONFIG["env"]),
        node_selector=TASK_CONFIG["node_selector"],
        tolerations=TASK_CONFIG["tolerations"],
        labels={trainjob.RUN_LABEL: RUN_ID},
    )
    base.update(kw)
    return TrainJobSpec(**base)


# ------------------------------------------------------------------------------ spec


def test_name_is_deterministic_per_run_and_task_and_dns_safe():
    a = trainjob.trainjob_name(RUN_ID, "train-distributed")
    assert a == trainjob.trainjob_name(RUN_ID, "train-distributed")
    assert a != trainjob.trainjob_name(RUN_ID, "train-distributed-2")
    assert a != trainjob.trainjob_name(RUN_ID.replace("3f", "4f"), "train-distributed")
    for name in (a, trainjob.trainjob_name("RUN_ID/with:odd chars", "Train (8 GPUs)!!")):
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 45


def test_spec_round_trips_through_the_trainer_models_with_resources_secrets_scheduling():
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    body = trainjob.build_trainjob(_spec())
    assert TrainerV1alpha1TrainJob.from_dict(body).to_dict() == body
    spec = body["spec"]
    assert body["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and body["kind"] == "TrainJob"
    assert spec["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": platform.TRAINING_RUNTIME,
    }
    t = spec["trainer"]
    assert t["numNodes"] == 2 and t["numProcPerNode"] == 8
    assert t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert "torchrun -m commit_train train" in t["command"][2]
    assert t["args"][-3:] == ["--output-dir", "s3://b/ckpt/r/t", "--resume"]
    env = {e["name"]: e for e in t["env"]}
    for key in platform.S3_SECRET_KEYS:  # a reference to the Secret, never its value
        assert env[key] == {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": platform.S3_SECRET, "key": key}},
        }
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert env["NCCL_DEBUG"]["value"] == "WARN"
    (patch,) = spec["runtimePatches"]
    (rj,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert rj["name"] == trainjob.REPLICATED_JOB
    pod = rj["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == TASK_CONFIG["node_selector"]
    assert pod["tolerations"] == TASK_CONFIG["tolerations"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == platform.RUN_AS_USER


def test_fields_trainer_v2_3_does_not_know_are_rejected_not_dropped():
    body = trainjob.build_trainjob(_spec())
    old = copy.deepcopy(body)
    old["spec"]["podSpecOverrides"] = [{"targetJobs": [{"name": "node"}]}]  # Trainer v2.0
    with pytest.raises(TrainJobError, match=r"spec\.podSpecOverrides \(dropped"):
        trainjob.validate_trainjob(old)
    bad = copy.deepcopy(body)
    bad["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(TrainJobError, match="numNodes"):
        trainjob.validate_trainjob(bad)
    with pytest.raises(TrainJobError, match="num_nodes must be >= 1"):
        trainjob.build_trainjob(_spec(num_nodes=0))


def test_launch_needs_an_s3_checkpoint_root():
    with pytest.raises(TrainJobError, match="must be an s3:// URI"):
        trainjob.launch(
            recipe="method: commit\n", overrides=[], method="", dataset_uri="s3://b/d",
            dataset_path=None, checkpoint_root="/tmp/ckpt", run_id=RUN_ID, task="t",
            num_nodes=2,
        )  # fmt: skip


# -------------------------------------------------------------------------- launcher


def _launcher(k8s, **kw) -> TrainJobLauncher:
    from kubernetes import client

    api = k8s.api_client()
    api.user_agent = "commit-launcher"  # tells its requests from the fake controller's
    return TrainJobLauncher(
        client.CustomObjectsApi(api), client.CoreV1Api(api), NS, poll_s=0.02, **kw
    )


class Controller:
    """The test's stand-in for Trainer + JobSet + kubelet, over the same API."""

    def __init__(self, k8s):
        from kubernetes import client

        api = k8s.api_client()
        self.k8s = k8s
        self.custom, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)

    def wait_created(self, name: str, timeout: float = 10) -> dict:
        from kubernetes.client.exceptions import ApiException

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                return self.custom.get_namespaced_custom_object(
                    trainjob.GROUP, trainjob.VERSION, NS, trainjob.PLURAL, name
                )
            except ApiException:
                time.sleep(0.01)
        raise AssertionError(f"TrainJob {name} was never created")

    def pod(self, job: str, index: int, phase: str, state: dict, ready=False) -> str:
        name = f"{job}-node-0-{index}-abcde"
        self.core.create_namespaced_pod(
            NS,
            {
                "metadata": {"name": name, "labels": {trainjob.POD_JOBSET_LABEL: job}},
                "status": {
                    "phase": phase,
                    "containerStatuses": [
                        {
                            "name": "node",
                            "image": "img",
                            "imageID": "",
                            "ready": ready,
                            "restartCount": 0,
                            "state": state,
                        }  # fmt: skip
                    ],
                },
            },
        )
        return name

    def condition(self, name: str, kind: str, reason: str = "", message: str = "") -> None:
        cond = {"type": kind, "status": "True", "reason": reason or kind, "message": message,
                "lastTransitionTime": "2026-12-02T09:00:00Z"}  # fmt: skip
        self.custom.patch_namespaced_custom_object_status(
            trainjob.GROUP, trainjob.VERSION, NS, trainjob.PLURAL, name,
            {"status": {"conditions": [cond]}},
        )  # fmt: skip

    def exists(self, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.get_namespaced_custom_object(
                trainjob.GROUP, trainjob.VERSION, NS, trainjob.PLURAL, name
            )
            return True
        except ApiException as e:
            assert e.status == 404
            return False


def _in_thread(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def test_the_launcher_creates_the_trainjob_and_returns_when_it_completes(k8s):
    body = trainjob.build_trainjob(_spec())
    name = body["metadata"]["name"]
    ctl = Controller(k8s)

    def controller():
        ctl.wait_created(name)
        ctl.pod(name, 0, "Running", {"running": {}}, ready=True)
        time.sleep(0.1)
        ctl.condition(name, "Complete", "JobsCompleted")

    t = _in_thread(controller)
    obj = _launcher(k8s).run(body, start_timeout_s=30, timeout_s=30)
    t.join(5)
    assert obj["status"]["conditions"][0]["type"] == "Complete"
    stored = ctl.wait_created(name)
    assert stored["spec"] == body["spec"]  # sent as built


def test_a_failed_trainjob_reports_reason_exit_code_and_log_tail_and_is_kept(k8s):
    body = trainjob.build_trainjob(_spec())
    name = body["metadata"]["name"]
    ctl = Controller(k8s)

    def controller():
        ctl.wait_created(name)
        pod = ctl.pod(name, 1, "Failed", {"terminated": {"exitCode": 3, "reason": "Error"}})
        k8s.serve_log(NS, pod, "step 40 loss 2.1\nTrainingDiverged: loss is nan at step 41\n")
        ctl.condition(name, "Failed", "FailedJobs", "jobset failed: replicatedJob node failed")

    t = _in_thread(controller)
    with pytest.raises(TrainJobError) as err:
        _launcher(k8s).run(body, start_timeout_s=30, timeout_s=30)
    t.join(5)
    msg = str(err.value)
    assert f"TrainJob {NS}/{name} failed: FailedJobs: jobset failed" in msg
    assert "exited 3 (Error)" in msg
    assert "TrainingDiverged: loss is nan at step 41" in msg
    assert ctl.exists(name)  # kept for `kubectl describe`; a retry replaces it


def test_a_retried_task_reattaches_to_its_running_trainjob(k8s):
    body = trainjob.build_trainjob(_spec())
    name = body["metadata"]["name"]
    ctl = Controller(k8s)
    ctl.custom.create_namespaced_custom_object(  # the first attempt's job, still running
        trainjob.GROUP, trainjob.VERSION, NS, trainjob.PLURAL, copy.deepcopy(body)
    )
    ctl.pod(name, 0, "Running", {"running": {}}, ready=True)

    def controller():
        time.sleep(0.2)
        ctl.condition(name, "Complete")

    t = _in_thread(controller)
    _launcher(k8s).run(body, start_timeout_s=30, timeout_s=30)
    t.join(5)
    launcher_calls = [r for r in k8s.requests() if r.headers.get("User-Agent") == "commit-launcher"]
    assert [r.method for r in launcher_calls if r.method in ("POST", "DELETE")] == ["POST"]
    assert len(k8s.emu.objects) >= 1 and ctl.exists(name)


def test_a_retry_after_a_failed_attempt_recreates_the_trainjob(k8s):
    body = trainjob.build_trainjob(_spec())
    name = body["metadata"]["name"]
    ctl = Controller(k8s)
    ctl.custom.create_namespaced_custom_object(
        trainjob.GROUP, trainjob.VERSION, NS, trainjob.PLURAL, copy.deepcopy(body)
    )
    ctl.condition(name, "Failed", "FailedJobs", "node 1 OOMKilled")

    def controller():  # wait for the replacement (no Failed condition), then finish it
        end = time.monotonic() + 10
        while time.monotonic() < end:
            obj = ctl.wait_created(name)
            if not obj.get("status"):
                ctl.pod(name, 0, "Running", {"running": {}}, ready=True)
                ctl.condition(name, "Complete")
                return
            time.sleep(0.02)

    t = _in_thread(controller)
    _launcher(k8s).run(body, start_timeout_s=30, timeout_s=30)
    t.join(5)
    methods = [r.method for r in k8s.requests() if r.headers.get("User-Agent") == "commit-launcher"]
    assert [m for m in methods if m in ("POST", "DELETE")] == ["POST", "DELETE", "POST"]


def test_reattaching_refuses_a_trainjob_of_another_run(k8s):
    body = trainjob.build_trainjob(_spec())
    other = copy.deepcopy(body)
    other["metadata"]["labels"][trainjob.RUN_LABEL] = "another-run"
    Controller(k8s).custom.create_namespaced_custom_object(
        trainjob.GROUP, trainjob.VERSION, NS, trainjob.PLURAL, other
    )
    with pytest.raises(TrainJobError, match="belongs to KFP run 'another-run'"):
        _launcher(k8s).run(body, start_timeout_s=30, timeout_s=30)


def test_canceling_the_kfp_task_deletes_the_trainjob(k8s):
    body = trainjob.build_trainjob(_spec())
    name = body["metadata"]["name"]
    ctl = Controller(k8s)
    old = signal.getsignal(signal.SIGTERM)
    trainjob.install_sigterm_handler()

    def argo_stops_the_pod():
        ctl.wait_created(name)
        ctl.pod(name, 0, "Running", {"running": {}}, ready=True)
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    try:
        t = _in_thread(argo_stops_the_pod)
        with pytest.raises(trainjob.TrainJobCancelled):
            _launcher(k8s).run(body, start_timeout_s=30, timeout_s=30)
        t.join(5)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert not ctl.exists(name)


def test_a_trainjob_that_never_starts_is_deleted_and_says_why(k8s):
    body = trainjob.build_trainjob(_spec())
    name = body["metadata"]["name"]
    ctl = Controller(k8s)

    def controller():
        ctl.wait_created(name)
        ctl.pod(
            name, 0, "Pending",
            {"waiting": {"reason": "ImagePullBackOff",
                         "message": 'Back-off pulling image "registry.example/commit-mlops:0.1.0"'}},
        )  # fmt: skip

    t = _in_thread(controller)
    with pytest.raises(TrainJobError) as err:
        _launcher(k8s).run(body, start_timeout_s=0.3, timeout_s=30)
    t.join(5)
    msg = str(err.value)
    assert name in msg and "did not start within" in msg
    assert "ImagePullBackOff" in msg and "registry.example/commit-mlops:0.1.0" in msg
    assert not ctl.exists(name)


def test_the_launcher_needs_only_the_rbac_rules_it_declares(k8s):
    """Every request the launcher made (create, re-attach, fail, delete) is allowed by
    PIPELINE_RUNNER_RULES, which k8s/ grants the pipeline runner."""
    test_a_retry_after_a_failed_attempt_recreates_the_trainjob(k8s)
    body = trainjob.build_trainjob(_spec(name="commit-other-run"))
    ctl = Controller(k8s)

    def controller():
        ctl.wait_created("commit-other-run")
        pod = ctl.pod("commit-other-run", 0, "Failed", {"terminated": {"exitCode": 1}})
        k8s.serve_log(NS, pod, "boom\n")
        ctl.condition("commit-other-run", "Failed")

    t = _in_thread(controller)
    with pytest.raises(TrainJobError):
        _launcher(k8s).run(body, start_timeout_s=30, timeout_s=30)
    t.join(5)

    verbs = {"CREATE": "create", "FETCH": "get", "LIST": "list", "WATCH": "watch",
             "DELETE": "delete", "UPDATE": "patch"}  # fmt: skip
    allowed = {
        (g, res, v)
        for rule in trainjob.PIPELINE_RUNNER_RULES
        for g in rule["apiGroups"]
        for res in rule["resources"]
        for v in rule["verbs"]
    }
    used = set()
    for r in k8s.requests():
        if r.headers.get("User-Agent") != "commit-launcher":
            continue
        resource = r.resource.plural + (f"/{r.subresource}" if r.subresource else "")
        used.add((r.resource.group or "", resource, verbs[r.action.name]))
    assert used <= allowed, used - allowed
    assert ("", "pods/log", "get") in used and (trainjob.GROUP, "trainjobs", "delete") in used


# ------------------------------------------------------------- launch, end to end


def test_launch_publishes_the_dataset_and_runs_the_trainjob_of_the_task(k8s, s3, tmp_path):
    """What the component does: the staged dataset (here on KFP's own store, so only a
    local copy is readable) goes next to the run on S3, and the TrainJob's command trains
    from it into <checkpoint_root>/<run>/<task>, resuming."""
    from pipelines.commit_pipeline import recipe_parameter

    root = Path(__file__).resolve().parents[2]
    recipe = recipe_parameter((root / "recipes" / "builtin_vision.yaml").read_text())
    staged = tmp_path / "dataset"
    staged.mkdir()
    (staged / "train.jsonl").write_text('{"id": "a"}\n')
    (staged / "val.jsonl").write_text('{"id": "b"}\n')
    name = trainjob.trainjob_name(RUN_ID, "train-distributed")
    ctl = Controller(k8s)

    def controller():
        ctl.wait_created(name)
        ctl.pod(name, 0, "Running", {"running": {}}, ready=True)
        ctl.condition(name, "Complete")

    t = _in_thread(controller)
    uri = trainjob.launch(
        recipe=recipe, overrides=["train.steps=40"], method="commit",
        dataset_uri="minio://mlpipeline/v2/artifacts/x/dataset", dataset_path=str(staged),
        checkpoint_root=s3.uri("checkpoints"), run_id=RUN_ID, task="train-distributed",
        num_nodes=3, procs_per_node=4, task_config=TASK_CONFIG,
        image="registry.example/commit-mlops:0.1.0", launcher=_launcher(k8s),
    )  # fmt: skip
    t.join(5)
    assert uri == s3.uri("checkpoints", RUN_ID, "train-distributed")
    assert {"checkpoints/" + f"{RUN_ID}/train-distributed/data/{f}" for f in
            ("train.jsonl", "val.jsonl")} <= set(s3.keys("checkpoints/"))  # fmt: skip
    job = ctl.wait_created(name)
    tr = job["spec"]["trainer"]
    assert tr["numNodes"] == 3 and tr["numProcPerNode"] == 4
    assert tr["resourcesPerNode"] == TASK_CONFIG["resources"]
    assert tr["args"] == [
        "train.steps=40", "tracking.uri=", "method=commit",
        f"data.train={uri}/data/train.jsonl", f"data.val={uri}/data/val.jsonl", "data.root=",
        "--output-dir", uri, "--resume",
    ]  # fmt: skip
    env = {e["name"]: e for e in tr["env"]}
    assert env["COMMIT_RECIPE"]["value"] == recipe
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]  # a secretKeyRef, not the test's key
    assert job["metadata"]["labels"][trainjob.RUN_LABEL] == RUN_ID
