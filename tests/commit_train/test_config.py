"""Recipes load and validate; bad keys, types and values are rejected naming key and file."""

from pathlib import Path

import pytest

from commit_train.config import apply_overrides, load_config
from commit_train.errors import ConfigError

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert len(RECIPES) >= 2


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe):
    cfg = load_config(recipe)
    assert cfg.train.steps >= 1
    # The header documents the launch command (torchtune convention).
    assert "commit train" in recipe.read_text().split("\n\n")[0] or "launch" in recipe.read_text()


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


BASE = """
model:
  encoder: {type: efficientnet_lite0}
  llm: some/llm
data:
  train: data.jsonl
"""


def test_overrides_are_typed(tmp_path):
    cfg = load_config(
        _write(tmp_path, BASE),
        ["train.steps=7", "train.lr_llm=1e-3", "model.lora.target_modules.llm=[q_proj]"],
    )
    assert cfg.train.steps == 7 and isinstance(cfg.train.steps, int)
    assert cfg.train.lr_llm == pytest.approx(1e-3)
    assert cfg.model.lora.target_modules["llm"] == ["q_proj"]


@pytest.mark.parametrize(
    "override,needle",
    [
        ("train.stepz=3", "train.stepz: unknown key"),
        ("train.steps=abc", "train.steps"),
        ("train.steps=0", "train.steps"),
        ("train.lr_llm=-1", "train.lr_llm"),
        ("model.tuning.llm=half", "model.tuning.llm"),
        ("train.betas=[0.9, 1.5]", "train.betas"),
        ("data.max_length=2", "data.max_length"),
        ("method=nonsense", "method"),
    ],
)
def test_bad_values_name_key_and_file(tmp_path, override, needle):
    path = _write(tmp_path, BASE)
    with pytest.raises(ConfigError) as e:
        load_config(path, [override])
    assert needle in str(e.value)
    assert str(path) in str(e.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "model: [unclosed"))


def test_model_source_is_required(tmp_path):
    with pytest.raises(ConfigError, match="model.path, or both"):
        load_config(_write(tmp_path, "data: {train: x.jsonl}\nmodel: {modality: image}\n"))


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        apply_overrides({}, ["train.steps"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"train": 3}, ["train.steps=1"])


def test_flat_params_for_mlflow(tmp_path):
    flat = load_config(_write(tmp_path, BASE)).to_flat_dict()
    assert flat["train.lr_llm"] == pytest.approx(2e-4)
    assert flat["model.encoder.type"] == "efficientnet_lite0"


# ---- YAML booleans (issue 16.4) --------------------------------------------------------------
@pytest.mark.parametrize("value", ["no", "fp32", "'no'"])
def test_precision_no_is_full_precision_not_false(tmp_path, value):
    cfg = load_config(_write(tmp_path, BASE), [f"train.precision={value}"])
    assert cfg.train.precision == "fp32"


def test_precision_no_in_a_recipe_file(tmp_path):
    cfg = load_config(_write(tmp_path, BASE + "train:\n  precision: no\n"))
    assert cfg.train.precision == "fp32"


@pytest.mark.parametrize(
    "override",
    ["train.steps=true", "train.batch_size=yes", "train.lr_llm=false", "seed=true"],
)
def test_booleans_are_rejected_for_numbers(tmp_path, override):
    """``train.steps=true`` used to become 1 step; ``yes`` (YAML 1.1 true) is a string now."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: .*(boolean|integer)"):
        load_config(_write(tmp_path, BASE), [override])


def test_yes_no_on_off_stay_strings_and_still_set_booleans(tmp_path):
    path = _write(tmp_path, BASE)
    cfg = load_config(path, ["tracking.run_name=off", "data.skip_bad=yes", "tracking.enabled=off"])
    assert cfg.tracking.run_name == "off"
    assert cfg.data.skip_bad is True and cfg.tracking.enabled is False
    with pytest.raises(ConfigError, match="tracking.run_name: .*boolean"):
        load_config(path, ["tracking.run_name=true"])


# ---- non-finite numbers (issue 16.5) ---------------------------------------------------------
@pytest.mark.parametrize(
    "override",
    [
        "train.lr_llm=.inf",
        "train.lr_encoder=.nan",
        "train.betas=[0.9, .nan]",
        "train.max_grad_norm=.inf",
    ],
)
def test_non_finite_numbers_are_rejected(tmp_path, override):
    """``train.lr_llm=.inf`` passed validation and the run diverged at step 2."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}(\.1)?: .*finite"):
        load_config(_write(tmp_path, BASE), [override])
