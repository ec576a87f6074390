"""The committed IR is what `commit pipeline compile` makes now, and a bad recipe never
compiles."""

import pytest
import yaml

from commit_train.errors import CommitError
from pipelines import commit_pipeline as cp
from pipelines import platform
from pipelines.commands import compile_pipeline


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, request):
    mp = pytest.MonkeyPatch()
    mp.delenv("COMMIT_IMAGE", raising=False)  # the committed file carries the pinned tag
    request.addfinalizer(mp.undo)
    return compile_pipeline(tmp_path_factory.mktemp("ir") / "commit_pipeline.yaml")


def test_committed_pipeline_is_not_stale(fresh):
    assert fresh.read_text() == cp.COMPILED.read_text(), (
        "pipelines/compiled/commit_pipeline.yaml is stale: run "
        "`env -u COMMIT_IMAGE .venv/bin/commit pipeline compile` and commit it"
    )


def test_compiled_ir_has_the_dag_and_platform_settings(fresh):
    docs = list(yaml.safe_load_all(fresh.read_text()))
    spec, platform_spec = docs[0], docs[1]
    tasks = spec["root"]["dag"]["tasks"]
    assert "exit-handler-1" in tasks and "close-runs" in tasks
    inner = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert {"stage-data", "train"} <= set(inner)
    assert any(t.get("parameterIterator") for t in inner.values())  # ParallelFor evaluate
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {platform.component_image()}
    train_k8s = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-train"
    ]
    secret_names = {s["secretName"] for s in train_k8s["secretAsEnv"]}
    assert platform.S3_SECRET in secret_names
    # credentials come from Secrets, never from pipeline parameters
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert not any("secret" in p.lower() or "password" in p.lower() for p in params)
    assert int(train_k8s["securityContext"]["runAsUser"]) == platform.RUN_AS_USER  # int64: str


def test_bad_recipe_key_fails_at_compile_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(cp.DEFAULT_RECIPE.read_text().replace("  batch_size: 8\n", "  batch_sise: 8\n"))
    with pytest.raises(CommitError, match="batch_sise"):
        compile_pipeline(tmp_path / "out.yaml", recipe=bad)
    assert not (tmp_path / "out.yaml").exists()
