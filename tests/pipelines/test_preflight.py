"""Pre-flight checks: every bad pipeline input fails in seconds, naming what to fix, before
kfp.local (or a cluster) starts a task."""

from __future__ import annotations

import re

import pytest
import yaml

from commit_train.errors import CommitError, ConfigError
from pipelines.preflight import check_inputs, check_local_environment
from tests.conftest import tiny_recipe_dict


@pytest.fixture
def text(tiny_parts, tmp_path) -> str:
    return yaml.safe_dump(tiny_recipe_dict(tiny_parts, tmp_path / "run"))


def check(text, **kw):
    args = {
        "overrides": [],
        "method": "",
        "benchmarks": ["vision"],
        "gate_metric": "eval/vision/accuracy",
        "data_source": None,
    }
    return check_inputs(text, **{**args, **kw})


def test_good_inputs_give_the_resolved_config(text):
    cfg = check(text, overrides=["train.steps=9"], method="commit")
    assert (cfg.train.steps, cfg.method) == (9, "commit")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"method": "comit"}, "unknown method 'comit'"),
        ({"overrides": ["train.stpes=3"]}, "stpes"),
        ({"overrides": ["train.steps=true"]}, "train.steps"),
        ({"benchmarks": []}, "no benchmark"),
        ({"benchmarks": ["visoin"]}, "unknown benchmark 'visoin'"),
        ({"benchmarks": ["audio"], "gate_metric": "eval/audio/accuracy"}, "is audio but"),
        ({"benchmarks": ["/no/such.jsonl"]}, "/no/such.jsonl does not exist"),
        ({"gate_metric": "accuracy"}, "must be eval/<benchmark>/<metric>"),
        ({"gate_metric": "eval/audio/accuracy"}, "for one of the requested benchmarks"),
        ({"data_source": "builtin:video"}, "unknown built-in data source"),
        ({"data_source": "/no/such/dir"}, "/no/such/dir does not exist"),
        ({"data_source": "s3:/bucket"}, "s3:/bucket"),
    ],
)
def test_bad_input_named(text, kw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check(text, **kw)


def test_bad_recipe_key_named_with_its_source(text):
    bad = text.replace("max_length:", "max_lenght:")
    with pytest.raises(ConfigError, match="max_lenght") as e:
        check(bad, recipe_source="recipes/mine.yaml")
    assert "recipes/mine.yaml" in str(e.value)


def test_root_that_is_a_file_named(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "file").write_text("")
    with pytest.raises(CommitError, match="checkpoint root .*file.* is not writable"):
        check_local_environment(uri, {"checkpoint root": str(tmp_path / "file")})


def test_s3_root_without_credentials_named(tmp_path, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(CommitError, match="checkpoint root s3://b/ck is on S3 but no S3 cred"):
        check_local_environment(uri, {"checkpoint root": "s3://b/ck"})


def test_unreachable_mlflow_named(tmp_path):
    with pytest.raises(CommitError, match="127.0.0.1:9"):
        check_local_environment("http://127.0.0.1:9", {"pipeline root": str(tmp_path)})
