"""Exact resume after a real kill, and 2-process DDP on CPU (slow: real subprocesses)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from tests.conftest import tiny_recipe_dict

pytestmark = pytest.mark.slow
REPO = Path(__file__).parents[2]


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _cmd(recipe, out, *extra):
    return [
        sys.executable,
        "-m",
        "commit_train",
        "train",
        str(recipe),
        "--output-dir",
        str(out),
        *extra,
    ]


def _write_recipe(tiny_parts, tmp_path, method="constant", **train):
    raw = tiny_recipe_dict(tiny_parts, tmp_path / "unused", **train)
    raw["method"] = method
    # dropout on (LoRA dropout 0.1) so RNG state matters for exactness
    path = tmp_path / f"recipe-{method}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, raw


def _weights(out):
    return load_file(str(out / "model" / "model.safetensors"))


@pytest.mark.parametrize("method", ["constant", "commit"])
def test_killed_run_resumes_bit_identical(tiny_parts, tmp_path, method):
    steps, every = 150, 10
    recipe, raw = _write_recipe(
        tiny_parts,
        tmp_path,
        method=method,
        steps=steps,
        save_every=every,
        eval_every=0,
        warmup_steps=5,
    )
    if method == "commit":
        recipe.write_text(
            yaml.safe_dump(
                {**raw, "balance": {"probe_every": 2, "update_every": 6, "window": 2, "z": 0.0}}
            )
        )
    ref, cut = tmp_path / "uninterrupted", tmp_path / "killed"
    subprocess.run(_cmd(recipe, ref), check=True, env=_env(), capture_output=True)

    proc = subprocess.Popen(
        _cmd(recipe, cut), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    target = cut / "checkpoints" / "step-0000030"
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (cut / "model").exists(), "killed too late: the run had finished"

    done = subprocess.run(_cmd(recipe, cut, "--resume"), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr
    a, b = _weights(ref), _weights(cut)
    assert a.keys() == b.keys()
    diff = [k for k in a if not (a[k] == b[k]).all()]
    assert not diff, f"{len(diff)} tensors differ after resume, e.g. {diff[:3]}"

    client = MlflowClient(tracking_uri=raw["tracking"]["uri"])
    exp = client.get_experiment_by_name("tests")
    runs = client.search_runs([exp.experiment_id], order_by=["start_time DESC"])
    resumed = runs[0]
    assert resumed.info.status == "FINISHED"
    steps_logged = {m.step for m in client.get_metric_history(resumed.info.run_id, "loss/train")}
    assert steps_logged == set(range(1, steps + 1))


def test_ddp_two_processes_cpu(tiny_parts, tmp_path):
    recipe, raw = _write_recipe(
        tiny_parts, tmp_path, steps=4, batch_size=2, save_every=2, eval_every=2
    )
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    res = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "-m",
            "commit_train",
            "train",
            str(recipe),
            "--output-dir",
            str(out),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("done:") == 1  # only rank 0 reports
    assert (out / "model" / "model.safetensors").is_file()
    ckpt = out / "checkpoints" / "step-0000004"
    assert (ckpt / "rng-rank0.pt").is_file() and (ckpt / "rng-rank1.pt").is_file()
    client = MlflowClient(tracking_uri=raw["tracking"]["uri"])
    exp = client.get_experiment_by_name("tests")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1  # rank 1 never logs
    hist = client.get_metric_history(runs[0].info.run_id, "throughput/samples_per_s")
    assert len(hist) == 4
