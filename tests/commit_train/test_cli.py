"""The `commit` command line through its real entry point: help, errors, exit codes."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import tiny_recipe_dict

REPO = Path(__file__).parents[2]


def _run(*args, env_extra=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "commit_train", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )


def _one_paragraph_error(res, *needles):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    err = res.stderr.strip().splitlines()[-1] if "\n\n" not in res.stderr else res.stderr
    for n in needles:
        assert n in res.stderr, (n, res.stderr)
    return err


def test_help_explains_each_command():
    res = _run("--help")
    assert res.returncode == 0
    for word in ("train", "evaluate", "prepare"):
        assert word in res.stdout
    res = _run("train", "--help")
    assert res.returncode == 0
    for word in ("dotted.key=value", "--output-dir", "--resume"):
        assert word in res.stdout
    res = _run("evaluate", "--help")
    assert res.returncode == 0 and "--benchmark" in res.stdout


def test_missing_recipe(tmp_path):
    res = _run("train", str(tmp_path / "nope.yaml"))
    assert res.returncode == 2
    _one_paragraph_error(res, "nope.yaml", "does not exist")


def test_bad_override_names_key_and_file(tmp_path):
    res = _run(
        "train", "recipes/builtin_vision.yaml", "train.stepz=3", "--output-dir", str(tmp_path)
    )
    assert res.returncode == 2
    _one_paragraph_error(res, "train.stepz", "builtin_vision.yaml", "unknown key")
    assert not any(tmp_path.iterdir())


def test_hf_id_without_network_is_a_clear_error(tiny_parts, tmp_path):
    raw = tiny_recipe_dict(tiny_parts, tmp_path / "run")
    raw["model"]["llm"] = "some-org/not-a-cached-model"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    res = _run("train", str(recipe))
    assert res.returncode == 2
    _one_paragraph_error(res, "some-org/not-a-cached-model", "model.llm")
    assert not (tmp_path / "run" / "model").exists()


def test_nonexistent_local_model_path(tiny_parts, tmp_path):
    raw = tiny_recipe_dict(tiny_parts, tmp_path / "run")
    raw["model"]["encoder"]["path"] = str(tmp_path / "missing-encoder")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    res = _run("train", str(recipe))
    assert res.returncode == 2
    _one_paragraph_error(res, "missing-encoder")


def test_overrides_after_options_and_method_override(tiny_parts, tmp_path):
    raw = tiny_recipe_dict(tiny_parts, tmp_path / "run", steps=2, eval_every=0, save_every=0)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    res = _run(
        "train", str(recipe), "--output-dir", str(out), "method=commit", "balance.probe_every=1"
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "done: 2 steps" in res.stdout
    assert yaml.safe_load((out / "recipe.yaml").read_text())["method"] == "commit"
    assert (out / "model" / "model.safetensors").is_file()
