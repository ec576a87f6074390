"""Offline checks of k8s/: every overlay renders with `kubectl kustomize` (no remote bases),
validates against Kubernetes 1.31 schemas (--strict; the Trainer CRD through its own models),
and follows the project rules: pinned images, probes and limits, Pod Security "restricted" on
every pod template, NetworkPolicies that select the workloads they claim, names equal to
pipelines/platform.py, and lint-clean scripts.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines import platform, trainjob

K8S = Path(__file__).resolve().parents[2] / "k8s"
OVERLAYS = ("kind", "production", "standalone")
K8S_VERSION = "1.31.0"
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SCRIPTS = sorted(p for p in K8S.rglob("*.sh"))


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is required to render k8s/overlays (it ships with the machine image)")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def pod_templates(obj: dict) -> list[tuple[str, dict]]:
    """(label, pod template) of every workload kind we ship, the Trainer runtime included."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    if kind in ("Deployment", "StatefulSet", "Job"):
        return [(f"{kind}/{name}", obj["spec"]["template"])]
    if kind == "ClusterTrainingRuntime":
        return [
            (f"{kind}/{name}/{rj['name']}", rj["template"]["spec"]["template"])
            for rj in obj["spec"]["template"]["spec"]["replicatedJobs"]
        ]
    return []


def test_overlays_have_no_remote_bases():
    for kust in K8S.rglob("kustomization.yaml"):
        doc = yaml.safe_load(kust.read_text())
        for entry in doc.get("resources", []) + doc.get("components", []):
            assert "://" not in entry and not entry.startswith("github.com"), (kust, entry)


