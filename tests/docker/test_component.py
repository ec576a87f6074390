"""One component in a real container: the CLI form and the KFP executor form.

Both run the stage step on a small built-in vision set and are checked against the same step
run on the host: the container must produce the same bytes (same code, same data packages),
not just exit 0.
"""

from __future__ import annotations

import json
from pathlib import Path

from commit_train.stage import stage
from tests.docker.conftest import run

SOURCE = "builtin:vision?n_train=8&n_val=4&n_test=4"
COUNTS = {"train": 8, "val": 4, "test": 4}


def _host_sha(tmp_path: Path, monkeypatch) -> str:
    monkeypatch.setenv("COMMIT_CACHE", str(tmp_path / "host-cache"))
    return stage(SOURCE, str(tmp_path / "host-staged")).manifest["dataset_sha256"]


def _check_staged(out: Path, host_sha: str) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == COUNTS
    assert manifest["dataset_sha256"] == host_sha  # byte-identical to the host's staging
    assert (out / "_COMPLETE").is_file()
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(records) == COUNTS["train"]
    media = [p for p in (out / "media").rglob("*") if p.is_file()]
    assert media and all(p.stat().st_size > 0 for p in media)
    return manifest


def test_commit_stage_cli_in_container(docker_client, image, shared_dir, tmp_path, monkeypatch):
    out = run(
        docker_client,
        image,
        ["commit", "stage", SOURCE, "--output", "/data/staged"],
        volumes={str(shared_dir): {"bind": "/data", "mode": "rw"}},
    )
    assert "dataset sha256:" in out
    _check_staged(shared_dir / "staged", _host_sha(tmp_path, monkeypatch))


def test_stage_data_component_in_docker_runner(image, shared_dir, tmp_path, monkeypatch):
    """The kfp executor path: ``kfp.local.DockerRunner`` runs the ``stage_data`` component in
    the image. Checked on the files it left (executor output, dataset artifact), because the
    runner can report a crashed container as success (kubeflow/pipelines#13332)."""
    from kfp import local

    from components.stage_data import stage_data

    local.init(
        runner=local.DockerRunner(network_mode="none"),
        pipeline_root=str(shared_dir),
        raise_on_error=True,
    )
    task = stage_data(source=SOURCE)
    dataset = task.outputs["dataset"]
    out = Path(dataset.path)
    assert shared_dir in out.parents
    manifest = _check_staged(out, _host_sha(tmp_path, monkeypatch))
    assert dataset.metadata["dataset_sha256"] == manifest["dataset_sha256"]
    (executor_output,) = shared_dir.rglob("executor_output.json")
    written = json.loads(executor_output.read_text())
    (art,) = written["artifacts"]["dataset"]["artifacts"]
    assert art["metadata"]["counts"] == COUNTS
