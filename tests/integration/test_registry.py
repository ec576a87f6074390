"""The model registry: gated champion, idempotent retries, models:/ evaluation, errors.

Most checks use a sqlite store (no server needed for registry semantics, and it is
faster); one test goes the whole way through the server and S3 with the CLI, with a fake
secret in the environment and in the tracking URI that must show up nowhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from commit_train.config import validate
from commit_train.errors import CommitError
from commit_train.local_servers import free_port, kill_group, start_moto_server
from commit_train.modeling import load_model, save_model_dir
from commit_train.registry import CHALLENGER, CHAMPION, register_run_model, resolve_model_uri
from commit_train.trainer import RECIPE_NAME
from tests.conftest import tiny_recipe_dict
from tests.integration.conftest import FAKE_AWS, commit_cli

SECRET = "wJalrXUtnFEMI-K7MDENG-FAKESECRET-0042"
URI_PASSWORD = "hunter2-uri-pw-0042"


@pytest.fixture(scope="module")
def model_dir(tiny_parts, tmp_path_factory) -> Path:
    """A real HF-format model directory as `commit train` exports it (recipe included)."""
    raw = tiny_recipe_dict(tiny_parts, tmp_path_factory.mktemp("unused"))
    raw["data"]["system_prompt"] = "answer with one word"
    mlm, proc = load_model(validate(raw).model)
    out = tmp_path_factory.mktemp("m") / "model"
    return save_model_dir(mlm, proc, out, {RECIPE_NAME: yaml.safe_dump(raw)})


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMMIT_CACHE", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _run_with_model(client: MlflowClient, model_dir: Path, metrics: dict[str, float]) -> str:
    exp = client.get_experiment_by_name("reg") or client.get_experiment(
        client.create_experiment("reg")
    )
    run = client.create_run(exp.experiment_id, tags={"method": "commit"})
    rid = run.info.run_id
    client.log_artifacts(rid, str(model_dir), "model")
    for k, v in metrics.items():
        client.log_metric(rid, k, v, step=0)
    client.set_terminated(rid)
    return rid


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def test_gate_moves_champion_only_when_better_and_retries_are_idempotent(store, model_dir):
    client = MlflowClient(store)
    gate = "eval/vision/accuracy"
    a = _run_with_model(client, model_dir, {gate: 0.50})
    worse = _run_with_model(client, model_dir, {gate: 0.40})
    better = _run_with_model(client, model_dir, {gate: 0.90})

    r1 = register_run_model(a, "vqa", gate=gate)
    assert (r1.version, r1.created, r1.champion) == ("1", True, True)  # first: champion
    again = register_run_model(a, "vqa", gate=gate)  # a retried pipeline step
    assert (again.version, again.created) == ("1", False)
    assert len(client.search_model_versions("name = 'vqa'")) == 1

    r2 = register_run_model(worse, "vqa", gate=gate)
    assert (r2.version, r2.champion, r2.previous_value) == ("2", False, 0.5)
    assert _aliases(client, "vqa") == {CHAMPION: "1", CHALLENGER: "2"}

    r3 = register_run_model(better, "vqa", gate=gate)
    assert r3.champion and _aliases(client, "vqa") == {CHAMPION: "3", CHALLENGER: "3"}
    assert len(client.search_model_versions("name = 'vqa'")) == 3
    v3 = client.get_model_version("vqa", "3")
    assert v3.run_id == better and v3.source.endswith("/model") and v3.tags[gate] == "0.9"

    # lower-is-better (e.g. WER): 0.4 beats 0.5
    register_run_model(a, "asr", gate=gate, higher_is_better=False)
    r = register_run_model(worse, "asr", gate=gate, higher_is_better=False)
    assert r.champion and _aliases(client, "asr")[CHAMPION] == "2"


def test_gate_metric_missing_lists_what_the_run_has(store, model_dir):
    client = MlflowClient(store)
    rid = _run_with_model(client, model_dir, {"eval/vision/accuracy": 0.5, "loss/val": 1.0})
    with pytest.raises(CommitError) as e:
        register_run_model(rid, "m", gate="eval/vision/bleu4")
    assert "eval/vision/bleu4" in str(e.value) and "eval/vision/accuracy" in str(e.value)
    assert "loss/val" not in str(e.value)


def test_models_uri_resolves_to_cached_dir_and_unknown_names_are_clear(store, model_dir):
    client = MlflowClient(store)
    rid = _run_with_model(client, model_dir, {})
    register_run_model(rid, "cached")
    local = resolve_model_uri("models:/cached@champion")
    assert (local / "model.safetensors").is_file() and (local / RECIPE_NAME).is_file()
    assert resolve_model_uri("models:/cached/1") == local  # same version, same cache entry
    with pytest.raises(CommitError, match=r"no registered model named 'nope'.*cached"):
        resolve_model_uri("models:/nope@champion")
    with pytest.raises(CommitError, match=r"no alias 'prod'.*champion"):
        resolve_model_uri("models:/cached@prod")
    assert resolve_model_uri("/some/dir") == Path("/some/dir")


def test_unreachable_or_mistyped_tracking_uri(store):
    port = free_port()  # nothing listens there
    res = commit_cli(
        "register",
        "--run",
        "0" * 32,
        "--name",
        "m",
        env_extra={"MLFLOW_TRACKING_URI": f"http://admin:{URI_PASSWORD}@127.0.0.1:{port}"},
        timeout=60,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "cannot reach the MLflow tracking server" in res.stderr
    assert "MLFLOW_TRACKING_URI" in res.stderr and URI_PASSWORD not in res.stderr + res.stdout
    res = commit_cli("runs", "compare", "--experiment", "x", "--tracking-uri", "htp://host:5000")
    assert res.returncode == 2 and "unknown scheme 'htp'" in res.stderr


def _s3_run(tmp_path: Path, endpoint: str, model_dir: Path) -> tuple[str, str]:
    """A run in a sqlite store whose artifacts live directly in S3 (no proxying server)."""
    uri = f"sqlite:///{tmp_path}/s3.db"
    env = dict(os.environ, MLFLOW_S3_ENDPOINT_URL=endpoint, **FAKE_AWS)
    code = (
        "import sys; from mlflow.tracking import MlflowClient as C; c = C(sys.argv[1]); "
        "e = c.create_experiment('s3', artifact_location='s3://commit-artifacts/direct'); "
        "r = c.create_run(e).info.run_id; c.log_artifacts(r, sys.argv[2], 'model'); "
        "c.log_metric(r, 'eval/val/accuracy', 0.5); print(r)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, uri, str(model_dir)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return uri, out.stdout.strip().splitlines()[-1]


def test_missing_and_rejected_s3_credentials_say_what_to_set(s3_server, model_dir, tmp_path):
    uri, rid = _s3_run(tmp_path, s3_server.endpoint, model_dir)
    no_creds = {
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    res = commit_cli("register", "--run", rid, "--name", "s3m", env_extra=no_creds, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "no S3 credentials" in res.stderr and "AWS_SECRET_ACCESS_KEY" in res.stderr

    # a moto server that checks keys: an unknown key pair is rejected
    port = free_port()
    proc = start_moto_server(
        port, tmp_path / "moto-auth.log", env_extra={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    )
    try:
        wrong = dict(
            no_creds,
            MLFLOW_S3_ENDPOINT_URL=f"http://127.0.0.1:{port}",
            AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG0",
            AWS_SECRET_ACCESS_KEY=SECRET,
        )
        res = commit_cli("register", "--run", rid, "--name", "s3m", env_extra=wrong, timeout=120)
    finally:
        kill_group(proc)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "rejected the credentials" in res.stderr and "AWS_ACCESS_KEY_ID" in res.stderr
    assert SECRET not in res.stderr + res.stdout


@pytest.mark.slow
def test_register_and_evaluate_champion_through_server_and_s3(
    tiny_parts, tmp_path, mlflow_server, s3_server
):
    """Train -> evaluate into the run -> register (gated) -> evaluate models:/m@champion,
    all via the CLI against the server, with a fake secret that must leak nowhere."""
    host = mlflow_server.uri.replace("http://", f"http://ops:{URI_PASSWORD}@")
    env = {"MLFLOW_TRACKING_URI": host, "AWS_SECRET_ACCESS_KEY": SECRET}
    env["COMMIT_CACHE"] = str(tmp_path / "cache")
    recipe = tiny_recipe_dict(tiny_parts, tmp_path / "run", steps=2, eval_every=0, save_every=0)
    recipe["tracking"] = {"experiment": "registry-e2e", "uri": host}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    outputs = []

    def cli(*args):
        res = commit_cli(*args, env_extra=env, cwd=tmp_path)
        outputs.append(res.stdout + res.stderr)
        assert res.returncode == 0, res.stderr[-3000:]
        return res

    cli("train", str(tmp_path / "r.yaml"))
    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("registry-e2e")
    (run,) = client.search_runs([exp.experiment_id])
    rid = run.info.run_id
    val = str(tiny_parts["val"])
    common = ("--benchmark", val, "--split", "val", "--batch-size", "8", "--max-new-tokens", "3")
    cli("evaluate", "--model", str(tmp_path / "run" / "model"), *common, "--run-id", rid)
    out = cli("register", "--run", rid, "--name", "e2e", "--gate", "eval/val/accuracy").stdout
    assert "alias champion: version 1" in out
    again = register_run_model(rid, "e2e", gate="eval/val/accuracy", tracking_uri=host)
    assert not again.created and again.version == "1"  # a retried step reuses the version
    assert len(client.search_model_versions("name = 'e2e'")) == 1

    res = cli("evaluate", "--model", "models:/e2e@champion", *common, "--no-tracking")
    assert "val/val: 16 examples" in res.stdout
    # the version carries the model and the eval report, as objects in the bucket
    prefix = f"mlartifacts/{exp.experiment_id}/{rid}/artifacts/model/"
    names = {k[len(prefix) :] for k in s3_server.keys(prefix)}
    assert {"model.safetensors", RECIPE_NAME, "eval/val/report.md"} <= names, names
    cached = list((tmp_path / "cache" / "registry").rglob("model.safetensors"))
    assert len(cached) == 1

    # the secrets: nowhere in output, params, tags, version tags, server log or the cache
    run = client.get_run(rid)
    haystack = "\n".join(outputs) + json.dumps(run.data.params) + json.dumps(run.data.tags)
    haystack += json.dumps([dict(v.tags) for v in client.search_model_versions("name='e2e'")])
    haystack += mlflow_server.log.read_text()
    haystack += "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    assert run.data.params["tracking.uri"].startswith("http://***@")
    for secret in (SECRET, URI_PASSWORD):
        assert secret not in haystack