def test_every_object_validates_strictly(rendered):
    import kubernetes_validate
    from kubeflow_trainer_api import models

    _, objs = rendered
    for obj in objs:
        if obj["apiVersion"] == platform.TRAINER_API_VERSION:
            model = getattr(models, f"TrainerV1alpha1{obj['kind']}")
            # the models drop unknown fields silently: a round trip must keep everything
            assert model.from_dict(obj).to_dict() == obj, obj["metadata"]["name"]
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_strict_validation_rejects_a_misspelt_field():
    import kubernetes_validate

    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"selectr": {"a": "b"}, "ports": [{"port": 1}]},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_pod_templates_meet_restricted_and_project_rules(rendered):
    _, objs = rendered
    checked = 0
    for obj in objs:
        for label, tpl in pod_templates(obj):
            checked += 1
            spec = tpl["spec"]
            psc = spec.get("securityContext", {})
            for key in ("hostNetwork", "hostPID", "hostIPC"):
                assert not spec.get(key), (label, key)
            for vol in spec.get("volumes", []):
                assert set(vol) - {"name"} <= ALLOWED_VOLUMES, (label, vol)
            long_running = obj["kind"] in ("Deployment", "StatefulSet")
            containers = [(c, False) for c in spec.get("initContainers", [])]
            containers += [(c, long_running) for c in spec["containers"]]
            for c, needs_probes in containers:
                where = f"{label}/{c['name']}"
                sc = c.get("securityContext", {})
                assert sc.get("allowPrivilegeEscalation") is False, where
                assert not sc.get("privileged"), where
                assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
                assert set(sc.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, where
                assert (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) is True, where
                assert sc.get("runAsUser", psc.get("runAsUser", 1)) != 0, where
                seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
                assert seccomp in ("RuntimeDefault", "Localhost"), where
                assert sc.get("readOnlyRootFilesystem") is True, where
                image = c["image"]
                tag = image.rsplit("/", 1)[-1]
                assert "@sha256:" in image or (":" in tag and not tag.endswith(":latest")), where
                res = c.get("resources", {})
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(res.get(part, {})), (where, part)
                if needs_probes:
                    assert "readinessProbe" in c and "livenessProbe" in c, where
    assert checked >= 3


def test_stack_namespace_enforces_restricted(rendered):
    _, objs = rendered
    [ns] = [o for o in objs if o["kind"] == "Namespace"]
    assert ns["metadata"]["name"] == platform.STACK_NAMESPACE
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def _selects(selector: dict, labels: dict) -> bool:
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        op, key, values = expr["operator"], expr["key"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


#: Pods not rendered here, with the labels their owners give them.
EXTERNAL_PODS = {
    # KFP's backend labels every v2 task pod (backend/src/v2/compiler/argocompiler).
    ("kubeflow", "pipeline-pods"): {"pipelines.kubeflow.org/v2_component": "true"},
    # KFP's third-party/seaweedfs Deployment.
    ("kubeflow", "seaweedfs"): {"app": "seaweedfs", "application-crd-id": "kubeflow-pipelines"},
    ("kube-system", "kube-dns"): {"k8s-app": "kube-dns"},
}


def test_network_policies_select_the_pods_they_claim(rendered):
    overlay, objs = rendered
    pods: dict[tuple[str, str], dict] = dict(EXTERNAL_PODS)
    for obj in objs:
        for label, tpl in pod_templates(obj):
            ns = obj["metadata"].get("namespace", platform.KFP_NAMESPACE)  # TrainJobs run in KFP's
            name = tpl["metadata"]["labels"].get("app.kubernetes.io/name", label)
            pods[ns, name] = tpl["metadata"]["labels"]
    # Training pods come from our runtime component even where an overlay does not render it
    # (standalone: admitted for a KFP installed later).
    runtime = yaml.safe_load(
        (K8S / "components/trainer-runtime/cluster-training-runtime.yaml").read_text()
    )
    for label, tpl in pod_templates(runtime):
        pods.setdefault((platform.KFP_NAMESPACE, label), tpl["metadata"]["labels"])
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    assert policies
    for pol in policies:
        ns, pname = pol["metadata"]["namespace"], pol["metadata"]["name"]
        claim = pol["metadata"]["annotations"]["commit-mlops.io/selects"]
        selected = {
            n
            for (pns, n), lab in pods.items()
            if pns == ns and _selects(pol["spec"]["podSelector"], lab)
        }
        if claim == "*":
            assert pol["spec"]["podSelector"] == {}, pname
        else:
            claimed = {c.split("/")[-1] for c in claim.split(",")}
            assert selected == claimed, (overlay, pname, selected, claimed)
        for rule in pol["spec"].get("ingress", []) + pol["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "ipBlock" in peer:
                    continue
                peer_ns = (
                    peer.get("namespaceSelector", {})
                    .get("matchLabels", {})
                    .get("kubernetes.io/metadata.name", ns)
                )
                matched = [
                    n
                    for (pns, n), lab in pods.items()
                    if pns == peer_ns and _selects(peer.get("podSelector", {}), lab)
                ]
                assert matched, (overlay, pname, peer)


def _grants(rules) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_names_match_the_pipeline_platform(rendered):
    overlay, objs = rendered
    by_key = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objs}
    stack_cm = by_key["ConfigMap", platform.STACK_NAMESPACE, platform.CONFIG_MAP]["data"]
    assert stack_cm["S3_BUCKET"] == platform.BUCKET
    if overlay != "standalone":
        kfp_cm = by_key["ConfigMap", platform.KFP_NAMESPACE, platform.CONFIG_MAP]["data"]
        assert set(kfp_cm) == set(platform.CONFIG_KEYS)
        assert kfp_cm["MLFLOW_TRACKING_URI"] == platform.MLFLOW_SERVICE_URL
        for key in platform.CONFIG_KEYS:
            assert kfp_cm[key] == stack_cm[key], key
        role = by_key["RoleBinding", platform.KFP_NAMESPACE, "commit-trainjob-launcher"]
        assert role["subjects"][0]["name"] == platform.PIPELINE_SERVICE_ACCOUNT
        # least privilege: the Role grants what the launcher uses, nothing more
        rules = by_key["Role", platform.KFP_NAMESPACE, role["roleRef"]["name"]]["rules"]
        assert _grants(rules) == _grants(trainjob.PIPELINE_RUNNER_RULES)
        assert ("ClusterTrainingRuntime", None, platform.TRAINING_RUNTIME) in by_key
    svc = by_key["Service", platform.STACK_NAMESPACE, platform.MLFLOW_SERVICE[0]]
    assert svc["spec"]["ports"][0]["port"] == platform.MLFLOW_SERVICE[1]
    for kind, name in (
        ("Deployment", platform.MLFLOW_DEPLOYMENT),
        ("StatefulSet", platform.POSTGRES_STATEFULSET),
        ("Job", platform.BUCKET_JOB),
    ):
        assert (kind, platform.STACK_NAMESPACE, name) in by_key
    sts = by_key["StatefulSet", platform.STACK_NAMESPACE, platform.POSTGRES_STATEFULSET]
    assert (
        f"{sts['spec']['volumeClaimTemplates'][0]['metadata']['name']}-postgres-0"
        == platform.POSTGRES_PVC
    )
    # every secret key referenced by a pod exists in a template with that name and namespace
    templates = {}
    for path in (K8S / "secrets").glob("*.template.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            templates[doc["metadata"]["namespace"], doc["metadata"]["name"]] = set(
                doc["stringData"]
            )
    for obj in objs:
        for label, tpl in pod_templates(obj):
            ns = obj["metadata"].get("namespace", platform.KFP_NAMESPACE)
            for c in tpl["spec"]["containers"] + tpl["spec"].get("initContainers", []):
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["key"] in templates[ns, ref["name"]], (label, ref)


def test_secret_templates_hold_no_secret_and_use_platform_keys():
    templates = {}
    for path in (K8S / "secrets").glob("*.template.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert set(doc["stringData"].values()) == {"REPLACE_ME"}, path
            assert "data" not in doc, path
            templates[doc["metadata"]["namespace"], doc["metadata"]["name"]] = tuple(
                doc["stringData"]
            )
    assert templates[platform.KFP_NAMESPACE, platform.S3_SECRET] == platform.S3_SECRET_KEYS
    assert templates[platform.STACK_NAMESPACE, platform.S3_SECRET] == platform.S3_SECRET_KEYS
    assert templates[platform.KFP_NAMESPACE, platform.MLFLOW_SECRET] == platform.MLFLOW_SECRET_KEYS
    assert (
        templates[platform.STACK_NAMESPACE, platform.POSTGRES_SECRET]
        == platform.POSTGRES_SECRET_KEYS
    )


def test_compiled_pipeline_uses_the_names_the_manifests_create():
    compiled = K8S.parent / "pipelines" / "compiled" / "commit_pipeline.yaml"
    if not compiled.exists():
        pytest.fail(f"{compiled} is missing: run `commit pipeline compile` (it is committed)")
    docs = [d for d in yaml.safe_load_all(compiled.read_text()) if d]
    platform_doc = next((d for d in docs if "platforms" in d), None)
    assert platform_doc is not None, "the compiled pipeline has no kubernetes platform spec"
    executors = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    secrets = {
        (
            s.get("secretName")
            or s.get("secretNameParameter", {}).get("runtimeValue", {}).get("constant")
        ): {k["secretKey"] for k in s.get("keyToEnv", [])}
        for ex in executors.values()
        for s in ex.get("secretAsEnv", [])
    }
    maps = {
        (
            c.get("configMapName")
            or c.get("configMapNameParameter", {}).get("runtimeValue", {}).get("constant")
        ): {k["configMapKey"] for k in c.get("keyToEnv", [])}
        for ex in executors.values()
        for c in ex.get("configMapAsEnv", [])
    }
    templates = {}
    for path in (K8S / "secrets").glob("*.template.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["metadata"]["namespace"] == platform.KFP_NAMESPACE:
                templates[doc["metadata"]["name"]] = set(doc["stringData"])
    assert secrets, "no secretAsEnv in the compiled pipeline"
    for name, keys in secrets.items():
        assert name in templates and keys <= templates[name], (name, keys)
    kfp_cm = set(yaml.safe_load((K8S / "components/kfp-access/config.yaml").read_text())["data"])
    for name, keys in maps.items():
        assert name == platform.CONFIG_MAP and keys <= kfp_cm, (name, keys)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(K8S)))
def test_scripts_parse_and_are_shellcheck_clean(script):
    assert (
        subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=30).returncode == 0
    )
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (CI: apt-get install -y shellcheck)")
    out = subprocess.run(
        [shellcheck, "-x", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=script.parent,
    )
    assert out.returncode == 0, out.stdout


def test_create_secrets_refuses_unknown_arguments_and_names_the_step(tmp_path):
    out = subprocess.run(
        ["bash", str(K8S / "secrets" / "create-secrets.sh"), "--bogus"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0
    assert "unknown argument '--bogus'" in out.stderr and "FAILED in step" in out.stderr
