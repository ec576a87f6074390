# ruff: noqa: F811  (pytest fixtures imported by name, then requested as arguments)
"""`commit pipeline submit|schedule|runs|wait` through the real kfp.Client and a fake KFP API.

The fake (tests/pipelines/fake_kfp.py) speaks the v2beta1 wire format; the tests assert
what the client really sent: the uploaded package with its platform spec (Secrets by
name), run parameters (no secrets), cron/no_catchup/max_concurrency of a schedule.
"""

import json
import socket
from pathlib import Path

import pytest
import yaml

from commit_train.cli import main
from pipelines import platform

# fixtures come from fake_kfp (not a conftest shared with the other pipeline tests)
from tests.pipelines.fake_kfp import FakeKfp, fake_kfp, kfp_env  # noqa: F401

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "builtin_vision.yaml"


def _compile(path: Path, name: str = "commit-pipeline") -> Path:
    from kfp import compiler, dsl, kubernetes

    @dsl.component(base_image="python:3.11-slim")
    def fit(recipe: str, method: str, overrides: list, benchmarks: list, note: str) -> str:
        return method

    @dsl.pipeline(name=name)
    def commit_pipeline(
        recipe: str,
        method: str = "constant",
        overrides: list = [],  # noqa: B006 (a KFP default, not a Python one)
        benchmarks: list = [],  # noqa: B006
        note: str = "",
    ):
        task = fit(
            recipe=recipe, method=method, overrides=overrides, benchmarks=benchmarks, note=note
        )
        kubernetes.use_secret_as_env(
            task,
            secret_name=platform.S3_SECRET,
            secret_key_to_env={k: k for k in platform.S3_SECRET_KEYS},
        )

    compiler.Compiler().compile(commit_pipeline, str(path))
    return path


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return _compile(tmp_path_factory.mktemp("pkg") / "commit_pipeline.yaml")


def _recipe_param() -> str:
    from pipelines.commit_pipeline import recipe_parameter

    return recipe_parameter(RECIPE.read_text())


def _cli(*argv: str) -> int:
    return main(["pipeline", *argv])


def _submit(fake: FakeKfp, package: Path, *extra: str) -> int:
    return _cli(
        "submit", "--host", fake.url, "--package", str(package), "--recipe", str(RECIPE), *extra
    )


# ------------------------------------------------------------------------------ submit


def test_submit_uploads_pipeline_and_runs_it_with_the_cli_parameters(fake_kfp, package, capsys):
    rc = _submit(fake_kfp, package, "--method", "commit", "--benchmark", "vision", "train.steps=5")
    assert rc == 0, capsys.readouterr().err

    seq = [(r.method, r.path.removeprefix("/apis/v2beta1")) for r in fake_kfp.requests]
    assert seq[0] == ("GET", "/healthz")
    assert ("POST", "/experiments") in seq  # the default experiment is created once
    assert seq[-1] == ("POST", "/runs")

    (exp,) = fake_kfp.experiments.values()
    assert exp["display_name"] == "commit-mlops"
    upload = fake_kfp.calls("POST", "/pipelines/upload")[0]
    assert upload.query["name"] == "commit-pipeline"
    assert upload.files["uploadfile"] == package.read_bytes()
    # the platform spec travels with the package: Secrets by name, values never
    platform_doc = list(yaml.safe_load_all(upload.files["uploadfile"]))[1]
    (executor,) = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    (secret_env,) = executor["secretAsEnv"]
    assert secret_env["secretName"] == platform.S3_SECRET
    assert {m["envVar"] for m in secret_env["keyToEnv"]} == set(platform.S3_SECRET_KEYS)

    body = fake_kfp.calls("POST", "/runs")[0].body
    (pid,) = fake_kfp.pipelines
    (version,) = fake_kfp.versions[pid]
    assert body["experiment_id"] == exp["experiment_id"]
    assert body["pipeline_version_reference"] == {
        "pipeline_id": pid,
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert body["runtime_config"]["parameters"] == {
        "recipe": _recipe_param(),
        "method": "commit",
        "overrides": ["train.steps=5"],
        "benchmarks": ["vision"],
    }
    (run_id,) = fake_kfp.runs
    assert f"{fake_kfp.url}/#/runs/details/{run_id}" in capsys.readouterr().out


def test_submit_reuses_an_unchanged_version_and_versions_a_changed_package(
    fake_kfp, package, tmp_path
):
    assert _submit(fake_kfp, package) == 0
    assert _submit(fake_kfp, package) == 0
    assert len(fake_kfp.calls("POST", "/pipelines/upload")) == 1
    assert fake_kfp.calls("POST", "/pipelines/upload_version") == []  # same bytes: reused
    assert len(fake_kfp.runs) == 2

    changed = _compile(tmp_path / "changed.yaml")
    changed.write_text(changed.read_text() + "# rebuilt\n")
    assert _submit(fake_kfp, changed) == 0
    (up,) = fake_kfp.calls("POST", "/pipelines/upload_version")
    (pid,) = fake_kfp.pipelines
    assert up.query["pipelineid"] == pid
    assert up.query["name"].startswith("commit-pipeline-")
    assert up.files["uploadfile"] == changed.read_bytes()
    last = fake_kfp.calls("POST", "/runs")[-1].body
    assert (
        last["pipeline_version_reference"]["pipeline_version_id"]
        == (fake_kfp.versions[pid][-1]["pipeline_version_id"])
    )


def test_submit_validates_the_recipe_before_sending_anything(fake_kfp, package, capsys):
    assert _submit(fake_kfp, package, "train.steps=0") == 2
    err = capsys.readouterr().err
    assert "train.steps" in err and str(RECIPE) in err
    assert fake_kfp.requests == []


@pytest.mark.parametrize(
    "value",
    ["http://admin:hunter22@mlflow.example:5000", "key is S3CRETVALUE123 here"],
)
def test_submit_refuses_parameters_carrying_credentials(
    fake_kfp, package, capsys, monkeypatch, value
):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "S3CRETVALUE123")
    assert _submit(fake_kfp, package, "--param", f"note={value}") == 2
    err = capsys.readouterr().err
    assert "note" in err and "Secret" in err
    assert "hunter22" not in err and "S3CRETVALUE123" not in err
    assert fake_kfp.requests == []


