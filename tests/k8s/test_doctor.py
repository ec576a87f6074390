"""``commit k8s doctor`` against an in-memory Kubernetes API (kmock) on loopback.

A healthy cluster is built from the names in pipelines/platform.py; each broken-cluster test
removes or changes one object and checks that the doctor names it and exits non-zero.
"""

from __future__ import annotations

import base64
import time

from commit_train import cli as commit_cli
from pipelines import doctor, platform

KFP, STACK = platform.KFP_NAMESPACE, platform.STACK_NAMESPACE


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _secret(name: str, keys, value: str = "x") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: _b64(value) for k in keys},
    }


def _proxy(ns: str, service: tuple[str, int], path: str) -> str:
    return f"/api/v1/namespaces/{ns}/services/{service[0]}:{service[1]}/proxy/{path}"


def healthy(
    emu, *, gpus: int = 1, kfp: bool = True, mlflow: bool = True, namespaces=(KFP, STACK)
) -> None:
    for ns in namespaces:
        # kmock parses /api/v1/namespaces/NAME as "namespace NAME", not as the Namespace
        # object, so the object is served as a fixed answer.
        emu.route(
            f"/api/v1/namespaces/{ns}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        )
    emu.put("v1/secrets", KFP, _secret(platform.S3_SECRET, platform.S3_SECRET_KEYS))
    emu.put("v1/secrets", STACK, _secret(platform.S3_SECRET, platform.S3_SECRET_KEYS))
    emu.put("v1/secrets", STACK, _secret(platform.POSTGRES_SECRET, platform.POSTGRES_SECRET_KEYS))
    emu.put(
        "v1/configmaps",
        KFP,
        {
            "metadata": {"name": platform.CONFIG_MAP},
            "data": {k: "http://x" for k in platform.CONFIG_KEYS},
        },
    )
    emu.put(
        "v1/persistentvolumeclaims",
        STACK,
        {
            "metadata": {"name": platform.POSTGRES_PVC},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "standard"},
            "status": {"phase": "Bound"},
        },
    )
    emu.put(
        "v1/pods",
        STACK,
        {
            "metadata": {"name": "mlflow-abc"},
            "status": {
                "containerStatuses": [
                    {
                        "name": "mlflow",
                        "image": platform.MLFLOW_SERVER_IMAGE,
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {}},
                    }
                ]
            },
        },
    )
    emu.put(
        "apps/v1/deployments",
        STACK,
        {
            "metadata": {"name": platform.MLFLOW_DEPLOYMENT},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {"readyReplicas": 1},
        },
    )
    emu.put(
        "apps/v1/statefulsets",
        STACK,
        {
            "metadata": {"name": platform.POSTGRES_STATEFULSET},
            "spec": {"replicas": 1, "selector": {}, "template": {}, "serviceName": "postgres"},
            "status": {"readyReplicas": 1, "replicas": 1},
        },
    )
    emu.put(
        "batch/v1/jobs",
        STACK,
        {
            "metadata": {"name": platform.BUCKET_JOB},
            "spec": {"template": {}},
            "status": {"succeeded": 1},
        },
    )
    emu.put(
        "v1/nodes",
        None,
        {
            "metadata": {"name": "node-a"},
            "status": {
                "allocatable": {"cpu": "8", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
            },
        },
    )
    emu.put(
        "apiextensions.k8s.io/v1/customresourcedefinitions",
        None,
        {
            "metadata": {"name": doctor.TRAINER_CRD},
            "spec": {
                "group": "trainer.kubeflow.org",
                "names": {"plural": "clustertrainingruntimes", "kind": "ClusterTrainingRuntime"},
                "scope": "Cluster",
                "versions": [],
            },
        },
    )
    emu.put(
        "trainer.kubeflow.org/v1alpha1/clustertrainingruntimes",
        None,
        {"metadata": {"name": platform.TRAINING_RUNTIME}, "spec": {}},
    )
    if mlflow:
        emu.route(_proxy(STACK, platform.MLFLOW_SERVICE, "health"), b"OK")
        emu.route(
            _proxy(STACK, platform.MLFLOW_SERVICE, "api/2.0/mlflow-artifacts/artifacts"),
            {"files": []},
        )
    if kfp:
        emu.route(
            _proxy(KFP, platform.KFP_API_SERVICE, "apis/v2beta1/healthz"), {"multi_user": False}
        )


def run_doctor(emu, tmp_path, capsys, *extra: str) -> tuple[int, str]:
    """The real CLI path: a kubeconfig file pointing at the emulator."""
    kubeconfig = emu.kubeconfig(tmp_path / "kubeconfig")
    code = commit_cli.main(["k8s", "doctor", "--kubeconfig", kubeconfig, "--timeout", "20", *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def lines(report: str, status: str) -> list[str]:
    tag = {"ok": "[ OK ]", "warn": "[WARN]", "fail": "[FAIL]"}[status]
    return [line for line in report.splitlines() if line.startswith(tag)]


def test_healthy_cluster_passes_every_check(k8s_emulator, tmp_path, capsys):
    healthy(k8s_emulator)
    code, report = run_doctor(k8s_emulator, tmp_path, capsys)
    assert code == 0, report
    assert lines(report, "fail") == [] and lines(report, "warn") == []
    for name in (
        f"secret {KFP}/{platform.S3_SECRET}",
        f"pvc {STACK}/{platform.POSTGRES_PVC}",
        "mlflow /health",
        "mlflow artifact store",
        "kfp api",
        "gpu nodes",
        f"trainer runtime {platform.TRAINING_RUNTIME}",
        f"job {STACK}/{platform.BUCKET_JOB}",
    ):
        assert any(line.startswith(f"[ OK ] {name}:") for line in report.splitlines()), (
            name,
            report,
        )
    assert "1 nvidia.com/gpu on node-a (1)" in report


def test_missing_secret_is_named_with_the_command_that_creates_it(k8s_emulator, tmp_path, capsys):
    healthy(k8s_emulator)
    del k8s_emulator.handler.objects["v1/secrets", KFP, platform.S3_SECRET]
    code, report = run_doctor(k8s_emulator, tmp_path, capsys)
    assert code == 1
    [failure] = lines(report, "fail")
    assert failure.startswith(f"[FAIL] secret {KFP}/{platform.S3_SECRET}: missing")
    assert "k8s/secrets/create-secrets.sh" in failure


def test_secret_without_a_key_names_the_key(k8s_emulator, tmp_path, capsys):
    healthy(k8s_emulator)
    k8s_emulator.put("v1/secrets", STACK, _secret(platform.POSTGRES_SECRET, ["POSTGRES_USER"]))
    code, report = run_doctor(k8s_emulator, tmp_path, capsys)
    assert code == 1
    [failure] = lines(report, "fail")
    assert f"secret {STACK}/{platform.POSTGRES_SECRET}" in failure
    assert "missing keys POSTGRES_PASSWORD" in failure


def test_pending_pvc_is_named_with_its_storage_class(k8s_emulator, tmp_path, capsys):
    healthy(k8s_emulator)
    k8s_emulator.put(
        "v1/persistentvolumeclaims",
        STACK,
        {
            "metadata": {"name": platform.POSTGRES_PVC},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": ""},
            "status": {"phase": "Pending"},
        },
    )
    code, report = run_doctor(k8s_emulator, tmp_path, capsys)
    assert code == 1
    [failure] = lines(report, "fail")
    assert failure.startswith(f"[FAIL] pvc {STACK}/{platform.POSTGRES_PVC}: Pending")
    assert "storageclass" in failure


def test_no_gpu_nodes_warns_and_fails_only_when_required(k8s_emulator, tmp_path, capsys):
    healthy(k8s_emulator, gpus=0)
    code, report = run_doctor(k8s_emulator, tmp_path, capsys)
    assert code == 0, report
    [warning] = lines(report, "warn")
    assert warning.startswith("[WARN] gpu nodes: no node of 1 offers nvidia.com/gpu")

    code, report = run_doctor(k8s_emulator, tmp_path, capsys, "--require-gpu")
    assert code == 1
    [failure] = lines(report, "fail")
    assert failure.startswith("[FAIL] gpu nodes:")


def test_image_pull_error_names_pod_and_image(k8s_emulator, tmp_path, capsys):
    healthy(k8s_emulator)
    k8s_emulator.put(
        "v1/pods",
        STACK,
        {
            "metadata": {"name": "mlflow-abc"},
            "status": {
                "containerStatuses": [
                    {
                        "name": "mlflow",
                        "image": "commit-mlflow-server:9.9.9",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "waiting": {"reason": "ImagePullBackOff", "message": "not found"}
                        },
                    }
                ]
            },
        },
    )
    k8s_emulator.put(
        "apps/v1/deployments",
        STACK,
        {
            "metadata": {"name": platform.MLFLOW_DEPLOYMENT},
            "spec": {"replicas": 1, "selector": {}, "template": {}},
            "status": {},
        },
    )
    code, report = run_doctor(k8s_emulator, tmp_path, capsys)
    assert code == 1
    failures = lines(report, "fail")
    assert any(
        f"pod {STACK}/mlflow-abc container mlflow" in f and "commit-mlflow-server:9.9.9" in f
        for f in failures
    ), report
    assert any(f"deployment {STACK}/mlflow: 0/1 ready" in f for f in failures), report


def test_unreachable_mlflow_and_kfp_are_named(k8s_emulator, tmp_path, capsys):
    # No service-proxy answers: the API server returns 404 as it does for a Service that
    # does not exist (KFP not installed, MLflow not applied).
    healthy(k8s_emulator, kfp=False, mlflow=False)
    code, report = run_doctor(k8s_emulator, tmp_path, capsys)
    assert code == 1
    failures = lines(report, "fail")
    assert any(
        f.startswith("[FAIL] mlflow /health: service commit-mlops/mlflow:5000 answered 404")
        for f in failures
    ), report
    assert any(f.startswith("[FAIL] mlflow artifact store:") for f in failures), report
    assert any(
        f.startswith("[FAIL] kfp api: service kubeflow/ml-pipeline:8888 answered 404")
        and "KFP 2.17" in f
        for f in failures
    ), report


def test_plain_http_urls_are_used_when_given(k8s_emulator, tmp_path, capsys):
    # --mlflow-url/--kfp-url (a port-forward): plain HTTP, not the service proxy.
    healthy(k8s_emulator, kfp=False, mlflow=False)
    k8s_emulator.route("/pf-mlflow/health", b"OK")
    k8s_emulator.route("/pf-mlflow/api/2.0/mlflow-artifacts/artifacts", {"files": []})
    k8s_emulator.route("/pf-kfp/apis/v2beta1/healthz", {"multi_user": False})
    code, report = run_doctor(
        k8s_emulator,
        tmp_path,
        capsys,
        "--mlflow-url",
        f"{k8s_emulator.url}/pf-mlflow",
        "--kfp-url",
        f"{k8s_emulator.url}/pf-kfp",
    )
    assert code == 0, report
    assert f"[ OK ] mlflow /health: {k8s_emulator.url}/pf-mlflow answers OK" in report


def test_failed_bucket_job_points_at_the_s3_settings(k8s_emulator, tmp_path, capsys):
    healthy(k8s_emulator)
    k8s_emulator.put(
        "batch/v1/jobs",
        STACK,
        {
            "metadata": {"name": platform.BUCKET_JOB},
            "spec": {"template": {}},
            "status": {"failed": 3},
        },
    )
    code, report = run_doctor(k8s_emulator, tmp_path, capsys)
    assert code == 1
    [failure] = lines(report, "fail")
    assert failure.startswith(f"[FAIL] job {STACK}/{platform.BUCKET_JOB}: not succeeded (3 failed")
    assert "AWS_ENDPOINT_URL" in failure and platform.S3_SECRET in failure


def test_trainer_not_installed_and_runtime_missing(k8s_emulator, tmp_path, capsys):
    healthy(k8s_emulator)
    objects = k8s_emulator.handler.objects
    del objects[
        "trainer.kubeflow.org/v1alpha1/clustertrainingruntimes", None, platform.TRAINING_RUNTIME
    ]
    code, report = run_doctor(k8s_emulator, tmp_path, capsys)
    assert code == 1
    [failure] = lines(report, "fail")
    assert failure.startswith(f"[FAIL] trainer runtime {platform.TRAINING_RUNTIME}: missing")

    del objects["apiextensions.k8s.io/v1/customresourcedefinitions", None, doctor.TRAINER_CRD]
    code, report = run_doctor(k8s_emulator, tmp_path, capsys)
    [failure] = lines(report, "fail")
    assert f"CRD {doctor.TRAINER_CRD} missing" in failure and "v2.3.0" in failure


def test_missing_namespace_is_named(k8s_emulator, tmp_path, capsys):
    healthy(k8s_emulator, namespaces=(KFP,))
    code, report = run_doctor(k8s_emulator, tmp_path, capsys)
    assert code == 1
    assert "[FAIL] cluster: namespace commit-mlops missing" in report


def test_unreachable_api_server_fails_fast_and_names_it(tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    start = time.monotonic()
    code = commit_cli.main(["k8s", "doctor", "--kubeconfig", str(kubeconfig), "--timeout", "20"])
    report = capsys.readouterr().out
    assert code == 1
    assert time.monotonic() - start < 20
    [failure] = lines(report, "fail")
    assert failure.startswith("[FAIL] cluster: cannot reach the Kubernetes API server")


def test_bad_kubeconfig_is_a_user_error(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    code = commit_cli.main(["k8s", "doctor", "--kubeconfig", str(missing)])
    err = capsys.readouterr().err
    assert code == doctor.DoctorError.exit_code
    assert str(missing) in err
