"""Comparing runs: the tags training sets, and the `commit runs compare` table.

Two real (tiny) training runs with different methods on the same data and recipe file
must carry the same ``benchmark`` and ``data_manifest_hash`` but different
``recipe_hash``; evaluation metrics added to one of them show up as a column.
"""

from __future__ import annotations

import hashlib

import pytest
from mlflow.tracking import MlflowClient

from commit_train.config import validate
from commit_train.runs import compare_runs, format_table, recipe_hash
from commit_train.trainer import train
from tests.conftest import tiny_recipe_dict
from tests.integration.conftest import commit_cli


@pytest.fixture(scope="module")
def two_runs(tiny_parts, tmp_path_factory):
    """``(tracking_uri, {method: run_id})`` for a constant and a commit run."""
    base = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{base}/mlflow.db"
    ids = {}
    for method in ("constant", "commit"):
        raw = tiny_recipe_dict(tiny_parts, base / method, steps=3, eval_every=0, save_every=0)
        raw["method"] = method
        raw["balance"] = {"probe_every": 1, "update_every": 3}
        raw["tracking"] = {"uri": uri, "experiment": "compare", "log_model": False}
        ids[method] = train(validate(raw)).run_id
    client = MlflowClient(uri)
    client.log_metric(ids["commit"], "eval/val/accuracy", 0.75)
    client.log_metric(ids["constant"], "eval/val/accuracy", 0.25)
    client.log_metric(ids["commit"], "eval/val/yes_no/accuracy", 1.0)  # breakdown: no column
    return uri, ids


def test_training_runs_carry_comparison_tags(two_runs, tiny_parts):
    uri, ids = two_runs
    client = MlflowClient(uri)
    tags = {m: client.get_run(r).data.tags for m, r in ids.items()}
    assert tags["commit"]["method"] == "commit" and tags["constant"]["method"] == "constant"
    assert tags["commit"]["benchmark"] == tags["constant"]["benchmark"] == "data"
    train_sha = hashlib.sha256(tiny_parts["train"].read_bytes()).hexdigest()
    # the tiny dataset has no manifest.json: the train JSONL itself is hashed
    assert tags["commit"]["data_manifest_hash"] == tags["constant"]["data_manifest_hash"]
    assert tags["commit"]["data_manifest_hash"] == train_sha
    assert tags["commit"]["recipe_hash"] != tags["constant"]["recipe_hash"]
    assert len(tags["commit"].get("git_commit", "x" * 40)) == 40


def test_recipe_hash_ignores_where_a_run_writes(tiny_parts, tmp_path):
    a = tiny_recipe_dict(tiny_parts, tmp_path / "a")
    b = tiny_recipe_dict(tiny_parts, tmp_path / "b")
    b["tracking"] = {"uri": "http://elsewhere:5000", "experiment": "other"}
    assert recipe_hash(a) == recipe_hash(b)
    b["seed"] = 1
    assert recipe_hash(a) != recipe_hash(b)


def test_compare_table_one_row_per_run_sorted(two_runs):
    uri, ids = two_runs
    columns, rows = compare_runs("compare", tracking_uri=uri)
    assert columns == ["loss/val", "eval/val/accuracy"]
    assert len(rows) == 2 and all(r["loss/val"] is not None for r in rows)
    losses = [r["loss/val"] for r in rows]
    assert losses == sorted(losses)  # lowest validation loss first
    _, rows = compare_runs("compare", tracking_uri=uri, sort_by="eval/val/accuracy")
    assert [r["method"] for r in rows] == ["commit", "constant"]  # highest accuracy first
    table = format_table(["eval/val/accuracy"], rows).splitlines()
    assert table[0].split()[:4] == ["run", "method", "benchmark", "recipe"]
    assert "0.7500" in table[2] and "commit" in table[2] and "0.2500" in table[3]

    res = commit_cli(
        "runs", "compare", "--experiment", "compare", "--metric", "eval/val/accuracy",
        env_extra={"MLFLOW_TRACKING_URI": uri}, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 4 and lines[2].split()[1] == "commit"
    res = commit_cli(
        "runs", "compare", "--experiment", "nope", env_extra={"MLFLOW_TRACKING_URI": uri}
    )
    assert res.returncode == 2 and "no MLflow experiment named 'nope'" in res.stderr
    assert "compare" in res.stderr  # lists the experiments that exist
