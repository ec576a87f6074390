"""The pipeline's ``recipe`` parameter reads a recipe exactly as ``commit train`` does."""

import json

from commit_train.pipeline_steps import pipeline_config
from pipelines.commit_pipeline import DEFAULT_RECIPE, recipe_parameter


def test_yaml_1_1_booleans_stay_strings():
    # `no` is a valid precision; YAML 1.1 (yaml.safe_load) would turn it into False and the
    # train step would reject the recipe inside a pod
    text = DEFAULT_RECIPE.read_text(encoding="utf-8").replace(
        "  max_grad_norm: 1.0\n", "  max_grad_norm: 1.0\n  precision: no\n"
    )
    param = recipe_parameter(text)
    assert json.loads(param)["train"]["precision"] == "no"
    assert pipeline_config(param).train.precision == "fp32"