def test_submit_rejects_a_parameter_the_pipeline_does_not_declare(fake_kfp, package, capsys):
    assert _submit(fake_kfp, package, "--param", "epochs=3") == 2
    err = capsys.readouterr().err
    assert "epochs" in err and "recipe" in err  # lists what it declares
    assert fake_kfp.requests == []


def test_submit_needs_the_compiled_package(fake_kfp, tmp_path, capsys):
    assert _submit(fake_kfp, tmp_path / "missing.yaml") == 2
    assert "commit pipeline compile" in capsys.readouterr().err


def test_submit_to_an_unknown_named_experiment_fails_without_uploading(fake_kfp, package, capsys):
    assert _submit(fake_kfp, package, "--experiment", "nightly") == 2
    err = capsys.readouterr().err
    assert "nightly" in err and fake_kfp.url in err and "--create-experiment" in err
    assert fake_kfp.calls("POST", "/pipelines/upload") == []
    assert _submit(fake_kfp, package, "--experiment", "nightly", "--create-experiment") == 0
    assert [e["display_name"] for e in fake_kfp.experiments.values()] == ["nightly"]


# ---------------------------------------------------------------------------- schedule


def test_schedule_sends_cron_no_catchup_and_max_concurrency_one(fake_kfp, package, capsys):
    rc = _cli(
        "schedule", "--host", fake_kfp.url, "--package", str(package),
        "--recipe", str(RECIPE), "--cron", "0 0 3 * * *", "--method", "commit",
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    body = fake_kfp.calls("POST", "/recurringruns")[0].body
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert body["no_catchup"] is True
    assert str(body["max_concurrency"]) == "1"
    assert body["mode"] == "ENABLE"
    assert body["display_name"] == "commit-retune"
    assert body["runtime_config"]["parameters"] == {
        "recipe": _recipe_param(),
        "method": "commit",
    }
    (pid,) = fake_kfp.pipelines
    assert body["pipeline_version_reference"]["pipeline_id"] == pid


def test_schedule_again_replaces_the_recurring_run_of_the_same_name(fake_kfp, package):
    args = ["schedule", "--host", fake_kfp.url, "--package", str(package), "--recipe", str(RECIPE)]
    assert _cli(*args, "--cron", "0 0 3 * * *") == 0
    (first,) = fake_kfp.recurring_runs
    assert _cli(*args, "--cron", "0 30 4 * * MON-FRI", "--catchup") == 0
    # the old one was found through the camelCase `recurringRuns` list and deleted
    assert [r.path for r in fake_kfp.calls("DELETE", f"/recurringruns/{first}")]
    (rr,) = fake_kfp.recurring_runs.values()
    assert rr["trigger"]["cron_schedule"]["cron"] == "0 30 4 * * MON-FRI"
    assert rr["no_catchup"] is False


def test_schedule_rejects_a_five_field_cron_before_any_request(fake_kfp, package, capsys):
    rc = _cli(
        "schedule", "--host", fake_kfp.url, "--package", str(package),
        "--recipe", str(RECIPE), "--cron", "0 3 * * *",
    )  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "5 fields" in err and "'0 0 3 * * *'" in err
    assert fake_kfp.requests == []


# ------------------------------------------------------------------------ runs + wait


def _new_run(fake: FakeKfp, name: str = "r") -> str:
    eid = next(iter(fake.experiments), None) or fake.add_experiment("commit-mlops")
    run = fake._create_run({"experiment_id": eid, "display_name": name})
    return run["run_id"]


@pytest.mark.parametrize(
    ("final", "rc"), [("SUCCEEDED", 0), ("SKIPPED", 0), ("FAILED", 1), ("CANCELED", 1)]
)
def test_wait_stops_on_every_terminal_state(fake_kfp, capsys, final, rc):
    run_id = _new_run(fake_kfp)
    fake_kfp.script_states(run_id, ["PENDING", "RUNNING", "RUNNING", final])
    assert _cli("wait", run_id, "--host", fake_kfp.url, "--poll", "0.01") == rc
    out, err = capsys.readouterr()
    assert [ln.split(": ")[1] for ln in out.splitlines() if ln.startswith("run ") and ": " in ln][
        :3
    ] == ["PENDING", "RUNNING", final]
    if rc:
        assert final in err and run_id in err
    assert len(fake_kfp.calls("GET", f"/runs/{run_id}")) == 4


def test_wait_reports_the_failure_message_and_times_out_naming_the_run(fake_kfp, capsys):
    failed = _new_run(fake_kfp)
    fake_kfp.set_state(failed, "FAILED", error="train: exit code 3 (TrainingDiverged)")
    assert _cli("wait", failed, "--host", fake_kfp.url, "--poll", "0.01") == 1
    assert "TrainingDiverged" in capsys.readouterr().err

    stuck = _new_run(fake_kfp)
    fake_kfp.script_states(stuck, ["RUNNING"])
    assert _cli("wait", stuck, "--host", fake_kfp.url, "--poll", "0.01", "--timeout", "0.05") == 2
    err = capsys.readouterr().err
    assert stuck in err and "still RUNNING" in err

    assert _cli("wait", "no-such-run", "--host", fake_kfp.url) == 2
    assert "has no run 'no-such-run'" in capsys.readouterr().err


def test_runs_lists_state_duration_and_the_mlflow_link(fake_kfp, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    done, running = _new_run(fake_kfp, "nightly-1"), _new_run(fake_kfp, "nightly-2")
    fake_kfp.set_state(done, "SUCCEEDED")
    fake_kfp.set_state(running, "RUNNING")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mc = MlflowClient(tracking_uri=uri)
    eid = mc.create_experiment("commit")
    mrun = mc.create_run(eid, tags={"kfp.run_id": done})

    assert _cli("runs", "--host", fake_kfp.url, "--mlflow-uri", uri) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["RUN", "ID", "NAME"]
    by_id = {ln.split()[0]: ln for ln in lines[1:]}
    assert "SUCCEEDED" in by_id[done] and "nightly-1" in by_id[done]
    assert f"#/experiments/{eid}/runs/{mrun.info.run_id}" in by_id[done]
    assert "RUNNING" in by_id[running] and by_id[running].rstrip().endswith("-")
    assert lines[1].split()[0] == running  # newest first
    assert fake_kfp.calls("GET", "/runs")[0].query["sort_by"] == "created_at desc"


def test_runs_of_an_unknown_experiment_is_a_clear_error(fake_kfp, capsys):
    assert _cli("runs", "--host", fake_kfp.url, "--experiment", "nope") == 2
    err = capsys.readouterr().err
    assert "no experiment 'nope'" in err and fake_kfp.url in err


# -------------------------------------------------------------------------------- auth


def test_bearer_token_from_the_environment_is_sent_on_every_request(kfp_env, monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "tok-from-env")
    with FakeKfp(token="tok-from-env") as fake:
        assert _cli("runs", "--host", fake.url) == 0
        assert len(fake.requests) >= 3  # preflight, client healthz, list
        assert {r.headers.get("authorization") for r in fake.requests} == {"Bearer tok-from-env"}


def test_service_account_token_file_is_read_on_each_request(kfp_env, tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text("sa-token-1\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    with FakeKfp(token="sa-token-1") as fake:
        run_id = _new_run(fake)
        fake.script_states(run_id, ["RUNNING", "RUNNING", "RUNNING", "SUCCEEDED"])

        # the kubelet rotates the projected token while `wait` polls
        orig = fake._route

        def rotate(method, path, q, rec):
            out = orig(method, path, q, rec)
            if path.endswith(f"/runs/{run_id}") and fake.token == "sa-token-1":
                token.write_text("sa-token-2\n")
                fake.token = "sa-token-2"
            return out

        fake._route = rotate
        assert _cli("wait", run_id, "--host", fake.url, "--poll", "0.01") == 0
        seen = [r.headers.get("authorization") for r in fake.requests]
        assert seen[0] == "Bearer sa-token-1" and seen[-1] == "Bearer sa-token-2"


def test_an_expired_token_is_one_clear_error_naming_host_and_source(kfp_env, monkeypatch, capsys):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "expired-tok")
    with FakeKfp(token="fresh-tok") as fake:
        assert _cli("runs", "--host", fake.url) == 2
        err = capsys.readouterr().err
        assert fake.url in err and "$KF_PIPELINES_TOKEN" in err and "expired" in err
        assert "expired-tok" not in err
        assert len(fake.requests) == 1  # no 5 x 5 s healthz retries


def test_no_host_and_an_unreachable_host_are_clear_errors(kfp_env, capsys):
    assert _cli("runs") == 2
    assert "no KFP host" in capsys.readouterr().err
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert _cli("wait", "some-run", "--host", f"http://127.0.0.1:{port}") == 2
    assert f"cannot reach KFP at http://127.0.0.1:{port}" in capsys.readouterr().err


# ------------------------------------------------------------------------ cron checks


@pytest.mark.parametrize(
    "cron",
    ["0 0 3 * * *", "*/30 * * * * ?", "0 15 10 ? * MON-FRI", "0 0 0 1,15 JAN-JUN *", "@daily"],
)
def test_valid_six_field_crons_pass(cron):
    from pipelines.kfp_client import validate_cron

    assert validate_cron(cron) == cron


@pytest.mark.parametrize(
    ("cron", "msg"),
    [
        ("60 0 3 * * *", "seconds value 60"),
        ("0 0 24 * * *", "hours value 24"),
        ("0 ? 3 * * *", "'?' is only allowed"),
        ("0 0 3 * * * 2027", "7 fields"),
        ("0 0 5-3 * * *", "runs backwards"),
        ("*/0 * * * * *", "step '0'"),
        ("0 0 3 * FOO *", "'FOO' is not a number"),
    ],
)
def test_bad_crons_are_rejected_naming_the_field(cron, msg):
    from commit_train.errors import CommitError
    from pipelines.kfp_client import validate_cron

    with pytest.raises(CommitError, match=msg):
        validate_cron(cron)


def test_run_parameters_never_contain_the_environment_secrets(fake_kfp, package, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-in-kfp-0123")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "never-in-kfp-4567")
    assert _submit(fake_kfp, package, "--method", "commit") == 0
    sent = json.dumps([r.body for r in fake_kfp.requests if r.body])
    sent += b"".join(f for r in fake_kfp.requests for f in r.files.values()).decode()
    assert "never-in-kfp" not in sent


# ------------------------------------------------------- the project's own pipeline


@pytest.fixture(scope="module")
def project_package(tmp_path_factory) -> Path:
    """The real commit pipeline, compiled by `commit pipeline compile`'s function."""
    from pipelines.commands import compile_pipeline

    return compile_pipeline(output=tmp_path_factory.mktemp("project") / "commit_pipeline.yaml")


def test_submit_the_project_pipeline_sends_its_secrets_by_name_and_checked_parameters(
    fake_kfp, project_package, capsys
):
    rc = _submit(
        fake_kfp, project_package, "--method", "commit", "--benchmarks", "vision",
        "--set", "train.steps=20",
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    upload = fake_kfp.calls("POST", "/pipelines/upload")[0]
    platform_doc = list(yaml.safe_load_all(upload.files["uploadfile"]))[1]
    executors = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    secrets = {s["secretName"] for e in executors.values() for s in e.get("secretAsEnv", [])}
    assert platform.S3_SECRET in secrets
    params = fake_kfp.calls("POST", "/runs")[0].body["runtime_config"]["parameters"]
    assert params == {
        "recipe": _recipe_param(),
        "method": "commit",
        "overrides": ["train.steps=20"],
        "benchmarks": ["vision"],
    }


def test_submit_the_project_pipeline_rejects_an_unknown_method_or_benchmark_locally(
    fake_kfp, project_package, capsys
):
    assert _submit(fake_kfp, project_package, "--method", "sgd-magic") == 2
    assert "unknown method 'sgd-magic'" in capsys.readouterr().err
    assert _submit(fake_kfp, project_package, "--benchmark", "no-such-bench") == 2
    assert "no-such-bench" in capsys.readouterr().err
    assert fake_kfp.requests == []


@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[2] / "pipelines/compiled/commit_pipeline.yaml").is_file(),
    reason="pipelines/compiled/commit_pipeline.yaml not committed yet",
)
def test_submit_the_committed_compiled_pipeline(fake_kfp, capsys):
    from pipelines.remote import DEFAULT_PACKAGE

    root = Path(__file__).resolve().parents[2]
    assert _submit(fake_kfp, root / DEFAULT_PACKAGE, "--method", "commit") == 0, (
        capsys.readouterr().err
    )
    assert fake_kfp.calls("POST", "/runs")
