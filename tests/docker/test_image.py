"""The component image's contract: what the pipeline and the cluster rely on."""

from __future__ import annotations

import json

import kfp
import torch

from pipelines.platform import RUN_AS_USER
from tests.docker.conftest import run


def test_runs_as_numeric_non_root_user_with_writable_home(docker_client, image):
    cfg = docker_client.images.get(image).attrs["Config"]
    assert cfg["User"] == f"{RUN_AS_USER}:{RUN_AS_USER}"  # numeric: runAsNonRoot can check it
    out = run(
        docker_client,
        image,
        [
            "sh",
            "-c",
            'id -u; mkdir -p "$COMMIT_CACHE" "$HF_HOME" "$MPLCONFIGDIR"'
            ' && touch "$HOME/x" "$COMMIT_CACHE/y" ./z && echo writable',
        ],
    )
    assert out.split() == [str(RUN_AS_USER), "writable"]


def test_project_and_pins_import_offline(docker_client, image):
    """Everything a task imports is in the image: with no network at all, the versions the
    pipeline is compiled with (kfp) and tested with (torch, CPU build)."""
    code = (
        "import json, kfp, torch, mlflow, transformers, pipelines.local, "
        "commit_train.modeling.composite, commit_train.pipeline_steps, evaluation.runner, "
        "components.stage_data, components.train, components.evaluate, components.register; "
        "print(json.dumps({'kfp': kfp.__version__, 'torch': torch.__version__}))"
    )
    got = json.loads(run(docker_client, image, ["python", "-c", code]).strip().splitlines()[-1])
    assert got["kfp"] == kfp.__version__ == "2.17.3"
    assert got["torch"] == "2.13.0+cpu"
    assert got["torch"].split("+")[0] == torch.__version__.split("+")[0]


def test_cli_and_plugins(docker_client, image):
    out = run(docker_client, image, ["commit", "--help"])
    for command in ("train", "evaluate", "stage", "pipeline", "k8s"):
        assert command in out


def test_no_build_mirrors_or_secrets_left(docker_client, image):
    """The build's pip mirrors and CA bundle stayed in the build: no pip configuration,
    no certificate copy, no credentials in the image's environment."""
    env = dict(e.split("=", 1) for e in docker_client.images.get(image).attrs["Config"]["Env"])
    assert not {k for k in env if k.startswith(("PIP_INDEX", "PIP_EXTRA", "PIP_FIND", "PIP_CERT"))}
    assert not {k for k in env if k.startswith(("AWS_", "MLFLOW_TRACKING_"))} - {
        "MLFLOW_TRACKING_URI"
    }
    out = run(
        docker_client,
        image,
        [
            "sh",
            "-c",
            "ls /etc/pip.conf /etc/xdg/pip /tmp/pip-ca.pem /root/.config/pip /src 2>/dev/null;"
            " pip config list | grep -E 'index|find-links|cert|trusted|constraint'; echo done",
        ],
    )
    assert out.strip() == "done"
